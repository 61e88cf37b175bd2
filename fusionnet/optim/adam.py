"""Adam (Kingma and Ba), with PyTorch's bias correction and L2 weight decay."""
from __future__ import annotations

from typing import Iterable

from ..factories import zeros_like
from .optimizer import Optimizer, written

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
        m, v = state["exp_avg"]._data, state["exp_avg_sq"]._data
        m *= b1
        m += g * (1 - b1)              # m.mul_(b1).add_(g, alpha=1 - b1)
        v *= b2
        v += (g * g) * (1 - b2)
        written(state["exp_avg"], state["exp_avg_sq"])
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]
            p._xp.maximum(vmax._data, v, out=vmax._data)
            written(vmax)
            v = vmax._data
        denom = p._xp.sqrt(v / (1 - b2 ** t)) + group["eps"]
        step_size = group["lr"] / (1 - b1 ** t)
        p._data -= step_size * m / denom
        written(p)


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
            p._data *= 1 - group["lr"] * group["weight_decay"]
            written(p)
        super()._update(p, g, group, state)
