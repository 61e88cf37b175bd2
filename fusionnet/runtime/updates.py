"""Optimiser updates as table ops, for a compiled training step (``runtime/step.py``).

Each rule mirrors its eager optimiser (``fusionnet/optim``) op for op, so the compiled
update rounds exactly as eager's does. What eager reads as a Python number (``lr``,
``betas``, the bias corrections of step ``t``) is a 0-d *input* of the compiled step,
of the parameter's dtype: eager converts its weak Python scalars to that dtype too, so
the arithmetic is the same, and a new ``lr`` (or a new step count) is seen without
compiling again. What changes the *shape* of the update (momentum on or off, Nesterov,
AMSGrad, a first step that creates a buffer) is part of the compiled entry's key.

A rule is three functions of one parameter group:

* ``scalars(group, state) -> {name: float}``: the runtime numbers, computed in Python
  (float64) exactly as the eager optimiser computes them, for the step about to run;
* ``structure(group, state) -> tuple``: what the compiled update depends on;
* ``update(p, g, state, sc, group) -> (new p, {state name: new value})``: the update
  with table ops on traced tensors (``state``: the state tensors that exist; ``sc``:
  the scalars as 0-d tensors).

``advance(state, group)`` does what eager does to Python-side state before the update
(Adam's step count), ``init(p, state, group)`` what eager does on a parameter's first
step that a compiled update can do ahead of it (Adam's zero moments).
"""
from __future__ import annotations

from ..factories import zeros_like
from ..optim import SGD, Adam
from ..optim.adam import AdamW

__all__ = ["RULES", "rule_for"]


def _grad(p, g, sc, group):
    """``maximize`` and L2 weight decay, as ``Optimizer.step`` applies them."""
    if group.get("maximize"):
        g = -g
    if group.get("weight_decay", 0) != 0 and not _decoupled(group):
        g = g + sc["weight_decay"] * p
    return g


def _decoupled(group) -> bool:
    return bool(group.get("decoupled_weight_decay"))


def _add_scaled(a, b, alpha_name, alpha, sc):
    """``a.add_(b, alpha=alpha)``: eager multiplies only when ``alpha != 1``."""
    return a + b if alpha == 1 else a + b * sc[alpha_name]


class _SGDRule:
    """``optim.SGD``: momentum, dampening, Nesterov, weight decay, maximize."""

    @staticmethod
    def scalars(group, state) -> dict:
        out = {"lr": group["lr"]}  # only what the update reads: each is a driver argument
        if group["momentum"] != 0:
            out["momentum"] = group["momentum"]
            out["one_minus_dampening"] = 1 - group["dampening"]
        if group["weight_decay"] != 0:
            out["weight_decay"] = group["weight_decay"]
        return out

    @staticmethod
    def structure(group, state) -> tuple:
        return (group["momentum"] != 0, group["nesterov"], group["weight_decay"] != 0,
                bool(group.get("maximize")), 1 - group["dampening"] == 1,
                "momentum_buffer" in state)

    @staticmethod
    def state_names(group, state) -> tuple:
        return ("momentum_buffer",) if group["momentum"] != 0 and "momentum_buffer" in state \
            else ()

    @staticmethod
    def advance(state, group) -> None:
        return None

    @staticmethod
    def init(p, state, group) -> None:
        return None

    @staticmethod
    def update(p, g, state, sc, group):
        g = _grad(p, g, sc, group)
        new = {}
        if group["momentum"] != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = g.clone()
            else:
                buf = _add_scaled(buf * sc["momentum"], g, "one_minus_dampening",
                                  1 - group["dampening"], sc)
            new["momentum_buffer"] = buf
            g = g + sc["momentum"] * buf if group["nesterov"] else buf
        return p - sc["lr"] * g, new


class _AdamRule:
    """``optim.Adam`` / ``optim.AdamW``: bias correction, AMSGrad, weight decay (L2 or
    decoupled), maximize."""

    @staticmethod
    def scalars(group, state) -> dict:
        b1, b2 = group["betas"]
        t = state["step"]
        out = {"beta1": b1, "one_minus_beta1": 1 - b1, "beta2": b2,
               "one_minus_beta2": 1 - b2, "bias_correction2": 1 - b2 ** t,
               "step_size": group["lr"] / (1 - b1 ** t), "eps": group["eps"]}
        if group["weight_decay"] != 0:
            out["weight_decay"] = group["weight_decay"]
            out["decay_factor"] = 1 - group["lr"] * group["weight_decay"]
        return out

    @staticmethod
    def structure(group, state) -> tuple:
        b1, b2 = group["betas"]
        return (group["amsgrad"], group["weight_decay"] != 0, _decoupled(group),
                bool(group.get("maximize")), 1 - b1 == 1, 1 - b2 == 1)

    @staticmethod
    def state_names(group, state) -> tuple:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())

    @staticmethod
    def advance(state, group) -> None:
        state["step"] += 1

    @staticmethod
    def init(p, state, group) -> None:
        if not state:  # what eager's first update creates before it computes
            state["step"] = 0
            state["exp_avg"] = zeros_like(p)
            state["exp_avg_sq"] = zeros_like(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = zeros_like(p)

    @staticmethod
    def update(p, g, state, sc, group):
        b1, b2 = group["betas"]
        if _decoupled(group) and group["weight_decay"] != 0:
            p = p * sc["decay_factor"]
        g = _grad(p, g, sc, group)
        m = _add_scaled(state["exp_avg"] * sc["beta1"], g, "one_minus_beta1", 1 - b1, sc)
        v = _add_scaled(state["exp_avg_sq"] * sc["beta2"], g * g, "one_minus_beta2", 1 - b2, sc)
        new = {"exp_avg": m, "exp_avg_sq": v}
        if group["amsgrad"]:
            v = state["max_exp_avg_sq"].maximum(v)
            new["max_exp_avg_sq"] = v
        denom = (v / sc["bias_correction2"]).sqrt() + sc["eps"]
        return p - sc["step_size"] * m / denom, new


#: Optimiser class -> its compiled update rule (exact classes: a subclass may change
#: ``_update``, and then it runs eagerly).
RULES = {SGD: _SGDRule, Adam: _AdamRule, AdamW: _AdamRule}


def rule_for(opt):
    """The rule for ``opt``, or None when its update has no compiled form."""
    return RULES.get(type(opt))
