"""Reverse-mode autograd over the ops recorded by :func:`fusionnet.dispatch.apply`.

Each result of a differentiable op holds a :class:`Node` (its ``grad_fn``): the op's
table row, its inputs, its attributes, the versions of the tensors its gradient rule
will read, and its *edges*: the node (or leaf) that produced each input, fixed when
the op ran. An in-place op later gives a tensor a new node, but every history recorded
before stays as it was, as in PyTorch.

Views (results of rows marked ``view`` that NumPy really returned as views) know their
base and the chain of ops that derives them from it; they share the base's version
counter. An in-place op through a view rewrites the base's history with the row's
``write_back`` op (PyTorch's ``CopySlices``), and every view of that base takes a
history derived from the base's new one when it is next used (its recorded version
no longer matches the shared counter). :func:`backward` walks the nodes in reverse
topological order and calls each row's gradient rule, which is written with table
ops, so no op semantics live here.
"""
from __future__ import annotations

import functools
import threading
import weakref

import numpy as np

__all__ = ["Node", "AccumulateGrad", "backward", "no_grad", "enable_grad",
           "set_grad_enabled", "is_grad_enabled", "history", "note_view", "check_inplace",
           "alias", "prepare_inplace", "commit_inplace", "register_post_accumulate_grad_hook"]

class _State(threading.local):
    enabled = True  # each thread starts with grad mode on (a class default: no getattr)
    # While a training step is traced (``fusionnet.runtime.step``), ``backward`` is recorded
    # into the trace by this hook instead of running: ``hook(root, gradient, retain_graph)``.
    backward_hook = None


_state = _State()


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


# ---- the graph ------------------------------------------------------------------------


class Node:
    """How a tensor was computed: one recorded op application (PyTorch's ``grad_fn``).

    ``edges[i]`` is where the gradient of input i goes: the Node that produced it, the
    leaf tensor itself (accumulated into its ``.grad``), or None when it needs none.
    Edges are taken when the op runs, so later in-place ops cannot change them.
    """

    __slots__ = ("op", "inputs", "attrs", "out", "saved", "needs", "edges")

    def __init__(self, op, inputs, attrs, out, saved, needs):
        self.op = op
        self.inputs = inputs  # read by the gradient rule (values only where saved)
        self.attrs = attrs
        self.out = out        # alias of the result when the gradient reads it, else None
        self.saved = saved    # ((tensor, version, label), ...) checked before backward
        self.needs = needs    # which inputs need a gradient
        self.edges = tuple([_edge(t) if need else None for t, need in zip(inputs, needs)])

    def name(self) -> str:
        """PyTorch-style name, e.g. ``AddBackward0``."""
        return self.op.backward_name

    @property
    def next_functions(self):
        """``((node or AccumulateGrad or None, 0), ...)`` per input, as in PyTorch."""
        return tuple((e if e is None or isinstance(e, Node) else AccumulateGrad(e), 0)
                     for e in self.edges)

    def __repr__(self) -> str:
        return f"<{self.name()}>"


class AccumulateGrad:
    """The end of an edge into a leaf: its gradient is added to ``variable.grad``."""

    __slots__ = ("variable",)

    def __init__(self, variable):
        self.variable = variable

    def name(self) -> str:
        """``AccumulateGrad``, as PyTorch names it."""
        return "AccumulateGrad"

    next_functions = ()

    def __repr__(self) -> str:
        return "<AccumulateGrad>"


def _edge(t):
    """Where a gradient for ``t`` goes now: its current node, or ``t`` itself (a leaf);
    None for a view made under no_grad (PyTorch lets no gradient through it)."""
    view = t._view
    if view is not None and view.version != t._version[0]:
        _refresh_view(t)
    ctx = t._ctx
    if ctx is not None:
        return ctx
    return None if view is not None and not view.grad_mode else t


def history(t):
    """``t``'s current ``grad_fn`` (a view whose base was modified in place gets a new one)."""
    view = t._view
    if view is not None and view.version != t._version[0]:
        _refresh_view(t)
    return t._ctx


# ---- views ----------------------------------------------------------------------------


class _View:
    """What makes a tensor a view: its base and the ops that derive it from the base."""

    __slots__ = ("base", "chain", "version", "grad_mode")

    def __init__(self, base, chain, version, grad_mode):
        self.base = base            # the root base (never itself a view), as PyTorch's _base
        self.chain = chain          # ((op name, attrs), ...) from the base to this view
        self.version = version      # the shared version for which the view's _ctx is current
        self.grad_mode = grad_mode  # made with grad enabled (else PyTorch's "no_grad view")


def note_view(op, tensors, out, attrs) -> None:
    """Called by dispatch after a ``view`` row ran: make ``out`` a view of its input when
    the arrays share memory (NumPy copies in some cases, e.g. reshape of a transpose)."""
    src = tensors[0]
    if len(tensors) != 1 or not (np.may_share_memory if type(src._data) is np.ndarray
                                 else src._xp.may_share_memory)(out._data, src._data):
        return
    out._version = src._version  # one counter for a base and all its views
    grad = is_grad_enabled()
    parent = src._view
    if parent is None:
        base, chain = src, ((op.name, attrs),)
    else:
        base, chain = parent.base, parent.chain + ((op.name, attrs),)
        grad = grad and parent.grad_mode
    out._view = _View(base, chain, src._version[0], grad)
    if not grad:
        out.requires_grad = base.requires_grad  # as PyTorch: yet no gradient flows through
    elif not base.requires_grad:
        _remember(base, out)


def _remember(base, view) -> None:
    """Keep a weak reference to ``view`` on ``base``: if ``base`` starts requiring grad
    through an in-place op, its views must too (they are found here)."""
    views = getattr(base, "_views", None)
    if views is None:
        views = base._views = []
    views.append(weakref.ref(view))
    if len(views) >= 32 and not len(views) & (len(views) - 1):  # at powers of two
        views[:] = [r for r in views if r() is not None]


def _live_view(t):
    """``t``'s view info if ``t`` still aliases its base's storage (``.data =`` may have
    replaced either), else None (and ``t`` stops being a view)."""
    view = t._view
    if view is None:
        return None
    if t._data is view.base._data or t._xp.may_share_memory(t._data, view.base._data):
        return view
    t._view = None
    return None


def _replay(base, chain):
    """Apply the view chain to ``base`` again, recording each op (views of its current
    history); returns the tensors after each step."""
    dispatch = _dispatch
    get_op = _ops.get_op

    out, t = [], base
    with enable_grad():
        for name, attrs in chain:
            op = get_op(name)
            t = dispatch.record(op, (t,), attrs, dispatch.run_eager(op, (t,), attrs))
            out.append(t)
    return out


def _refresh_view(t) -> None:
    """Give a view whose shared version moved a history derived from its base's."""
    view = _live_view(t)
    if view is None:
        return
    if not view.base.requires_grad:  # no history to derive from (a later one bumps again)
        view.version = t._version[0]
        return
    if not view.grad_mode:
        raise RuntimeError(
            "A view was created in no_grad mode and its base or another view of its base "
            "has been modified inplace with grad mode enabled. Given that this use case is "
            "ambiguous and error-prone, it is forbidden. You can clarify your code by "
            "moving both the view and the inplace either both inside the no_grad block (if "
            "you don't want the inplace to be tracked) or both outside (if you want the "
            "inplace to be tracked).")
    view.version = t._version[0]
    t._ctx = _replay(view.base, view.chain)[-1]._ctx
    t.requires_grad = True


def _set_history(t, node) -> None:
    """``t`` (not a view) was modified in place by a recorded op: ``node`` is its history."""
    newly = not t.requires_grad
    t.requires_grad, t._ctx = True, node
    if newly:  # its views made while it needed no gradient need one now
        for ref in getattr(t, "_views", None) or ():
            v = ref()
            if v is not None and v._view is not None and v._view.base is t:
                v.requires_grad = True


# ---- in-place ops ---------------------------------------------------------------------

_OVERLAP = ("unsupported operation: more than one element of the written-to tensor refers "
            "to a single memory location. Please clone() the tensor before performing the "
            "operation.")


def check_inplace(t):
    """Raise where PyTorch refuses an in-place op on ``t``; return ``t``'s view info."""
    get_op = _ops.get_op

    view = _live_view(t)
    if view is not None and any(get_op(name).write_back is None for name, _ in view.chain):
        raise RuntimeError(f"{_OVERLAP} (the tensor is a view made by expand)")
    if not is_grad_enabled():
        return view
    if t.requires_grad and t._ctx is None and view is None:
        raise RuntimeError("a leaf Variable that requires grad is being used in an "
                           "in-place operation.")
    if view is not None and view.base.requires_grad:
        if not view.grad_mode:
            raise RuntimeError(_NO_GRAD_VIEW)
        if view.base._ctx is None:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used "
                               "in an in-place operation.")
    return view


_NO_GRAD_VIEW = ("A view was created in no_grad mode and is being modified inplace with grad "
                 "mode enabled. Given that this use case is ambiguous and error-prone, it is "
                 "forbidden. You can clarify your code by moving both the view and the "
                 "inplace either both inside the no_grad block (if you don't want the "
                 "inplace to be tracked) or both outside (if you want the inplace to be "
                 "tracked).")


def alias(t):
    """A new tensor object sharing ``t``'s storage, version counter and current history:
    the "old value" input of an in-place op."""
    Tensor = _tensor.Tensor

    old = Tensor._wrap(t._data, version=t._version)
    old._ctx = history(t) if is_grad_enabled() else t._ctx  # no_grad: nothing is recorded
    old.requires_grad = t.requires_grad
    return old


def prepare_inplace(node, old, view) -> None:
    """Before the storage is overwritten: refuse a tracked write through a no_grad view;
    if the gradient reads the old value (``clamp_``, ``mul_`` with a gradient for the
    other operand), keep a copy of it, as PyTorch saves the original ``self``."""
    if view is not None and not view.grad_mode:
        raise RuntimeError(_NO_GRAD_VIEW)
    if not any(saved is old for saved, _, _ in node.saved):
        return
    Tensor = _tensor.Tensor

    kept = Tensor._wrap(old._data.copy())
    node.inputs = tuple(kept if x is old else x for x in node.inputs)
    node.saved = tuple((kept, 0, label) if saved is old else (saved, version, label)
                       for saved, version, label in node.saved)


def commit_inplace(target, view, result) -> None:
    """After ``result`` was written into ``target``'s storage (and the version bumped):
    the node of ``result`` becomes the history of ``target`` — or, for a view, of its
    base, through the rows' ``write_back`` ops."""
    Tensor = _tensor.Tensor

    node = result._ctx
    if node.out is not None:  # the gradient reads the output: that is target's storage now
        before, out = node.out, Tensor._wrap(target._data, version=target._version)
        node.out = out
        node.saved = tuple((out, target._version[0], label) if saved is before
                           else (saved, version, label)
                           for saved, version, label in node.saved)
    if view is None:
        _set_history(target, node)
        return
    value = Tensor._wrap(target._data, version=target._version)
    value.requires_grad, value._ctx = True, node
    _set_history(view.base, _write_back(view.base, view.chain, value))
    # target's recorded version is now behind: it is rebuilt from the base when next used


def _write_back(base, chain, value):
    """Record ``base`` with the view ``chain`` replaced by ``value``; return its node.

    Nothing is computed: the storage already holds the new values. Each step records
    the row's ``write_back`` op, from the view up to the base, so the base's new
    history is made of ordinary table ops (setitem, reshape, permute).
    """
    dispatch = _dispatch
    get_op = _ops.get_op
    Tensor = _tensor.Tensor

    old = Tensor._wrap(base._data, version=base._version)
    old.requires_grad, old._ctx = base.requires_grad, base._ctx
    parents = [old] + _replay(old, chain[:-1])  # the old values of the views in between
    with enable_grad():
        for (name, attrs), parent in zip(reversed(chain), reversed(parents)):
            back_name, inputs, back_attrs = get_op(name).write_back(parent, value, **attrs)
            new = Tensor._wrap(parent._data, version=base._version)
            value = dispatch.record(get_op(back_name), inputs, back_attrs, new)
    return value._ctx


# ---- the engine -----------------------------------------------------------------------


#: What a node's ``saved`` becomes once a backward without ``retain_graph`` has used it.
FREED = ("freed",)


def _check_saved(node: Node):
    if node.saved is FREED:
        raise RuntimeError(
            "Trying to backward through the graph a second time (or directly access saved "
            "tensors after they have already been freed). Saved intermediate values of the "
            "graph are freed when you call .backward() or autograd.grad(). Specify "
            "retain_graph=True if you need to backward through the graph a second time or "
            f"if you need to access saved tensors after calling backward ({node.name()}).")
    for tensor, version, label in node.saved:
        if tensor._version[0] != version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by "
                f"an inplace operation: {label} of {node.name()} is at version "
                f"{tensor._version[0]}; expected version {version} instead")


def _topological(root: Node) -> list:
    """Nodes reachable from ``root`` through their edges, inputs before users."""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for e in node.edges:
            if isinstance(e, Node) and id(e) not in seen:
                stack.append((e, False))
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


#: id(leaf) -> hooks run after a gradient is accumulated into that leaf's ``.grad``.
#: Keyed by id (tensors compare elementwise, so they make poor dict keys); a finalizer
#: drops the entry when the leaf dies, so a reused id never inherits old hooks.
_POST_ACCUMULATE: dict[int, list] = {}


class _HookHandle:
    """Returned by :func:`register_post_accumulate_grad_hook`; ``remove()`` unregisters."""

    def __init__(self, key: int, hook) -> None:
        self._key, self._hook = key, hook

    def remove(self) -> None:
        """Unregister the hook (a second call does nothing)."""
        hooks = _POST_ACCUMULATE.get(self._key)
        if hooks and self._hook in hooks:
            hooks.remove(self._hook)
            if not hooks:
                del _POST_ACCUMULATE[self._key]


def register_post_accumulate_grad_hook(leaf, hook) -> _HookHandle:
    """Call ``hook(leaf)`` each time a backward has accumulated a gradient into
    ``leaf.grad`` (PyTorch's ``Tensor.register_post_accumulate_grad_hook``).

    Data-parallel training uses it to start a gradient all-reduce once every
    parameter of a bucket has its gradient."""
    if not leaf.requires_grad or leaf._ctx is not None:
        raise RuntimeError("post accumulate grad hooks can only be registered on leaf "
                           "tensors that require grad")
    key = id(leaf)
    if key not in _POST_ACCUMULATE:
        _POST_ACCUMULATE[key] = []
        weakref.finalize(leaf, _POST_ACCUMULATE.pop, key, None)
    _POST_ACCUMULATE[key].append(hook)
    return _HookHandle(key, hook)


def _accumulate(leaf, g, Tensor) -> None:  # noqa: N803 - the class, passed in
    accumulate_grad(leaf, g)


def accumulate_grad(leaf, g, fresh: bool = False) -> None:
    """Add ``g`` into ``leaf.grad`` as the engine does, then run the leaf's
    post-accumulate hooks (DistributedDataParallel's all-reduce). ``fresh``: ``g`` owns a
    new array nobody else holds (a compiled backward's output), so it is taken as is."""
    if not leaf.requires_grad:
        return
    # Otherwise a fresh, writable array: gradients may be broadcast views or shared
    # between inputs (add passes one g to both).
    if leaf.grad is None:
        leaf.grad = g if fresh else type(g)._wrap(g._data.copy())
    else:
        leaf.grad = leaf.grad + g
    if _POST_ACCUMULATE:  # one dict test on the common path
        for hook in tuple(_POST_ACCUMULATE.get(id(leaf), ())):
            hook(leaf)


def backward(root, gradient=None, retain_graph: bool = False):
    """Accumulate d(root)/d(leaf) into every leaf's ``.grad``.

    Unless ``retain_graph``, the saved values of every node used are released, as in
    PyTorch: a second backward through a node that saved values raises."""
    Tensor = _tensor.Tensor

    if _state.backward_hook is not None:
        return _state.backward_hook(root, gradient, retain_graph)
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
    start = history(root)
    if start is None:
        with no_grad():
            _accumulate(root, gradient, Tensor)
        return
    grads = {id(start): gradient}
    leaves = {}  # id(leaf) -> [leaf, summed gradient]
    with no_grad():
        for node in reversed(_topological(start)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            _check_saved(node)
            extra = {"out": node.out} if node.out is not None else {}
            in_grads = node.op.grad(g, *node.inputs, needs=node.needs, **extra, **node.attrs)
            if not retain_graph and (node.saved or node.out is not None):
                node.saved = FREED
            for edge, inp, gi in zip(node.edges, node.inputs, in_grads):
                if edge is None or gi is None:
                    continue
                gi = _sum_to_shape(gi, inp.shape)
                if gi.dtype != inp.dtype:
                    gi = gi.to(inp.dtype)
                if isinstance(edge, Node):
                    prev = grads.get(id(edge))
                    grads[id(edge)] = gi if prev is None else prev + gi
                else:
                    entry = leaves.get(id(edge))
                    if entry is None:
                        leaves[id(edge)] = [edge, gi]
                    else:
                        entry[1] = entry[1] + gi
        for leaf, g in leaves.values():
            _accumulate(leaf, g, Tensor)


# These modules import this one, so these imports come last (a cycle); names are read
# from them at call time. Function-level imports instead would run the import machinery
# on every in-place op and backward call.
from . import dispatch as _dispatch  # noqa: E402
from . import ops as _ops  # noqa: E402
from . import tensor as _tensor  # noqa: E402
