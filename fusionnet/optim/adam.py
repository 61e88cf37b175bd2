"""Adam (Kingma and Ba), with PyTorch's bias correction and L2 weight decay."""
from __future__ import annotations

from typing import Iterable

from ..factories import zeros_like
from .optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """PyTorch's Adam: ``g = grad + wd * p``; ``m = b1 m + (1-b1) g``;
    ``v = b2 v + (1-b2) g^2``; ``p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid Adam settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def _update(self, p, g, group, state) -> None:
        b1, b2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = zeros_like(p)
            state["exp_avg_sq"] = zeros_like(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = zeros_like(p)
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).add_(g * g, alpha=1 - b2)
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]
            vmax.copy_(vmax.maximum(v))
            v = vmax
        denom = (v / (1 - b2 ** t)).sqrt() + group["eps"]
        step_size = group["lr"] / (1 - b1 ** t)
        p.sub_(step_size * m / denom)


class AdamW(Adam):
    """PyTorch's AdamW: Adam with decoupled weight decay, ``p *= 1 - lr * wd`` before the
    Adam update (the gradient itself is not decayed); ``weight_decay`` defaults to 0.01."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
        self.defaults["decoupled_weight_decay"] = True

    def _update(self, p, g, group, state) -> None:
        if group["weight_decay"] != 0:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        super()._update(p, g, group, state)
