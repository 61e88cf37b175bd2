"""Reduction rows of the op table: sum, mean, max, min, argmax, argmin.

Attributes: ``dim`` (None for all axes, an int, or a tuple) and ``keepdim``; ``max``
and ``min`` also take ``ties`` (how their gradient treats ties, see :data:`TIES`).
The row's ``reduction`` facts (:class:`~fusionnet.ops.registry.Reduction`) say which
elementwise op folds an element into the accumulator, where the accumulator starts, what
an empty input does and how the result finishes. A code generator needs nothing else to
fold elementwise producers into the reduction loop: it spells the ``combine`` op as it
spells any elementwise op.
"""
from __future__ import annotations

import math

import numpy as np

from .registry import SAVES_INPUTS, SAVES_NONE, Kind, Op, Reduction, register
from .rules import normalize_dim, normalize_dims, reduced_shape, same_dtype

R = Kind.REDUCTION
_I64 = np.dtype(np.int64)


def _axes(a, dim):
    axes = normalize_dims(dim, a.ndim)
    return axes if a.ndim else None


def _kept(g, x, dim, keepdim):
    """``g`` reshaped so that it broadcasts against ``x`` (reduced axes as size 1)."""
    if keepdim:
        return g
    return g.reshape(reduced_shape(x.shape, dim, keepdim=True))


def _sum_dtype(d, **_):
    # Summing bools or ints gives int64, as in PyTorch.
    return d if d.kind == "f" else _I64


def _sum_grad(g, x, dim=None, keepdim=False, **_):
    return (_kept(g, x, dim, keepdim).expand(x.shape),)


def _mean_grad(g, x, dim=None, keepdim=False, **_):
    count = 1
    for a in normalize_dims(dim, x.ndim):
        count *= x.shape[a]
    return (_kept(g, x, dim, keepdim).expand(x.shape) / count,)


#: How ``max``/``min`` share the gradient among tied elements (attribute ``ties``), as
#: PyTorch's three ops that these rows stand for do:
#: ``"even"`` (default; ``amax``/``amin``): evenly among the elements equal to the
#: result; a NaN result equals nothing, so that slice's gradient is NaN.
#: ``"even_nan"`` (``max()``/``min()`` without dim): evenly, NaN counting as equal to NaN.
#: ``"index"`` (``max(dim)``/``min(dim)``): all to the index argmax/argmin returns.
TIES = ("even", "even_nan", "index")


def _extreme_grad(g, x, out, dim=None, keepdim=False, ties="even", **_):
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    best = _kept(out, x, dim, keepdim)
    hit = x == best
    if ties != "even":  # NaN ties NaN
        hit = hit.logical_or((x != x).logical_and(best != best))
    if ties == "index" and dim is not None and x.ndim:
        # The first hit along dim is the index argmax/argmin return (NaN first).
        hit = _one_hot(hit.argmax(dim=dim, keepdim=True), x, dim)
    share = _kept(g, x, dim, keepdim) / hit.sum(dim=dim, keepdim=True)
    if ties == "even":  # amax/amin: PyTorch multiplies by the mask (an inf gradient gives NaN)
        return (share * hit,)
    # max()/min(): PyTorch writes the gradient into the hits and leaves exact zeros
    # elsewhere, even when the incoming gradient is inf or NaN.
    return (share.where(hit, 0.0),)


def _one_hot(index, x, dim):
    """Bool tensor of ``x``'s shape: True where the position along ``dim`` is ``index``."""
    from ..factories import arange  # noqa: PLC0415 - factories build on the op table

    axis = normalize_dim(dim, x.ndim)
    positions = arange(x.shape[axis], device=x.device)
    return positions.reshape(tuple(-1 if i == axis else 1 for i in range(x.ndim))) == index


def _mean_dtype(d, **_):
    if d.kind != "f":  # PyTorch's error, and its type (RuntimeError)
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be "
                           f"either a floating point or complex dtype. Got: {d}")
    return d


def _lowest(acc_dtype):
    """Where a maximum starts: below every value of the accumulator's type."""
    return -math.inf if acc_dtype.kind == "f" else int(np.iinfo(acc_dtype).min)


def _highest(acc_dtype):
    """Where a minimum starts: above every value of the accumulator's type."""
    return math.inf if acc_dtype.kind == "f" else int(np.iinfo(acc_dtype).max)


def _reduction(name, eager, grad, doc, facts, dtype=same_dtype, saves=SAVES_INPUTS):
    return register(Op(name, R, 1, eager, reduced_shape, dtype, grad, doc, saves=saves,
                       reduction=facts))


def numpy_sum(xp, a, axis=None, keepdims=False):
    """``xp.sum``; for NumPy the ufunc reduction it runs, without ``np.sum``'s Python
    wrapper (half an eager op's cost on small arrays). The same values exactly."""
    if xp is np:
        return np.add.reduce(a, axis=axis, keepdims=keepdims)
    return xp.sum(a, axis=axis, keepdims=keepdims)


def numpy_mean(xp, a, axis=None, keepdims=False):
    """``xp.mean`` of a float array; for float32/float64 NumPy arrays the steps
    ``np.mean`` takes (the sum, then a true division by the count as a NumPy integer,
    which rounds through float64), bitwise the same, without its Python wrapper."""
    if xp is not np or a.dtype.kind != "f" or a.dtype.itemsize < 4:
        return xp.mean(a, axis=axis, keepdims=keepdims)  # float16 accumulates in float32
    axes = range(a.ndim) if axis is None else (axis,) if isinstance(axis, int) else axis
    count = 1
    for ax in axes:
        count *= a.shape[ax]
    total = np.add.reduce(a, axis=axis, keepdims=keepdims)
    if isinstance(total, np.ndarray):
        return np.true_divide(total, np.intp(count), out=total, casting="unsafe")
    return total.dtype.type(total / np.intp(count))


def _sum_eager(xp, a, dim=None, keepdim=False):
    out = numpy_sum(xp, a, axis=_axes(a, dim), keepdims=keepdim)
    return out.astype(_sum_dtype(a.dtype), copy=False)


# Integer sums wrap around on overflow, as NumPy's do (``add`` of int64 wraps).
_reduction("sum", _sum_eager, _sum_grad, "sum over dim", Reduction(combine="add", start=0),
           dtype=_sum_dtype, saves=SAVES_NONE)
_reduction("mean", lambda xp, a, dim=None, keepdim=False:
           numpy_mean(xp, a, axis=_axes(a, dim), keepdims=keepdim).astype(a.dtype,
                                                                           copy=False),
           _mean_grad, "mean over dim",
           Reduction(combine="add", start=0, divide_by_count=True),
           dtype=_mean_dtype, saves=SAVES_NONE)


def _check_nonempty(a, name, dim=None):
    # Only an empty *reduction* has no value: max over a non-empty dim of an empty tensor
    # is an empty result, as in PyTorch (zeros(0, 3).amax(1) has shape (0,)).
    if a.size == 0 and 0 in (a.shape if dim is None else [a.shape[d] for d in _axes(a, dim)]):
        raise ValueError(f"{name}() of an empty tensor has no identity value")


def _max_eager(xp, a, dim=None, keepdim=False, ties="even"):  # ties: for the gradient
    _check_nonempty(a, "max", dim)
    return xp.max(a, axis=_axes(a, dim), keepdims=keepdim)


def _min_eager(xp, a, dim=None, keepdim=False, ties="even"):
    _check_nonempty(a, "min", dim)
    return xp.min(a, axis=_axes(a, dim), keepdims=keepdim)


def _saves_input_and_output(needs):
    return (0,), True


# NaN-aware combines (maximum/minimum): once a NaN is seen it stays, as in NumPy.
_reduction("max", _max_eager, _extreme_grad, "maximum over dim (NaN propagates)",
           Reduction(combine="maximum", start=_lowest, empty_raises=True),
           saves=_saves_input_and_output)
_reduction("min", _min_eager, _extreme_grad, "minimum over dim (NaN propagates)",
           Reduction(combine="minimum", start=_highest, empty_raises=True),
           saves=_saves_input_and_output)


def _arg_shape(shape, dim=None, keepdim=False, **_):
    if dim is None:  # an index into the flattened tensor
        return (1,) * len(shape) if keepdim else ()
    return reduced_shape(shape, normalize_dim(dim, len(shape)), keepdim)


def _arg_eager(fn_name):
    def eager(xp, a, dim=None, keepdim=False):
        _check_nonempty(a, fn_name, None if dim is None or a.ndim == 0 else dim)
        fn = getattr(xp, fn_name)
        if dim is None:  # index into the flattened tensor, as PyTorch does
            out = fn(a.reshape(-1))
            return out.reshape((1,) * a.ndim) if keepdim else out
        axis = normalize_dim(dim, a.ndim)
        return fn(a, axis=axis if a.ndim else None, keepdims=keepdim)
    return eager


for _name in ("argmax", "argmin"):
    register(Op(_name, R, 1, _arg_eager(_name), _arg_shape, lambda d, **_: _I64, None,
                f"index of the {_name[3:]}imum along dim (int64; flattened if dim is None)",
                saves=SAVES_NONE,  # an index, not an accumulated value: no Reduction
                index_of=_name[3:]))
