"""Building fused groups: the one graph rewrite the fusion passes share.

A group is a node of kind ``group`` whose ``body`` is a small :class:`Graph`
(inputs = the group's arguments, in order; one output). It is the unit the
code generators receive. ``group_kind`` says what it is: ``gemm``,
``gemm_epilogue``, ``elementwise`` or ``reduction``.
"""
from __future__ import annotations

import networkx as nx

from ..graph import Graph
from ..ops import Kind, get_op

__all__ = ["make_group", "grow_upward", "op_kind", "is_op"]


def is_op(graph: Graph, nid: int) -> bool:
    """True for an (unfused) op node."""
    return graph.node(nid)["kind"] == "op"


def op_kind(graph: Graph, nid: int):
    """The fusion kind of an op node (None for other nodes)."""
    d = graph.node(nid)
    return get_op(d["op"]).kind if d["kind"] == "op" else None


def make_group(graph: Graph, members, root: int, group_kind: str) -> int:
    """Replace ``members`` (op nodes; ``root`` the only one read from outside) by one
    group node in ``graph`` (modified in place: call on a pass's own copy)."""
    members = set(members)
    # A topological order of the members alone: sorting the whole graph per group would
    # make fusion quadratic in the graph size.
    order = list(nx.lexicographical_topological_sort(graph.nx.subgraph(members),
                                                     key=lambda n: n))
    for n in order:
        outside = [u for u in graph.users(n) if u not in members]
        if n != root and outside:
            raise ValueError(f"group member {n} is read outside the group by {outside}")
    externals: list[int] = []
    for n in order:
        for a in graph.node(n)["args"]:
            if a not in members and a not in externals:
                externals.append(a)
    body = Graph(f"{graph.name}.{group_kind}{root}")
    local = {}
    for pos, a in enumerate(externals):
        ad = graph.node(a)
        local[a] = body.add_node("input", shape=ad["shape"], dtype=ad["dtype"], target=pos)
    for n in order:
        d = graph.node(n)
        local[n] = body.add_node("op", op=d["op"], attrs=d["attrs"],
                                 args=[local[a] for a in d["args"]], shape=d["shape"],
                                 dtype=d["dtype"], source=d.get("source", ""),
                                 module=d.get("module", ""))
    rd = graph.node(root)
    body.add_node("output", args=[local[root]], shape=rd["shape"], dtype=rd["dtype"],
                  spec="T")
    ops = tuple(graph.node(n)["op"] for n in order)
    gid = graph.add_node("group", args=externals, shape=rd["shape"], dtype=rd["dtype"],
                         group_kind=group_kind, body=body, ops=ops, members=tuple(order),
                         source=rd.get("source", ""), module=rd.get("module", ""))
    graph.replace_uses(root, gid)
    for n in reversed(order):
        graph.remove_node(n)
    graph.notes.append(f"fused {group_kind} kernel g{gid}: {' + '.join(ops)} "
                       f"(nodes {list(order)})")
    return gid


def grow_upward(graph: Graph, members: set, shape: tuple, why_not: list) -> set:
    """Add elementwise producers whose every reader is already in ``members``.

    A producer is absorbed only if its shape is ``shape`` (so the fused loop
    computes every member at the same index); refusals are described in ``why_not``.
    """
    changed = True
    while changed:
        changed = False
        for m in sorted(members):
            for a in graph.node(m)["args"]:
                if a in members or not is_op(graph, a):
                    continue
                d = graph.node(a)
                kind = op_kind(graph, a)
                if kind is not Kind.ELEMENTWISE:
                    continue
                if tuple(d["shape"]) != tuple(shape):
                    why_not.append(f"{d['op']} n{a} not fused into n{m}: shape {d['shape']} "
                                   f"differs from the kernel's {tuple(shape)} (broadcast)")
                    continue
                readers = [u for u in graph.users(a) if u not in members]
                if readers:
                    why_not.append(f"{d['op']} n{a} not fused into n{m}: also read by "
                                   f"{readers} outside the kernel")
                    continue
                members.add(a)
                changed = True
    why_not[:] = list(dict.fromkeys(why_not))  # the loop may meet one refusal twice
    return members
