"""Reverse-mode autograd over the ops recorded by :func:`fusionnet.dispatch.apply`.

Each result of a differentiable op holds a :class:`Node` (its ``grad_fn``):
the op's table row, its input tensors, its attributes and the versions of
the tensors its gradient rule will read. :func:`backward` walks the nodes in
reverse topological order and calls each row's gradient rule, which is
written with table ops, so no op semantics live here.
"""
from __future__ import annotations

import functools
import threading

__all__ = ["Node", "backward", "no_grad", "enable_grad", "set_grad_enabled",
           "is_grad_enabled"]

class _GradState(threading.local):
    """Per-thread grad mode; the class attribute is every new thread's default."""

    enabled = True


#: Read directly (``_state.enabled``) on hot paths; use :func:`is_grad_enabled` elsewhere.
_state = _GradState()


def is_grad_enabled() -> bool:
    """Whether ops are being recorded for backward in this thread."""
    return _state.enabled


class _GradMode:
    """Sets grad mode to ``mode`` inside a ``with`` block or a decorated function."""

    mode = True

    def __enter__(self):
        self.prev = is_grad_enabled()
        _state.enabled = self.mode
        return self

    def __exit__(self, *exc):
        _state.enabled = self.prev
        return False

    def __call__(self, fn):
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode) if type(self) is set_grad_enabled else type(self)():
                return fn(*args, **kwargs)
        return wrapper


class set_grad_enabled(_GradMode):
    """Turn recording on or off: at once when called (as in PyTorch), and back to the
    previous mode at the end of a ``with`` block; also usable as a decorator."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self.prev = is_grad_enabled()
        _state.enabled = self.mode

    def __enter__(self):
        return self

    def __call__(self, fn):
        _state.enabled = self.prev  # as a decorator it acts only when the function runs
        return super().__call__(fn)


class no_grad(_GradMode):
    """Context manager and decorator: no op inside records anything for backward."""

    mode = False


class enable_grad(_GradMode):
    """Context manager and decorator: turn recording back on inside ``no_grad``."""

    mode = True


class Node:
    """How a tensor was computed: one recorded op application (PyTorch's ``grad_fn``)."""

    __slots__ = ("op", "inputs", "attrs", "out", "saved", "needs")

    def __init__(self, op, inputs, attrs, out, saved, needs):
        self.op = op
        self.inputs = inputs
        self.attrs = attrs
        self.out = out        # alias of the result when the gradient reads it, else None
        self.saved = saved    # ((tensor, version, label), ...) checked before backward
        self.needs = needs    # which inputs need a gradient

    def name(self) -> str:
        """PyTorch-style name, e.g. ``AddBackward0``."""
        return self.op.backward_name

    @property
    def next_functions(self):
        """The nodes of the inputs (None for leaves), as in PyTorch."""
        return tuple((t.grad_fn, 0) for t in self.inputs)

    def __repr__(self) -> str:
        return f"<{self.name()}>"


def _check_saved(node: Node):
    for tensor, version, label in node.saved:
        if tensor._version[0] != version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by "
                f"an inplace operation: {label} of {node.name()} is at version "
                f"{tensor._version[0]}; expected version {version} instead")


def _topological(root):
    """Tensors reachable from ``root`` through grad_fn links, inputs before users."""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        if t._ctx is not None:
            for inp in t._ctx.inputs:
                if inp.requires_grad and id(inp) not in seen:
                    stack.append((inp, False))
    return order


def _sum_to_shape(g, shape):
    """Sum a broadcast gradient back down to ``shape`` (with table ops)."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1)
    if axes:
        g = g.sum(dim=axes, keepdim=True)
    return g.reshape(shape)


def backward(root, gradient=None):
    """Accumulate d(root)/d(leaf) into every leaf's ``.grad``."""
    from .tensor import Tensor  # noqa: PLC0415 - tensor imports this module

    if not root.requires_grad:
        raise RuntimeError("element 0 of tensors does not require grad and does not have a "
                           "grad_fn")
    if gradient is None:
        if root.numel() != 1:
            raise RuntimeError(f"grad can be implicitly created only for scalar outputs; "
                               f"backward() on a tensor of shape {tuple(root.shape)} needs "
                               "a `gradient` argument of that shape")
        gradient = Tensor._wrap(root._xp.ones(root._data.shape, dtype=root._data.dtype))
    elif not isinstance(gradient, Tensor):
        gradient = Tensor(gradient, dtype=root.dtype, device=root.device)
    if tuple(gradient.shape) != tuple(root.shape):
        raise RuntimeError(f"backward: gradient has shape {tuple(gradient.shape)} but the "
                           f"tensor has shape {tuple(root.shape)}")
    grads = {id(root): gradient}
    with no_grad():
        for t in reversed(_topological(root)):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            node = t._ctx
            if node is None:
                if t.requires_grad:
                    # A fresh, writable array: gradients may be broadcast views or
                    # shared between inputs (add passes one g to both).
                    t.grad = (Tensor._wrap(g._data.copy()) if t.grad is None
                              else t.grad + g)
                continue
            _check_saved(node)
            extra = {"out": node.out} if node.out is not None else {}
            in_grads = node.op.grad(g, *node.inputs, needs=node.needs, **extra, **node.attrs)
            for inp, gi, need in zip(node.inputs, in_grads, node.needs):
                if not need or gi is None:
                    continue
                gi = _sum_to_shape(gi, inp.shape)
                if gi.dtype != inp.dtype:
                    gi = gi.to(inp.dtype)
                prev = grads.get(id(inp))
                grads[id(inp)] = gi if prev is None else prev + gi
