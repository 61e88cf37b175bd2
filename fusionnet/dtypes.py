"""Tensor element types under PyTorch's names, and the promotion rule.

A :class:`dtype` is a thin named wrapper around a NumPy dtype, so that
``print(x.dtype)`` reads ``fusionnet.float32`` and comparisons with NumPy
dtypes still work.
"""
from __future__ import annotations

import numpy as np

__all__ = ["dtype", "float32", "float64", "int32", "int64", "bool_", "as_dtype",
           "promote", "result_dtype", "scalar_dtype", "get_default_dtype", "SUPPORTED", "unsupported",
           "require_native"]


class dtype:
    """A tensor element type (``fusionnet.float32`` and friends)."""

    __slots__ = ("name", "np")

    def __init__(self, name: str, np_dtype):
        self.name = name
        self.np = np.dtype(np_dtype)

    @property
    def is_floating_point(self) -> bool:
        """True for float32 and float64."""
        return self.np.kind == "f"

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return self.np.itemsize

    def __repr__(self) -> str:
        return f"fusionnet.{self.name}"

    def __eq__(self, other) -> bool:
        if isinstance(other, dtype):
            return self.np == other.np
        try:
            return self.np == np.dtype(other)
        except TypeError:
            return NotImplemented

    def __hash__(self) -> int:
        return hash(self.np)

    def __reduce__(self):  # dtypes are singletons; keep them so across copies
        return (as_dtype, (self.name,))


float32 = dtype("float32", np.float32)
float64 = dtype("float64", np.float64)
int32 = dtype("int32", np.int32)
int64 = dtype("int64", np.int64)
bool_ = dtype("bool", np.bool_)

#: The element types a tensor can hold.
SUPPORTED = (float32, float64, int32, int64, bool_)

_BY_NP = {d.np: d for d in SUPPORTED}
_BY_NAME = {d.name: d for d in _BY_NP.values()}
_BY_NAME.update({"float": float32, "double": float64, "long": int64, "int": int32})
_NAMES = ", ".join(d.name for d in SUPPORTED)


def unsupported(what, where: str = "fusionnet") -> TypeError:
    """The error for a dtype no tensor can hold (complex, strings, objects, dates...)."""
    return TypeError(f"{where}: unsupported dtype {what}; fusionnet tensors hold {_NAMES} "
                     "(NumPy float16 becomes float32 and the other integer widths int64 "
                     "when a tensor is made)")


def as_dtype(value) -> dtype:
    """Turn a fusionnet dtype, NumPy dtype, Python type or name into a :class:`dtype`.

    float16 maps to float32, and the integer widths a tensor does not hold (int8,
    uint8, int16, uint16, uint32) to int64; anything else raises ``TypeError``.
    """
    if isinstance(value, dtype):
        return value
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    if value is float:
        return float32
    if value is int:
        return int64
    if value is bool:
        return bool_
    try:
        npd = np.dtype(value)
    except TypeError:
        raise unsupported(repr(value)) from None
    if npd in _BY_NP:
        return _BY_NP[npd]
    if npd.kind == "f":
        return float32 if npd.itemsize <= 4 else float64
    if npd.kind in "iu" and np.can_cast(npd, np.int64):
        return int64
    raise unsupported(npd)


def require_native(npd: np.dtype, where: str) -> None:
    """Raise ``TypeError`` unless a tensor can hold arrays of ``npd`` as they are
    (``from_numpy`` shares memory, so it cannot convert)."""
    if npd in _BY_NP:
        return
    try:
        convert = as_dtype(npd).name
    except TypeError:
        raise unsupported(npd, where) from None
    raise TypeError(f"{where}: unsupported dtype {npd}; fusionnet tensors hold {_NAMES}. "
                    f"fusionnet.tensor(array) makes a {convert} copy")


def get_default_dtype() -> dtype:
    """The dtype of floating tensors made from Python floats (float32, as in PyTorch)."""
    return float32


_CATEGORY = {"b": 0, "i": 1, "u": 1, "f": 2}


def promote(a: np.dtype, b: np.dtype) -> np.dtype:
    """Result dtype of a binary op between two tensors, following PyTorch.

    Unlike NumPy, an integer tensor combined with a float32 tensor stays
    float32 (NumPy would widen to float64).
    """
    if a == b:
        return a
    try:
        ca, cb = _CATEGORY[a.kind], _CATEGORY[b.kind]
    except KeyError:
        raise unsupported(a if a.kind not in _CATEGORY else b) from None
    if ca != cb:
        return a if ca > cb else b
    return np.promote_types(a, b)


def result_dtype(dtypes, ndims) -> np.dtype:
    """The common dtype of tensors of ``dtypes`` with ``ndims`` dimensions, following
    PyTorch: zero-dimensional tensors count only when they are of a higher category than
    every dimensioned one (a float64 0-d tensor times a float32 matrix is float32; an
    int matrix times a float64 0-d tensor is float64)."""
    dim = zero = None
    for d, n in zip(dtypes, ndims):
        if n:
            dim = d if dim is None else promote(dim, d)
        else:
            zero = d if zero is None else promote(zero, d)
    if dim is None or zero is None:
        return zero if dim is None else dim
    if dim.kind == "f":
        return dim
    if dim.kind == "b" or zero.kind == "f":
        return promote(dim, zero)
    return dim  # both integer: the dimensioned tensor's type wins


def scalar_dtype(value, other: np.dtype) -> np.dtype:
    """The dtype a Python scalar takes when combined with a tensor of dtype ``other``.

    Python scalars are "weak" as in PyTorch: they adopt the tensor's dtype
    unless they belong to a higher category (a float with an int tensor gives
    the default float dtype).
    """
    if isinstance(value, (bool, np.bool_)):
        cat = 0
    elif isinstance(value, (int, np.integer)):
        cat = 1
    elif isinstance(value, (float, np.floating)):
        cat = 2
    else:
        raise unsupported(type(value).__name__)
    if cat <= _CATEGORY[other.kind]:
        return other
    return np.dtype(np.int64) if cat == 1 else float32.np
