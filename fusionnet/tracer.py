"""``trace(module, *example_inputs) -> Graph``: capture a block's forward as data.

Tracing runs the real ``forward`` on the example inputs with a hook installed
in :mod:`fusionnet.dispatch`, so every op-table call is both computed (the
Python code keeps running on real values) and recorded as a graph node.
Ordinary Python — loops over ``self._modules``, submodules, a layer used
twice, helper functions, ``if`` on shapes — simply unrolls.

What the tracer refuses to do is *specialise*: when ``forward`` turns a traced
value into a Python value (``bool()``, ``float()``, ``item()``, ``if t:``,
``while t.sum() > 1:``) or draws random numbers, tracing stops with a
:class:`~fusionnet.graph.GraphBreak` carrying the reason and the source line.
In-place ops (``X /= 2``, ``x[:] = v``) are recorded as pure ops and the
Python variable is rebound to the new node (functionalisation).
"""
from __future__ import annotations

import linecache
import os
import sys

import numpy as np

from . import autograd, dispatch
from .graph import Graph, GraphBreak
from .ops import DataDependentShape
from .tensor import Tensor

__all__ = ["trace", "TraceError", "materialise_lazy"]

_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_NN_DIR = os.path.join(_PKG_DIR, "nn") + os.sep
_USER_FILES = {os.path.join(_PKG_DIR, "zoo.py")}  # example blocks count as user code


class TraceError(RuntimeError):
    """``forward`` did something the tracer cannot represent (e.g. returned a non-tensor)."""


def _freeze(value):
    """Attribute values as hashable plain data (lists become tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


class _Tracer:
    """The dispatch hook that records ops while ``forward`` runs."""

    def __init__(self, module, graph: Graph, on_break: str):
        self.graph = graph
        self.on_break = on_break
        self.node_of: dict[int, int] = {}   # id(tensor) or id(array) -> node id
        self.keep: list = []                # keeps traced tensors alive so ids stay unique
        self.static: set[int] = set()       # nodes whose value can never change
        self.live: dict[int, tuple] = {}    # id(array) -> (kind, name, tensor) of module state
        self.live_nodes: dict[tuple, int] = {}
        self.inputs: set[int] = set()       # ids of the input tensors forward received
        self.module_names = {id(m): name for name, m in module.named_modules()}
        for name, p in module.named_parameters():
            self.live[id(p._data)] = ("param", name, p)
        for name, b in module.named_buffers():
            self.live[id(b._data)] = ("buffer", name, b)
        for mname, m in module.named_modules():
            for attr, v in vars(m).items():
                if isinstance(v, Tensor) and id(v._data) not in self.live:
                    self.live[id(v._data)] = ("constant", f"{mname}.{attr}".lstrip("."), v)

    # ---- where are we? -------------------------------------------------------------------

    def where(self) -> tuple[str, str]:
        """(source line, module path) of the user code that is running now."""
        frame = sys._getframe(1)
        source = module = None
        while frame is not None and (source is None or module is None):
            code = frame.f_code
            fname = code.co_filename
            is_forward = code.co_name == "forward"
            internal = fname.startswith(_PKG_DIR) and fname not in _USER_FILES
            if source is None and (not internal or (is_forward and fname.startswith(_NN_DIR))):
                line = linecache.getline(fname, frame.f_lineno).strip()
                source = f"{fname}:{frame.f_lineno}: {line}"
            if module is None and is_forward:
                me = frame.f_locals.get("self")
                if me is not None and id(me) in self.module_names:
                    module = self.module_names[id(me)]
            frame = frame.f_back
        return source or "<unknown>", module or ""

    # ---- nodes for tensors ---------------------------------------------------------------

    def bind(self, t: Tensor, nid: int, by_array: bool = True):
        self.keep.append((t, t._data))  # arrays too: a freed array's id could be reused
        self.node_of[id(t)] = nid
        if by_array:  # `.data` aliases of a traced intermediate map here too
            self.node_of[id(t._data)] = nid

    def node_for(self, t: Tensor) -> int:
        nid = self.node_of.get(id(t))
        if nid is not None:
            return nid
        hit = self.live.get(id(t._data))
        nid = None if hit is not None else self.node_of.get(id(t._data))
        if nid is not None:
            return nid
        source, module = self.where()
        if hit is not None:  # module state: reference the live tensor, never copy it
            kind, name, live = hit
            detach = kind == "param" and t is not live  # `param.data` carries no gradient
            key = (kind, name, detach)
            nid = self.live_nodes.get(key)
            if nid is None:
                nid = self.graph.add_node(kind, shape=t.shape, dtype=t._data.dtype,
                                          target=name, ref=live, detach=detach,
                                          source=source, module=module)
                self.live_nodes[key] = nid
                if kind == "constant":
                    self.static.add(nid)
            # Module state is bound by tensor only: `p` and `p.data` share an array
            # but are different nodes (the second carries no gradient).
            self.bind(t, nid, by_array=False)
            return nid
        else:  # a tensor made inside forward (or a Python scalar): a literal constant
            value = np.array(t._host(), copy=True)
            nid = self.graph.add_node("constant", shape=t.shape, dtype=value.dtype,
                                      target=f"c{self.graph._next_id}", value=value,
                                      source=source, module=module)
            self.static.add(nid)
        self.bind(t, nid)
        return nid

    # ---- dispatch hook protocol ----------------------------------------------------------

    def __call__(self, op, tensors, attrs):
        args = [self.node_for(t) for t in tensors]
        dynamic = not all(a in self.static for a in args)
        try:
            op.shape(*[t.shape for t in tensors], **attrs)
        except DataDependentShape as err:
            if dynamic:
                self.stop(f"{op.name}: {err}")
        out = dispatch.run_eager(op, tensors, attrs)
        source, module = self.where()
        nid = self.graph.add_node("op", op=op.name, attrs=_freeze(sorted(attrs.items())),
                                  args=args, shape=out.shape, dtype=out._data.dtype,
                                  source=source, module=module)
        if not dynamic:
            self.static.add(nid)
        self.bind(out, nid)
        return out

    def on_inplace(self, target: Tensor, result: Tensor):
        """``target op= ...``: rebind ``target`` to the pure op's result (functionalised)."""
        if id(target._data) in self.live:
            # Writing module state from forward is a side effect a graph cannot replay.
            self.stop("in-place update of a module parameter/buffer/constant inside forward")
        if id(target) in self.inputs:
            # Eager writes into the caller's tensor; a pure graph does not. Noted so that
            # the runtime can refuse to compile it (the graph itself stays valid).
            self.graph.input_mutations.append(self.where()[0])
        target._data = result._data
        self.bind(target, self.node_of[id(result)])

    def on_python_value(self, t: Tensor, why: str):
        nid = self.node_of.get(id(t), self.node_of.get(id(t._data)))
        if nid is None or nid in self.static:
            return  # not computed from inputs or state: its value is fixed
        self.stop(f"{why} needs the value of a traced tensor (data-dependent control flow)")

    def on_shape_read(self, t: Tensor):
        """Note sizes read by user code (not by fusionnet itself) from traced tensors."""
        if id(t) not in self.node_of and id(t._data) not in self.node_of:
            return
        # Frames: this method <- dispatch.note_shape_read <- Tensor.shape <- the reader.
        reader = sys._getframe(3).f_code.co_filename
        if reader.startswith(_PKG_DIR) and reader not in _USER_FILES:
            return  # fusionnet's own reads; sizes it bakes in show up in the graph
        source, _ = self.where()
        self.graph.shape_reads.append(source)

    def on_random(self, what: str):
        self.stop(f"{what} inside forward (a traced graph would freeze the values)")

    def stop(self, reason: str):
        source, _ = self.where()
        brk = GraphBreak(reason, source, self.graph)
        if self.on_break == "raise":
            raise brk
        if not any(b.reason == reason and b.source == source for b in self.graph.breaks):
            self.graph.breaks.append(brk)


def materialise_lazy(module, inputs):
    """Run lazy modules once eagerly so their parameters exist before tracing."""
    if any(type(m).__name__.startswith("Lazy") and getattr(m, "has_uninitialized_params",
                                                           lambda: True)()
           for m in module.modules()):
        with autograd.no_grad():
            module(*inputs)


def trace(module, *example_inputs, on_break: str = "raise", name: str | None = None) -> Graph:
    """Trace ``module(*example_inputs)`` into a :class:`Graph`.

    ``on_break="raise"`` (default) raises :class:`GraphBreak` at the first
    data-dependent Python value; ``"record"`` notes each break, carries on with
    the concrete value and returns an *incomplete* graph (``graph.complete`` is
    False and ``graph.run`` refuses it) so that ``explain`` can list every break.
    """
    if on_break not in ("raise", "record"):
        raise ValueError("on_break must be 'raise' or 'record'")
    for pos, x in enumerate(example_inputs):
        if not isinstance(x, Tensor):
            raise TraceError(f"trace: example input {pos} must be a Tensor, got "
                             f"{type(x).__name__}")
    materialise_lazy(module, example_inputs)
    graph = Graph(name or type(module).__name__)
    tracer = _Tracer(module, graph, on_break)
    inputs = []
    for pos, x in enumerate(example_inputs):
        nid = graph.add_node("input", shape=x.shape, dtype=x._data.dtype, target=pos,
                             device=str(x.device))
        # A fresh alias per input: forward may rebind it in place without touching the caller's.
        alias = Tensor._wrap(x._data)
        tracer.bind(alias, nid)
        tracer.inputs.add(id(alias))
        inputs.append(alias)
    prev = dispatch.set_trace_hook(tracer)
    try:
        with autograd.no_grad():
            result = module(*inputs)
    finally:
        dispatch.set_trace_hook(prev)
    _add_output(graph, tracer, result)
    return graph


def _add_output(graph: Graph, tracer: _Tracer, result):
    if isinstance(result, Tensor):
        structure, values = "tensor", [result]
    elif isinstance(result, (tuple, list)) and all(isinstance(r, Tensor) for r in result):
        structure, values = type(result).__name__, list(result)
    else:
        raise TraceError(f"trace: forward of {graph.name} returned {type(result).__name__}; "
                         "only a Tensor or a tuple/list of Tensors can be traced")
    args = [tracer.node_for(v) for v in values]
    graph.add_node("output", args=args, shape=values[0].shape, dtype=values[0]._data.dtype,
                   structure=structure)
