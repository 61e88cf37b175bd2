"""What a compiled forward checks besides its signature: captured module state.

A trace bakes in parameter references, plain attribute values and what forward
hooks did. These helpers take and compare snapshots of that state, resolve
captured tensors by dotted name, and find the user's frame for warnings.
"""
from __future__ import annotations

import os
import sys
import threading

__all__ = ["snapshot", "resolve", "resolve_or_none", "on_main_thread", "user_stacklevel"]

_MAIN_THREAD = threading.main_thread().ident
_SIMPLE = (int, float, complex, str, bool, type(None), bytes)
_SKIP = {"training", "_parameters", "_buffers", "_modules", "_non_persistent_buffers_set",
         "_forward_hooks", "_forward_pre_hooks", "_fusion_runner"}


def fingerprint(value):
    if isinstance(value, _SIMPLE) or (isinstance(value, tuple) and all(
            isinstance(v, _SIMPLE) for v in value)):
        return ("value", value)
    return ("object", id(value))  # tensors, lists, functions...: by identity


def snapshot(module) -> dict:
    """What forward may have baked into a trace besides tensors: every module's plain
    attributes (values for simple ones, identity otherwise) and its forward hooks."""
    snap = {}
    for name, m in module.named_modules():
        for key, value in m.__dict__.items():
            if key not in _SKIP:
                snap[(name, key)] = fingerprint(value)
        hooks = (tuple(m._forward_pre_hooks.values()), tuple(m._forward_hooks.values()))
        if hooks != ((), ()):
            snap[(name, "<hooks>")] = tuple(map(id, hooks[0] + hooks[1]))
    return snap


def on_main_thread() -> bool:
    """Parallel loops are launched from the main thread only (see numba_backend)."""
    return threading.get_ident() == _MAIN_THREAD


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first frame outside fusionnet."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def resolve(module, kind: str, target: str):
    """The tensor a graph node named: parameter, buffer or tensor attribute ``target``."""
    *path, name = target.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    if kind == "param":
        return owner._parameters[name]
    if kind == "buffer":
        return owner._buffers[name]
    return owner.__dict__[name]


def resolve_or_none(module, kind: str, target: str):
    try:
        return resolve(module, kind, target)
    except (AttributeError, KeyError):
        return None
