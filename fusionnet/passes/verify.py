"""Structural checks run between passes in debug mode (and by the pass tests)."""
from __future__ import annotations

import networkx as nx

from ..graph import Graph
from ..ops import DataDependentShape, get_op
from ..regions import bodies_of, region_of

__all__ = ["verify", "GraphInvalid"]


class GraphInvalid(AssertionError):
    """A pass produced a malformed graph; the message names the pass and the node."""


def verify(graph: Graph, after: str = "?") -> None:
    """Check acyclicity, args/edge agreement, one output, and re-inferred shapes/dtypes."""
    def fail(msg):
        raise GraphInvalid(f"after pass {after!r} in graph {graph.name!r}: {msg}")

    if not nx.is_directed_acyclic_graph(graph.nx):
        fail("the graph has a cycle")
    outputs = [n for n in graph.nx if graph.node(n)["kind"] == "output"]
    if len(outputs) != 1:
        fail(f"expected one output node, found {len(outputs)}")
    for n in graph.nx:
        d = graph.node(n)
        args = d["args"]
        slots = {}
        for pos, a in enumerate(args):
            if a not in graph.nx:
                fail(f"node {n} reads missing node {a}")
            slots.setdefault(a, []).append(pos)
        edges = {a: tuple(graph.nx.edges[a, n]["slots"]) for a in graph.nx.predecessors(n)}
        if edges != {a: tuple(p) for a, p in slots.items()}:
            fail(f"node {n}: args {args} disagree with incoming edges {edges}")
        if d["kind"] == "op":
            _check_shape(graph, n, d, fail)
        elif region_of(d) is not None:
            for field, body in bodies_of(d):
                verify(body, after=f"{after} ({field} of {d['kind']} {n})")
            if d["kind"] == "group" and tuple(d["body"].node(d["body"].output)["shape"]) != \
                    tuple(d["shape"]):
                fail(f"group {n}: body output shape differs from the node's shape")
            if d["kind"] == "group" and "outs" in d:
                body = d["body"]
                got = tuple((tuple(body.node(a)["shape"]), body.node(a)["dtype"])
                            for a in body.node(body.output)["args"])
                if got != tuple((tuple(s), t) for s, t in d["outs"]):
                    fail(f"group {n}: body results {got} differ from its outs {d['outs']}")
        elif d["kind"] == "item":
            region = graph.node(args[0]) if len(args) == 1 else {}
            outs = region.get("outs", ())
            if not 0 <= d.get("target", -1) < len(outs):
                fail(f"item {n} reads result {d.get('target')} of node {args}, which has "
                     f"{len(outs)}")
            elif tuple(outs[d["target"]][0]) != tuple(d["shape"]):
                fail(f"item {n}: shape {d['shape']} differs from its region's result "
                     f"{outs[d['target']][0]}")
        elif args and d["kind"] != "output":
            fail(f"{d['kind']} node {n} must not have arguments")


def _check_shape(graph, n, d, fail):
    op = get_op(d["op"])
    in_shapes = [graph.node(a)["shape"] for a in d["args"]]
    try:
        shape = tuple(op.shape(*in_shapes, **dict(d["attrs"])))
    except DataDependentShape:
        return
    except Exception as err:  # noqa: BLE001 - reported as a verification failure
        fail(f"node {n} ({d['op']}): shape rule failed: {err}")
    if shape != tuple(d["shape"]):
        fail(f"node {n} ({d['op']}): recorded shape {d['shape']} but the rule gives {shape}")
