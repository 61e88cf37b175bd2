"""Loss modules: ``MSELoss``, ``CrossEntropyLoss``, ``NLLLoss``."""
from __future__ import annotations

from ..tensor import Tensor
from . import functional as F
from .module import Module

__all__ = ["MSELoss", "CrossEntropyLoss", "NLLLoss"]


class _Loss(Module):
    """Base of the losses: holds ``reduction`` ('mean', 'sum' or 'none')."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{reduction!r} is not a valid value for reduction")
        self.reduction = reduction


class MSELoss(_Loss):
    """Mean (or summed) squared error between input and target."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        """``reduction((input - target) ** 2)``."""
        return F.mse_loss(input, target, reduction=self.reduction)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy of logits (N, C) against integer classes (N,) or class
    probabilities (N, C)."""

    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        """The cross-entropy, reduced."""
        return F.cross_entropy(input, target, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (N, C) at integer classes (N,)."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        """``reduction(-input[i, target[i]])``."""
        return F.nll_loss(input, target, reduction=self.reduction)
