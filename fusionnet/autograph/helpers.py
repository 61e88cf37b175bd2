"""The runtime helpers converted code calls (see :mod:`fusionnet.autograph.convert`).

Each helper looks at its condition: a Python value (or a tensor that is not traced)
runs the statement as plain Python; a traced tensor hands the statement to the tracer,
which records a structured ``while`` / ``cond`` region instead of specialising on the
value it happens to see. Outside tracing everything is plain Python, so a converted
function behaves exactly as the original.
"""
from __future__ import annotations

from .. import dispatch

__all__ = ["while_stmt", "if_stmt", "if_exp", "and_", "or_", "not_", "ld", "Undefined",
           "is_traced"]


class Undefined:
    """The value of a name a converted statement's state holds but that was never bound;
    reading it in a way that matters raises as Python's unbound names do."""

    __slots__ = ("name",)

    def __init__(self, name: str = "?"):
        self.name = name

    def __repr__(self) -> str:
        return f"<undefined {self.name}>"

    def __bool__(self):
        raise NameError(f"name {self.name!r} is not defined (it is only assigned inside a "
                        "tensor-dependent `while`/`if`)")


UNDEFINED = Undefined()


def ld(read):
    """``read()``, or :data:`UNDEFINED` when the name it reads is unbound."""
    try:
        return read()
    except NameError:
        return UNDEFINED


def is_traced(value) -> bool:
    """Whether ``value`` is a tensor whose value the current trace does not know."""
    hook = dispatch.trace_hook()
    return hook is not None and hasattr(hook, "is_traced") and hook.is_traced(value)


def _py(value) -> bool:
    return bool(value)


def while_stmt(cond, body, state, names, line=None):
    """``while cond(*state): state = body(*state)``, as a region when the condition is a
    traced tensor (possibly after some plain iterations); returns the final state."""
    state = tuple(state)
    while True:
        c = cond(*state)
        if is_traced(c):
            return dispatch.trace_hook().while_region(cond, body, state, names, c, line)
        if not _py(c):
            return state
        state = tuple(body(*state))


def if_stmt(c, then, orelse, state, names, line=None):
    """``then(*state)`` if ``c`` else ``orelse(*state)``; a region on a traced ``c``."""
    if is_traced(c):
        return dispatch.trace_hook().cond_region(c, then, orelse, tuple(state), names, line)
    return tuple(then(*state) if _py(c) else orelse(*state))


def if_exp(c, then, orelse, line=None):
    """``then() if c else orelse()``; a region on a traced ``c``."""
    if is_traced(c):
        (out,) = dispatch.trace_hook().cond_region(
            c, lambda: (then(),), lambda: (orelse(),), (), (), line)
        return out
    return then() if _py(c) else orelse()


def and_(a, b):
    """``a() and b()``; on tensors an elementwise logical and (both sides evaluated)."""
    left = a()
    if is_traced(left):
        right = b()
        return left.logical_and(right) if hasattr(right, "_data") else (
            left if right else left.logical_and(False))
    if not _py(left):
        return left
    right = b()
    return right


def or_(a, b):
    """``a() or b()``; on tensors an elementwise logical or (both sides evaluated)."""
    left = a()
    if is_traced(left):
        right = b()
        return left.logical_or(right) if hasattr(right, "_data") else (
            left.logical_or(True) if right else left)
    if _py(left):
        return left
    return b()


def not_(a):
    """``not a``; on a traced tensor an elementwise logical not."""
    if is_traced(a):
        return a.logical_not() if a.dtype.np.kind == "b" else a == 0
    return not _py(a)
