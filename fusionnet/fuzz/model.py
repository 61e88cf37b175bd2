"""The generator's model of a block under construction: symbolic shapes, dtypes, values.

A generated forward is a straight list of statements over named values. The generator
tracks, for every value, its shape with the batch size left symbolic (so the same code
is valid at every batch size the case is called with), its dtype and a few facts the
op generators need (is it an input, a read-only broadcast view, an index tensor with
values below some bound...). Nothing here runs fusionnet; it is plain bookkeeping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Bat", "Val", "Shape", "at_batch", "static_size", "batch_power", "broadcast",
           "promote", "result_float", "is_float", "is_int", "fmt_dims", "FLOATS", "INTS"]


@dataclass(frozen=True)
class Bat:
    """A dimension of ``k`` times the batch size (the leading size of the inputs)."""

    k: int = 1

    def at(self, batch: int) -> int:
        """The concrete size at batch size ``batch``."""
        return self.k * batch

    def __repr__(self) -> str:
        return "B" if self.k == 1 else f"{self.k}B"


Shape = tuple  # of int | Bat

FLOATS = ("float32", "float64")
INTS = ("int32", "int64")


def at_batch(shape: Shape, batch: int) -> tuple:
    """The concrete shape at batch size ``batch``."""
    return tuple(d.at(batch) if isinstance(d, Bat) else d for d in shape)


def static_size(shape: Shape) -> int:
    """The product of the static dimensions (batch dimensions count their factor k)."""
    return math.prod(d.k if isinstance(d, Bat) else d for d in shape)


def batch_power(shape: Shape) -> int:
    """How many dimensions scale with the batch size."""
    return sum(isinstance(d, Bat) for d in shape)


def numel_at(shape: Shape, batch: int) -> int:
    """Number of elements at batch size ``batch``."""
    return math.prod(at_batch(shape, batch))


def fmt_dims(shape: Shape) -> str:
    """A shape for comments and test messages: ``(B, 3, 4)``."""
    return "(" + ", ".join(map(repr, shape)) + ("," if len(shape) == 1 else "") + ")"


def broadcast(a: Shape, b: Shape) -> Shape | None:
    """NumPy/PyTorch broadcasting of two symbolic shapes, or None if they do not fit
    at every batch size (a batch dimension only meets itself or a static 1)."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        else:
            return None
    return tuple(reversed(out))


def is_float(dtype: str) -> bool:
    """float32 or float64."""
    return dtype in FLOATS


def is_int(dtype: str) -> bool:
    """int32 or int64."""
    return dtype in INTS


def _category(dtype: str) -> int:
    return 2 if is_float(dtype) else 1 if is_int(dtype) else 0


_WIDER = {("float32", "float64"): "float64", ("int32", "int64"): "int64"}


def promote(a: str, b: str | None, scalar: str | None = None, shapes=None) -> str:
    """PyTorch's result dtype of a binary op on tensors of dtypes ``a`` and ``b`` (``b``
    None when the other operand is a Python scalar of kind ``scalar``: "bool", "int",
    "float"). With ``shapes`` (the two operands' shapes), a 0-d tensor beside a
    dimensioned one counts only when it is of a higher category, as in PyTorch."""
    if b is None:  # weak scalar: takes the tensor's dtype unless of a higher category
        kind = {"bool": 0, "int": 1, "float": 2}[scalar]
        if kind > _category(a):
            return "float32" if kind == 2 else "int64"
        return a
    if shapes is not None and bool(len(shapes[0])) != bool(len(shapes[1])):
        dim, zero = (a, b) if len(shapes[0]) else (b, a)
        if _category(zero) <= _category(dim) and not (dim == "bool" and zero != "bool"):
            return dim
    if _category(a) != _category(b):
        return a if _category(a) > _category(b) else b
    if a == b:
        return a
    return _WIDER.get((a, b)) or _WIDER.get((b, a)) or a


def result_float(dtype: str) -> str:
    """The dtype of a float-valued op (exp, div...) on ``dtype``: ints and bools give
    float32."""
    return dtype if is_float(dtype) else "float32"


@dataclass
class Val:
    """A named value of the forward being generated.

    Attributes:
        name: the Python variable (or expression) holding it.
        shape: symbolic shape.
        dtype: "float32", "float64", "int32", "int64" or "bool".
        grad: may carry a gradient (computed from a float input or a parameter).
        is_input: a forward argument (in-place writes into it fall back to eager).
        readonly: a broadcast view (``expand``): writing into it raises.
        index_bound: for integer values, every element is in ``[0, index_bound)``.
        ragged: the length is data-dependent (mask indexing); only full reductions fit.
    """

    name: str
    shape: Shape
    dtype: str
    grad: bool = False
    is_input: bool = False
    readonly: bool = False
    index_bound: int | None = None
    ragged: bool = False
    tags: set = field(default_factory=set)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)
