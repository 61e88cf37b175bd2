"""``fusionnet.nn.functional``: activations, linear, dropout and losses as functions.

Everything here is composed from Tensor methods (table ops), so autograd and
the tracer see ordinary ops; no function touches array data directly.
"""
from __future__ import annotations

import math

from ..dispatch import apply, trace_hook
from ..ops.loss import MSE_REDUCTIONS
from ..factories import arange, rand
from ..tensor import Tensor

__all__ = ["relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax", "linear", "dropout",
           "mse_loss", "cross_entropy", "nll_loss", "identity"]

_REDUCTIONS = ("mean", "sum", "none")


def relu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002 - PyTorch's names
    """max(x, 0) elementwise."""
    return input.relu_() if inplace else input.relu()


def sigmoid(input: Tensor) -> Tensor:  # noqa: A002
    """Logistic sigmoid 1 / (1 + exp(-x))."""
    return input.sigmoid()


def tanh(input: Tensor) -> Tensor:  # noqa: A002
    """Hyperbolic tangent."""
    return input.tanh()


def identity(input: Tensor) -> Tensor:  # noqa: A002
    """The input itself."""
    return input


def gelu(input: Tensor, approximate: str = "none") -> Tensor:  # noqa: A002
    """GELU: ``x * Phi(x)``, exact (erf) by default or the tanh approximation."""
    if approximate == "none":
        return 0.5 * input * (1 + (input * (1 / math.sqrt(2))).erf())
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (input + 0.044715 * input * input * input)
        return 0.5 * input * (1 + inner.tanh())
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def softmax(input: Tensor, dim: int, dtype=None) -> Tensor:  # noqa: A002
    """exp(x) / sum(exp(x)) along ``dim`` (shifted by the max, so it never overflows)."""
    x = input if dtype is None else input.to(dtype)
    # The shift cancels mathematically; detaching it keeps the graph small.
    e = (x - x.amax(dim, keepdim=True).detach()).exp()
    return e / e.sum(dim, keepdim=True)


def log_softmax(input: Tensor, dim: int, dtype=None) -> Tensor:  # noqa: A002
    """log(softmax(x)) along ``dim``, computed stably as ``x - m - log(sum(exp(x - m)))``."""
    x = input if dtype is None else input.to(dtype)
    shifted = x - x.amax(dim, keepdim=True).detach()
    return shifted - shifted.exp().sum(dim, keepdim=True).log()


def expect_tensor(value, fn: str, arg: str = "input") -> None:
    """Raise PyTorch's TypeError unless ``value`` is a Tensor (``fn(): argument ...``)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{fn}(): argument '{arg}' must be Tensor, not {type(value).__name__}")


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002
    """``input @ weight.T + bias`` with ``weight`` of shape (out_features, in_features)."""
    expect_tensor(input, "linear")
    out = input.matmul(weight.T)
    return out if bias is None else out + bias


def dropout(input: Tensor, p: float = 0.5, training: bool = True,  # noqa: A002
            inplace: bool = False) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) (training only)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0
    keep = rand(tuple(input.shape), device=input.device) >= p
    out = input * keep * (1.0 / (1.0 - p))
    return input.copy_(out) if inplace else out


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction!r} is not a valid value for reduction; use one of "
                     f"{_REDUCTIONS}")


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Squared error ``(input - target) ** 2``, reduced by ``reduction``."""
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"mse_loss: input shape {tuple(input.shape)} and target shape "
                         f"{tuple(target.shape)} differ (broadcasting them is almost always "
                         "a bug)")
    if reduction in MSE_REDUCTIONS:  # one op and one autograd node (ops/loss.py)
        return apply("mse_loss", input, target, reduction=reduction)
    diff = input - target
    return _reduce(diff * diff, reduction)


def nll_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Negative log-likelihood: ``-input[i, target[i]]`` for log-probabilities ``input``
    of shape (N, C) and integer class indices ``target`` of shape (N,)."""
    if input.ndim != 2 or target.ndim != 1 or target.shape[0] != input.shape[0]:
        raise ValueError(f"nll_loss expects input (N, C) and target (N,), got "
                         f"{tuple(input.shape)} and {tuple(target.shape)}")
    if target.is_floating_point():
        raise TypeError("nll_loss: target must hold integer class indices (int64)")
    if trace_hook() is not None:
        # Traced (for compiled code): select with a one-hot mask, ops the code generators
        # produce, instead of indexing. The values and the gradient are eager's exactly
        # (``where`` keeps the picked element and adds zeros), but an out-of-range class
        # picks nothing instead of raising (see docs/training.md).
        classes = arange(input.shape[1], device=input.device)
        hot = target.unsqueeze(1) == classes
        picked = input.where(hot, 0.0).sum(1)
    else:
        picked = input[arange(input.shape[0], device=input.device), target]
    return _reduce(-picked, reduction)


def cross_entropy(input: Tensor, target: Tensor, reduction: str = "mean",  # noqa: A002
                  label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy of logits ``input`` (N, C) or (C,) against integer classes
    (N,) / () or class probabilities of the input's shape."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid value for reduction")
    if input.ndim == 1:  # one unbatched sample: every reduction of one loss is that loss
        return cross_entropy(input.unsqueeze(0), target.unsqueeze(0), "none",
                             label_smoothing)[0]
    logp = log_softmax(input, 1)
    if target.is_floating_point():  # class probabilities
        if tuple(target.shape) != tuple(input.shape):
            raise ValueError("cross_entropy: probability targets must have the input's shape")
        probs = target
        if label_smoothing:
            probs = probs * (1 - label_smoothing) + label_smoothing / input.shape[1]
        return _reduce(-(probs * logp).sum(1), reduction)
    loss = nll_loss(logp, target, reduction="none")
    if label_smoothing:
        smooth = -logp.mean(1)
        loss = loss * (1 - label_smoothing) + smooth * label_smoothing
    return _reduce(loss, reduction)


# Convolution, pooling, normalisation and embedding live in their own module (so this one
# stays short); they are part of F all the same.
from ._functional_layers import (adaptive_avg_pool2d, avg_pool2d, batch_norm,  # noqa: E402
                                 conv2d, embedding, layer_norm, max_pool2d)

__all__ += ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm",
            "layer_norm", "embedding"]
