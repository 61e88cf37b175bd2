"""``eliminate_dead_code``: remove what the output does not need.

Before -> after::

    x  = input 0                    x  = input 0
    t1 = exp(x)          ->         c2 = constant 1.
    c2 = constant 1.                t3 = add(x, c2)
    t3 = add(x, c2)                 output(t3)
    output(t3)

Op, constant, param, buffer and group nodes from which the output cannot be
reached are deleted, except ops whose row says they may raise on their inputs' values
(``Op.value_errors``: an index tensor out of range) and what they read. Inputs always stay: they are positional, and dropping
one would change the graph's calling convention.
"""
from __future__ import annotations

import networkx as nx

from ..graph import Graph
from ..ops import get_op

__all__ = ["eliminate_dead_code", "may_raise_on_values"]

_KEPT = ("input", "output")


def may_raise_on_values(d) -> bool:
    """Whether node data ``d`` is an op whose row says it may raise on its inputs'
    values (``Op.value_errors``): such a node must run even when its result is unused."""
    if d["kind"] != "op":
        return False
    check = get_op(d["op"]).value_errors
    return check is not None and bool(check(**dict(d["attrs"])))


def eliminate_dead_code(graph: Graph) -> Graph:
    """A copy of ``graph`` without the nodes the output does not depend on."""
    g = graph.copy()
    out = g.output
    # Ops that may raise on their inputs' values stay: eager raises there even when the
    # result is unused (an out-of-range index tensor).
    keep = [n for n in g.nx if may_raise_on_values(g.node(n))] + [out]
    live = set(keep)
    for n in keep:
        live |= nx.ancestors(g.nx, n)
    dead = [n for n in g.order() if n not in live and g.node(n)["kind"] not in _KEPT]
    names = [f"{n} ({g.node(n).get('op') or g.node(n).get('target') or g.node(n)['kind']})"
             for n in dead]
    for n in reversed(dead):  # readers before what they read, so nothing dangles
        g.remove_node(n)
    if dead:
        g.notes.append(f"eliminate_dead_code: removed {len(dead)} dead node(s): "
                       + ", ".join(names))
    return g
