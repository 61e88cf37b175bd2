"""Weight and state changes applied identically to a case's eager and fused copies.

Each kind picks its target (a parameter, buffer or module tensor attribute, by dotted
name) and its new values from the case's seed, then applies the same change to both
modules the way user code does it:

- ``data_mul``: ``p.data.mul_(k)``
- ``no_grad_add``: ``with torch.no_grad(): p.add_(delta)``
- ``replace_param``: ``owner.name = nn.Parameter(new)``
- ``load_state_dict``: new values for every entry of ``state_dict()``
- ``data_assign``: ``p.data = new`` (new storage, same shape and dtype)
- ``sgd_step``: ``optim.SGD(parameters, lr=0.1).step()`` on the last backward's grads
- ``buffer_inplace``: an in-place write into a buffer or tensor attribute
- ``constant_replace``: a buffer or tensor attribute replaced by a new tensor
"""
from __future__ import annotations

import numpy as np

import fusionnet
from fusionnet import nn
from fusionnet.nn.parameter import UninitializedParameter

__all__ = ["apply_mutations", "state_tensors"]


def _random_like(rng: np.random.Generator, a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return rng.standard_normal(a.shape).astype(a.dtype)
    if a.dtype.kind == "b":
        return rng.random(a.shape) < 0.5
    return rng.integers(-4, 5, size=a.shape).astype(a.dtype)


def state_tensors(module) -> list[tuple[str, object]]:
    """Buffers and plain tensor attributes (module constants), by dotted name, sorted."""
    out = dict(module.named_buffers())
    for prefix, m in module.named_modules():
        for key, value in vars(m).items():
            if isinstance(value, fusionnet.Tensor) and not isinstance(value, nn.Parameter):
                out[f"{prefix}.{key}".lstrip(".")] = value
    return sorted(out.items())


def _owner(module, dotted: str):
    path, _, leaf = dotted.rpartition(".")
    return (module.get_submodule(path) if path else module), leaf


def _tensor(a: np.ndarray):
    return fusionnet.from_numpy(np.array(a, copy=True))


def _apply(kind: str, rng: np.random.Generator, modules) -> str:
    """Apply one kind to every module; returns a note when it had no target."""
    params = sorted(dict(modules[0].named_parameters()).items())
    if any(isinstance(p, UninitializedParameter) for _, p in params):
        return f"{kind}: skipped (uninitialised lazy parameters)"
    state = state_tensors(modules[0])
    if kind in ("data_mul", "no_grad_add", "replace_param", "data_assign") and not params:
        return f"{kind}: skipped (no parameters)"
    if kind in ("buffer_inplace", "constant_replace") and not state:
        return f"{kind}: skipped (no buffers or tensor attributes)"
    if kind in ("data_mul", "no_grad_add", "replace_param", "data_assign"):
        name, p0 = params[rng.integers(len(params))]
        new = _random_like(rng, p0.detach().numpy())
        factor = float(rng.choice([0.5, -1.0, 2.0, 0.0]))
        for m in modules:
            p = m.get_parameter(name)
            if kind == "data_mul":
                p.data.mul_(factor)
            elif kind == "no_grad_add":
                with fusionnet.no_grad():
                    p.add_(_tensor(new * 0.1))
            elif kind == "replace_param":
                owner, leaf = _owner(m, name)
                setattr(owner, leaf, nn.Parameter(_tensor(new)))
            else:
                p.data = _tensor(new)
    elif kind == "load_state_dict":
        values = {k: _random_like(rng, v.numpy()) for k, v in modules[0].state_dict().items()}
        for m in modules:
            m.load_state_dict({k: _tensor(v) for k, v in values.items()})
    elif kind == "sgd_step":
        if not any(p.grad is not None for _, p in params):
            return f"{kind}: skipped (no gradients)"
        for m in modules:
            fusionnet.optim.SGD(m.parameters(), lr=0.1).step()
    else:
        name, t0 = state[rng.integers(len(state))]
        new = _random_like(rng, t0.numpy())
        for m in modules:
            t = dict(state_tensors(m))[name]
            if kind == "buffer_inplace":
                if t.dtype == fusionnet.bool:
                    t.copy_(_tensor(new))
                else:
                    t.mul_(2)
            else:
                owner, leaf = _owner(m, name)
                setattr(owner, leaf, _tensor(new))
    return ""


def apply_mutations(kinds, eager, fused_base, seed: int) -> list[str]:
    """Apply each kind in order to both modules; returns notes on kinds that were skipped."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 11])
    notes = []
    for kind in kinds:
        note = _apply(kind, rng, (eager, fused_base))
        if note:
            notes.append(note)
    return notes
