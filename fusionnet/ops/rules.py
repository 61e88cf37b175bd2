"""Shared shape and dtype rules used by many rows of the op table."""
from __future__ import annotations

import numpy as np

__all__ = ["ShapeError", "broadcast", "same_shape", "same_dtype", "float_dtype",
           "bool_dtype", "normalize_dims", "reduced_shape"]

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


def normalize_dims(dim, ndim: int) -> tuple:
    """``dim`` (None, int or sequence, negatives allowed) as a sorted tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise ShapeError(f"dimension {d} is out of range for a tensor of rank {ndim}")
        out.append(d % max(ndim, 1))
    return tuple(sorted(set(out)))


def reduced_shape(shape, dim=None, keepdim=False, **_attrs) -> tuple:
    """Shape after reducing ``dim`` (None: all axes)."""
    axes = normalize_dims(dim, len(shape))
    if keepdim:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)
