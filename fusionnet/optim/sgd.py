"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""
from __future__ import annotations

from typing import Iterable

from .optimizer import Optimizer, state_tensor, written

__all__ = ["SGD"]


class SGD(Optimizer):
    """PyTorch's SGD: ``g = grad + wd * p``; with momentum ``b = mu * b + (1 - dampening) * g``
    (``b = g`` on the first step) and ``g = b`` (or ``g + mu * b`` for Nesterov);
    then ``p -= lr * g``."""

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False,
                 maximize: bool = False) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"invalid SGD settings: lr={lr}, momentum={momentum}, "
                             f"weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _update(self, p, g, group, state) -> None:
        mu = group["momentum"]
        if mu != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = state_tensor(g.copy())
            else:
                b = buf._data
                b *= mu
                damp = 1 - group["dampening"]
                b += g if damp == 1 else g * damp  # add_(g, alpha=1 - dampening)
                written(buf)
            g = g + mu * buf._data if group["nesterov"] else buf._data
        p._data -= group["lr"] * g
        written(p)
