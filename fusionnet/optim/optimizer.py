"""``Optimizer``: parameter groups, per-parameter state and ``zero_grad``."""
from __future__ import annotations

import threading
from typing import Any, Iterable

from ..autograd import enable_grad, no_grad
from ..dispatch import trace_hook
from ..nn.module import zero_grads
from ..tensor import Tensor

__all__ = ["Optimizer", "written", "state_tensor"]


def written(*tensors: Tensor) -> None:
    """Note an in-place write into each tensor's array (its version counter moves, as an
    in-place op's would)."""
    for t in tensors:
        t._version[0] += 1


def state_tensor(array) -> Tensor:
    """An optimiser state tensor (a momentum buffer, a moment) holding ``array``."""
    return Tensor._wrap(array)


class _Tracing(threading.local):
    # While a training step is traced (``fusionnet.runtime.step``), ``step`` records the
    # update into the trace through this hook: ``hook(optimizer, closure)``.
    step_hook = None


TRACING = _Tracing()


class Optimizer:
    """Base class of the optimisers.

    ``params`` is an iterable of tensors or of dicts (parameter groups, each
    with a ``"params"`` list and optional per-group hyper-parameters that
    override ``defaults``). ``state`` maps each parameter to its own dict.
    """

    def __init__(self, params: Iterable, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state: dict[Tensor, dict] = {}  # Tensor hashes by identity
        self.param_groups: list[dict] = []
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters (a dict with ``"params"``) with its own settings."""
        group = dict(param_group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
            if id(p) in seen:
                raise ValueError("some parameters appear in more than one parameter group")
            seen.add(id(p))
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to None (default) or to zeros."""
        zero_grads((p for g in self.param_groups for p in g["params"]), set_to_none)

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns ``closure()``'s loss.

        The loop, ``maximize`` and L2 ``weight_decay`` are shared; each optimiser
        supplies :meth:`_update` for one parameter. The update works on the arrays
        directly (as PyTorch's fused and foreach updates skip its dispatcher): the same
        operations in the same order as the tensor ops would run under ``no_grad``,
        bumping the version counter of everything written, so a backward that saved a
        parameter still sees it changed.
        """
        if TRACING.step_hook is not None:
            return TRACING.step_hook(self, closure)
        hook = trace_hook()
        if hook is not None:  # a graph break: the arrays are written outside the op table
            hook.stop("optimizer.step() inside forward (the update writes module state, "
                      "which a compiled forward would not repeat; fusionnet.fuse(step) "
                      "compiles a whole training step)")
            return None  # a recording trace (explain) goes on without updating
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                maximize = group.get("maximize")
                decay = group.get("weight_decay", 0)
                if group.get("decoupled_weight_decay"):
                    decay = 0  # AdamW decays p itself
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad._data
                    if maximize:
                        g = -g
                    if decay != 0:
                        g = g + decay * p._data
                    self._update(p, g, group, self.state.setdefault(p, {}))
        return loss

    def _update(self, p: Tensor, g, group: dict, state: dict) -> None:
        """Update ``p`` in place from gradient array ``g`` (weight decay already
        applied): write its array and call :func:`written` on what changed."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Hyper-parameters and state, with parameters referred to by position."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` returned (for the same parameters, in order)."""
        params = [p for g in self.param_groups for p in g["params"]]
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved, self.param_groups)):
            raise ValueError("loaded state dict has a different number of parameter groups "
                             "or parameters")
        for group, packed in zip(self.param_groups, saved):
            group.update({k: v for k, v in packed.items() if k != "params"})
        self.state = {params[i]: dict(s) for i, s in state_dict["state"].items()}

    def __repr__(self) -> str:
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        return "\n".join(lines) + "\n)"
