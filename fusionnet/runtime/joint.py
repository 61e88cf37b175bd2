"""Backward as graph ops: differentiate a trace with the op table's gradient rules.

Every row's gradient rule is written with table ops, so running the rules on *traced*
tensors records the backward into the same graph as the forward: a joint
forward+backward graph that the passes optimise and the backend compiles like any
forward. :func:`backward_in_trace` is that step; it is what ``loss.backward()`` does
while a training step is traced (``runtime/step.py``) and what a fused module's
backward is built from (``runtime/joint_module.py``).

The walk is eager's engine (``autograd.backward``) over graph nodes instead of
autograd nodes: reverse topological order, each node's rule called with its recorded
inputs (and output, where the row saves it), gradients summed back to the input's
shape and cast to its dtype, summed over uses. Where eager stops, the graph stops: a
node computed under ``no_grad`` or a ``detach`` carries no gradient (the tracer's
``grad`` flags say which nodes eager would have made require grad).
"""
from __future__ import annotations

import numpy as np

from .. import autograd
from ..ops import get_op
from ..regions import region_of
from ..tensor import Tensor

__all__ = ["NotDifferentiable", "backward_in_trace", "walk", "leaf_of", "mark_phase",
           "value_of"]


class NotDifferentiable(Exception):
    """The traced graph holds something this builder cannot differentiate (the reason)."""


def value_of(tracer, nid: int) -> Tensor:
    """A tensor standing for node ``nid`` of the scope being traced (bound to it)."""
    return _value(tracer, nid)


def _value(tracer, nid: int) -> Tensor:
    """A tensor standing for node ``nid`` in the trace (its value, bound to the node)."""
    t = Tensor._wrap(tracer.values[nid])
    tracer.bind(t, nid, by_array=False)
    return t


def _reaching(graph, root: int, grad: dict) -> set:
    """Nodes that need a gradient on some path into ``root``."""
    seen, todo = set(), [root]
    while todo:
        n = todo.pop()
        if n in seen or not grad.get(n, False):
            continue
        seen.add(n)
        todo.extend(graph.node(n)["args"])
    return seen


def backward_in_trace(tracer, root: Tensor, gradient: Tensor | None = None) -> dict:
    """Record the backward of traced ``root`` into ``tracer``'s graph.

    Returns ``{node id: gradient tensor}`` for every leaf node (input, parameter) that
    eager would accumulate a gradient into. Raises :class:`NotDifferentiable` for what
    the builder does not handle (a loop or branch region on the path), and eager's
    errors for what eager refuses (a root that needs no gradient, a non-scalar root
    without ``gradient``)."""
    if tracer.scope.parent is not None:
        raise NotDifferentiable("backward() inside a loop or branch body")
    graph = tracer.graph
    rid = tracer.node_for(root)
    if not tracer.grad.get(rid, False):
        raise RuntimeError("element 0 of tensors does not require grad and does not have a "
                           "grad_fn")
    first = graph._next_id
    if gradient is None:
        if int(np.prod(root.shape)) != 1:
            raise RuntimeError(f"grad can be implicitly created only for scalar outputs; "
                               f"backward() on a tensor of shape {tuple(root.shape)} needs "
                               "a `gradient` argument of that shape")
        # Ones computed from the root rather than a literal: constant folding would
        # broadcast a literal to batch-sized constants (the code would then be tied to
        # one batch size). ``x == x or x != x`` is true even for NaN, as eager's seed is.
        gradient = (root == root).logical_or(root != root).to(root.dtype)
    with autograd.no_grad():  # as eager's engine: the backward itself is not recorded
        leaves = walk(tracer, {rid: gradient})
    mark_phase(graph, first, "backward")
    return leaves


def walk(tracer, seeds: dict, stop=()) -> dict:
    """Back-propagate ``seeds`` (``{node: gradient}``) through the graph of the scope being
    traced; returns ``{leaf node: gradient}`` for the non-op nodes reached (inputs,
    parameters; in a loop body also its state and captures). ``while`` regions on the
    way are differentiated by ``joint_loops.backward_while``; nodes in ``stop`` are
    treated as leaves."""
    graph = tracer.graph
    reach = set()
    for r in seeds:
        reach |= _reaching(graph, r, tracer.grad)
    for n in reach:
        d = graph.node(n)
        if region_of(d) is not None and d["kind"] != "while":
            raise NotDifferentiable(f"the gradient flows through a {d['kind']} region "
                                    "(branches are differentiated by replaying them "
                                    "eagerly)")
    grads = dict(seeds)
    items: dict = {}   # region -> {item position: gradient}
    leaves = {}
    # A graph being traced only grows, and every node reads earlier ones: creation order
    # is a topological order (and asking networkx here would put its code among what the
    # trace read from Python).
    for n in sorted(graph.nx.nodes, reverse=True):
        g = grads.pop(n, None)
        d = graph.node(n)
        if d["kind"] == "while" and n in items:
            from .joint_loops import backward_while  # noqa: PLC0415

            backward_while(tracer, n, d, items.pop(n), grads)
            continue
        if g is None or n not in reach:
            continue
        if n in stop:
            leaves[n] = g
        elif d["kind"] == "item":
            region = d["args"][0]
            items.setdefault(region, {})[d["target"]] = g
        elif d["kind"] != "op":
            leaves[n] = g
        else:
            _backward_node(tracer, graph, n, d, g, grads)
    return leaves


def mark_phase(graph, first: int, phase: str) -> None:
    """Tag the op nodes created since id ``first`` with ``phase`` (for ``explain``)."""
    for n in range(first, graph._next_id):
        if n in graph.nx and graph.node(n)["kind"] == "op":
            graph.node(n)["phase"] = phase


def _backward_node(tracer, graph, n: int, d, g: Tensor, grads: dict) -> None:
    op = get_op(d["op"])
    args = d["args"]
    needs = tuple(bool(tracer.grad.get(a, False)) for a in args)
    inputs = [_value(tracer, a) for a in args]
    extra = {"out": _value(tracer, n)} if op.saves(needs)[1] else {}
    in_grads = op.grad(g, *inputs, needs=needs, **extra, **dict(d["attrs"]))
    for a, inp, need, gi in zip(args, inputs, needs, in_grads):
        if not need or gi is None:
            continue
        gi = autograd._sum_to_shape(gi, inp.shape)
        if gi.dtype != inp.dtype:
            gi = gi.to(inp.dtype)
        prev = grads.get(a)
        grads[a] = gi if prev is None else prev + gi


def leaf_of(tracer, t: Tensor) -> int | None:
    """The node of leaf tensor ``t`` (a parameter or an input) in the trace, if traced."""
    hit = tracer.live.get(id(t._data))
    if hit is not None and hit[2] is t:
        return tracer.live_nodes.get((hit[0], hit[1], False))
    return tracer.node_of.get(id(t))
