"""Loss rows of the op table: ``mse_loss``.

A loss is one row so that eager runs it as one op and one autograd node (PyTorch's
``MseLossBackward0``) instead of a subtraction, a product and a mean with three nodes:
on small batches each dispatch costs more than the arithmetic. The row's
``decompose`` says what the op *is* in table ops: a trace records that instead, so the
compilers fuse the pieces like any elementwise chain and reduction. Eager's result and
gradient round exactly as the decomposed ops do (the same operations in the same order).
"""
from __future__ import annotations

from .reduction import numpy_mean, numpy_sum
from .registry import SAVES_INPUTS, Kind, Op, register
from .rules import same_dtype

__all__ = ["MSE_REDUCTIONS"]

#: The reductions the ``mse_loss`` row takes (``"none"`` is the decomposition itself).
MSE_REDUCTIONS = ("mean", "sum")


def _mse_shape(a, b, reduction="mean"):
    if tuple(a) != tuple(b):
        raise ValueError(f"mse_loss: input shape {tuple(a)} and target shape {tuple(b)} "
                         "differ")
    if reduction not in MSE_REDUCTIONS:
        raise ValueError(f"mse_loss: reduction must be one of {MSE_REDUCTIONS}, got "
                         f"{reduction!r}")
    return ()


def _mse_eager(xp, a, b, reduction="mean"):
    d = xp.subtract(a, b)
    sq = xp.multiply(d, d)
    out = numpy_mean(xp, sq) if reduction == "mean" else numpy_sum(xp, sq)
    return out.astype(sq.dtype, copy=False)


def _mse_decompose(a, b, reduction="mean"):
    d = a - b
    sq = d * d
    return sq.mean() if reduction == "mean" else sq.sum()


def _mse_grad(g, a, b, reduction="mean", needs=(True, True), **_):
    # As the decomposition's backward rounds: mean gives g / count per element, the
    # product d * d gives g * d twice, summed (t + t), the subtraction (t, -t).
    scale = g / a.numel() if reduction == "mean" else g
    t = (a - b) * scale
    t = t + t
    return (t if needs[0] else None, -t if needs[1] else None)


register(Op("mse_loss", Kind.OPAQUE, 2, _mse_eager, _mse_shape, same_dtype, _mse_grad,
            "mean (or sum) of squared differences", saves=SAVES_INPUTS, promote=(0, 1),
            refuses_bool="Subtraction, the `-` operator, with a bool tensor is not supported",
            decompose=_mse_decompose))
