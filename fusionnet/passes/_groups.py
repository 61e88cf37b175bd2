"""Building fused groups: the one graph rewrite the fusion passes share.

A group is a node of kind ``group`` whose ``body`` is a small :class:`Graph`
(inputs = the group's arguments, in order). It is the unit the code generators
receive. ``group_kind`` says what it is: ``gemm``, ``gemm_epilogue``,
``elementwise`` or ``reduction``.

A group has one result (its root's value) or, when members are also read outside
(*side outputs*: a reduction that stores the elementwise value it reduces, so a loop
body's ``X = X / 2`` and the next ``X.abs().sum()`` are one pass over ``X``), several:
the node then has ``outs`` (``((shape, dtype), ...)``: the root first) and is read
through ``item`` nodes, as loop and branch regions are.
"""
from __future__ import annotations

import networkx as nx

from ..graph import Graph
from ..ops import Kind, get_op

__all__ = ["make_group", "grow_upward", "grow_side_outputs", "grow_epilogue", "op_kind",
           "is_op"]


def is_op(graph: Graph, nid: int) -> bool:
    """True for an (unfused) op node."""
    return graph.node(nid)["kind"] == "op"


def op_kind(graph: Graph, nid: int):
    """The fusion kind of an op node (None for other nodes)."""
    d = graph.node(nid)
    return get_op(d["op"]).kind if d["kind"] == "op" else None


def make_group(graph: Graph, members, root: int, group_kind: str, side=()) -> int:
    """Replace ``members`` (op nodes) by one group node in ``graph`` (modified in place:
    call on a pass's own copy). ``root`` and the ``side`` members are the only ones read
    from outside; with side outputs the group has ``outs`` and one ``item`` node per
    result (the root's first) replaces each result's uses. Returns the group's id."""
    members, side = set(members), tuple(side)
    # A topological order of the members alone: sorting the whole graph per group would
    # make fusion quadratic in the graph size.
    order = list(nx.lexicographical_topological_sort(graph.nx.subgraph(members),
                                                     key=lambda n: n))
    for n in order:
        outside = [u for u in graph.users(n) if u not in members]
        if n != root and n not in side and outside:
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
    results = (root,) + side
    spec = "T" if not side else ("tuple", ("T",) * len(results))
    body.add_node("output", args=[local[n] for n in results], shape=rd["shape"],
                  dtype=rd["dtype"], spec=spec)
    ops = tuple(graph.node(n)["op"] for n in order)
    extra = {"outs": tuple((tuple(graph.node(n)["shape"]), graph.node(n)["dtype"])
                           for n in results)} if side else {}
    gid = graph.add_node("group", args=externals, shape=rd["shape"], dtype=rd["dtype"],
                         group_kind=group_kind, body=body, ops=ops, members=tuple(order),
                         source=rd.get("source", ""), module=rd.get("module", ""), **extra)
    if not side:
        graph.replace_uses(root, gid)
    for k, n in enumerate(results if side else ()):
        d = graph.node(n)
        item = graph.add_node("item", args=[gid], shape=d["shape"], dtype=d["dtype"],
                              target=k)
        if "sym_shape" in d:
            graph.node(item)["sym_shape"] = d["sym_shape"]
        for user in [u for u in graph.users(n) if u not in members]:
            graph.set_args(user, tuple(item if a == n else a for a in graph.node(user)["args"]))
    for n in reversed(order):
        graph.remove_node(n)
    outs = f", storing side outputs {list(side)}" if side else ""
    graph.notes.append(f"fused {group_kind} kernel g{gid}: {' + '.join(ops)} "
                       f"(nodes {list(order)}){outs}")
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


def grow_side_outputs(graph: Graph, members: set, root: int, shape: tuple, position: dict,
                      limit: int = 4) -> list:
    """Elementwise producers of ``members`` of ``shape`` that are also read outside, to be
    computed by the group and stored as side outputs (added to ``members``); returns
    them. A producer qualifies only if every outside reader comes after ``root`` in
    ``position`` (a topological order): none can then feed a member, so the group
    cannot close a cycle. Checked in O(readers), so fusion stays near-linear."""
    side: list = []
    for m in sorted(members):
        for a in graph.node(m)["args"]:
            if len(side) >= limit:
                return side
            if a in members or not is_op(graph, a) or op_kind(graph, a) is not Kind.ELEMENTWISE:
                continue
            if tuple(graph.node(a)["shape"]) != tuple(shape):
                continue
            readers = [u for u in graph.users(a) if u not in members]
            if readers and all(position.get(u, -1) > position[root] for u in readers):
                members.add(a)
                side.append(a)
    return side


def grow_epilogue(graph: Graph, root: int, members: set, position: dict,
                  limit: int = 4) -> list:
    """The chain of 0-d elementwise ops that alone read a full reduction ``root``'s value
    (``X.abs().sum() > 1``), to run once on the finished value inside the reduction's
    kernel instead of as kernels of their own; returns it (not added to ``members``).
    Each op's other operands must be 0-d leaves (constants, inputs) or values computed
    before ``root`` (in ``position``, a topological order), so the group cannot close a
    cycle."""
    chain: list = []
    last = root
    while len(chain) < limit:
        users = graph.users(last)
        if len(users) != 1:
            break
        u = users[0]
        if not is_op(graph, u) or op_kind(graph, u) is not Kind.ELEMENTWISE or \
                tuple(graph.node(u)["shape"]) != ():
            break
        others = [a for a in graph.node(u)["args"] if a != last]
        if any(a in members or tuple(graph.node(a)["shape"]) != () or
               (graph.node(a)["args"] and position.get(a, len(position)) >= position[root])
               for a in others):
            break
        chain.append(u)
        last = u
    return chain
