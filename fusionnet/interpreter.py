"""The reference interpreter: run a :class:`~fusionnet.graph.Graph` node by node.

Every op node goes through :func:`fusionnet.dispatch.apply`, i.e. the op
table's eager implementation, so the interpreter can never disagree with eager
execution; autograd works through it too. It is the oracle that passes and
code generators are checked against.
"""
from __future__ import annotations

from . import autograd
from .dispatch import apply
from .graph import Graph, GraphBreak
from .regions import region_of
from .structure import unflatten
from .tensor import Tensor

__all__ = ["run", "GuardError", "check_inputs"]


class GuardError(ValueError):
    """An input does not match what the graph was traced for (count, shape, dtype, device)."""


def check_inputs(graph: Graph, inputs) -> None:
    """Raise :class:`GuardError` unless ``inputs`` match the graph's input placeholders."""
    expected = graph.inputs
    if len(inputs) != len(expected):
        raise GuardError(f"{graph.name}: expected {len(expected)} input(s), got {len(inputs)}")
    for pos, (nid, x) in enumerate(zip(expected, inputs)):
        d = graph.node(nid)
        if not isinstance(x, Tensor):
            raise GuardError(f"{graph.name}: input {pos} must be a Tensor, got "
                             f"{type(x).__name__}")
        if tuple(x.shape) != d["shape"]:
            raise GuardError(f"{graph.name}: input {pos} has shape {tuple(x.shape)}, "
                             f"expected {d['shape']}")
        if str(x._data.dtype) != d["dtype"]:
            raise GuardError(f"{graph.name}: input {pos} has dtype {x._data.dtype}, "
                             f"expected {d['dtype']}")
        if "device" in d and str(x.device) != d["device"]:
            raise GuardError(f"{graph.name}: input {pos} is on {x.device}, expected "
                             f"{d['device']}")


def node_value(graph: Graph, nid: int, env: dict):
    """The value of one non-op node (input, parameter, buffer, constant), op or region."""
    d = graph.node(nid)
    kind = d["kind"]
    if kind in ("param", "buffer") or (kind == "constant" and "ref" in d):
        t = d["ref"]
        return t.detach() if d.get("detach") else t
    if kind == "constant":
        return Tensor._wrap(d["value"])
    args = [env[a] for a in d["args"]]
    if kind == "item":  # one result of a multi-result region
        return args[0][d["target"]]
    if kind == "op":
        if d.get("no_grad") and autograd.is_grad_enabled():
            with autograd.no_grad():  # computed under no_grad() in forward: eager records nothing
                return apply(d["op"], *args, **dict(d["attrs"]))
        return apply(d["op"], *args, **dict(d["attrs"]))
    region = region_of(d)
    if region is not None:  # a fused kernel, a loop...: its declaration says how it runs
        return region.run(d, args, run)
    raise ValueError(f"node {nid} of kind {kind!r} has no value of its own")


def run(graph: Graph, *inputs):
    """Execute ``graph`` on ``inputs`` and return its output (rebuilt as forward returned it).

    An error while running a node keeps its type and gains a note naming the node, its
    op and the user's source line that created it."""
    if not graph.complete:
        first = graph.breaks[0]
        raise GraphBreak(f"graph {graph.name!r} is incomplete ({first.reason})", first.source)
    check_inputs(graph, inputs)
    env: dict[int, Tensor] = {}
    positions = {nid: pos for pos, nid in enumerate(graph.inputs)}
    for nid in graph.order():
        d = graph.node(nid)
        if d["kind"] == "input":
            env[nid] = inputs[positions[nid]]
        elif d["kind"] == "output":
            return unflatten(d.get("spec", "T"), [env[a] for a in d["args"]])
        else:
            try:
                env[nid] = node_value(graph, nid, env)
            except Exception as err:
                _note_node(err, graph, nid, d)
                raise
    raise ValueError(f"graph {graph.name!r} has no output node")


def _note_node(err: Exception, graph: Graph, nid: int, d) -> None:
    if getattr(err, "_fusionnet_noted", False):
        return  # an inner node (inside a region body) already said where
    what = d.get("op") or d["kind"]
    where = f" created at {d['source']}" if d.get("source") else ""
    err.add_note(f"while running node {nid} ({what}) of graph {graph.name!r}{where}")
    try:
        err._fusionnet_noted = True
    except AttributeError:  # some built-in exceptions take no new attributes
        pass
