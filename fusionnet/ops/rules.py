"""Shared shape and dtype rules used by many rows of the op table."""
from __future__ import annotations

import operator

import numpy as np

__all__ = ["ShapeError", "broadcast", "same_shape", "same_dtype", "float_dtype",
           "bool_dtype", "normalize_dim", "normalize_dims", "reduced_shape"]

_F32 = np.dtype(np.float32)
_BOOL = np.dtype(np.bool_)


class ShapeError(RuntimeError, ValueError):
    """Input shapes do not fit an op. Both a RuntimeError (as PyTorch raises) and a ValueError."""


def broadcast(*shapes, **_attrs) -> tuple:
    """NumPy broadcasting of all input shapes, with an error naming them."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        pass
    # Find the first offending dimension, counting from the right as NumPy does.
    ndim = max(len(s) for s in shapes)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    for d in range(ndim - 1, -1, -1):
        sizes = {p[d] for p in padded} - {1}
        if len(sizes) > 1:
            listed = " and ".join(str(tuple(s)) for s in shapes)
            raise ShapeError(f"shapes {listed} cannot be broadcast together: "
                             f"sizes {sorted(sizes)} at dimension {d - ndim}")
    raise ShapeError(f"shapes {shapes} cannot be broadcast together")


def same_shape(shape, *_rest, **_attrs) -> tuple:
    """Output has the shape of the first input."""
    return tuple(shape)


def same_dtype(dtype, *_rest, **_attrs):
    """Output has the (promoted) dtype of the first input."""
    return dtype


def float_dtype(dtype, *_rest, **_attrs):
    """Floats keep their dtype; ints and bools become the default float (float32)."""
    return dtype if dtype.kind == "f" else _F32


def bool_dtype(*_dtypes, **_attrs):
    """Comparisons and logical ops give bool."""
    return _BOOL


def normalize_dim(dim, ndim: int) -> int:
    """One ``dim`` (negatives count from the end) as an axis in ``range(ndim)``.

    A 0-d tensor takes ``0`` and ``-1``, as in PyTorch. For a dim of the *result*
    (``unsqueeze``, ``stack``) pass ``ndim + 1``. Out of range: PyTorch's IndexError.
    """
    dim = operator.index(dim)
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], "
                         f"but got {dim})")
    return dim % n


def normalize_dims(dim, ndim: int) -> tuple:
    """``dim`` (None for all, an int or a sequence; negatives allowed) as a sorted tuple of
    axes; each is checked by :func:`normalize_dim`, and a dim given twice is refused."""
    if dim is None:
        return tuple(range(ndim))
    if hasattr(dim, "__index__"):
        return (normalize_dim(dim, ndim),)
    axes = [normalize_dim(d, ndim) for d in dim]
    for i, a in enumerate(axes):
        if a in axes[:i]:
            raise ShapeError(f"dim {a} appears multiple times in the list of dims")
    return tuple(sorted(axes))


def reduced_shape(shape, dim=None, keepdim=False, **_attrs) -> tuple:
    """Shape after reducing ``dim`` (None: all axes)."""
    axes = normalize_dims(dim, len(shape))
    if keepdim:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)
