"""What a compiled forward checks besides its signature: captured module state.

A trace bakes in parameter references, plain attribute values, what forward hooks
did, and whatever Python values ``forward`` read (``graph.reads``). These helpers
take and compare snapshots of that state, resolve captured tensors by dotted name,
and find the user's frame for warnings.
"""
from __future__ import annotations

import sys

from ..pystate import build_guard, is_user_frame

__all__ = ["snapshot", "resolve", "resolve_or_none", "user_stacklevel", "python_guards",
           "unwrap"]


def unwrap(module):
    """The module a ``fuse(...)`` wrapper stands for (the module itself otherwise)."""
    return module.__dict__.get("_orig", module)


def snapshot(module) -> dict:
    """What every compiled forward depends on besides what its trace read: each module's
    training flag and forward hooks (attribute values forward read are guarded through
    :func:`python_guards`)."""
    snap = {}
    for name, m in module.named_modules():
        m = unwrap(m)
        snap[(name, "training")] = m.training
        hooks = (tuple(m._forward_pre_hooks.values()), tuple(m._forward_hooks.values()))
        if hooks != ((), ()):
            snap[(name, "<hooks>")] = tuple(map(id, hooks[0] + hooks[1]))
    return snap


def python_guards(graph):
    """``(per_call, on_version_move)`` checks for the Python values ``graph``'s trace read
    (see :func:`fusionnet.pystate.build_guard`)."""
    if graph.reads is None:
        return [], []
    return build_guard(graph.reads)


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first frame of user code."""
    frame, level = sys._getframe(1), 1
    while frame is not None and not is_user_frame(frame):
        frame, level = frame.f_back, level + 1
    return level


def resolve(module, kind: str, target: str):
    """The tensor a graph node named: parameter, buffer or tensor attribute ``target``
    (dotted, through ``fuse(...)`` wrappers of submodules)."""
    *path, name = target.split(".")
    owner = unwrap(module)
    for part in path:
        owner = unwrap(owner._modules[part])
    if kind == "param":
        return owner._parameters[name]
    if kind == "buffer":
        return owner._buffers[name]
    return owner.__dict__[name]


def resolve_or_none(module, kind: str, target: str):
    """:func:`resolve`, or None when the name no longer leads anywhere."""
    try:
        return resolve(module, kind, target)
    except (AttributeError, KeyError, TypeError):
        return None
