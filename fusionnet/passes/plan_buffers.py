"""``plan_buffers``: let intermediates whose lifetimes do not overlap share memory.

Before -> after (``@k`` is the ``buffer`` slot attribute)::

    t1 = exp(x)                     t1 = exp(x)    @0
    t2 = neg(t1)         ->         t2 = neg(t1)   @1
    t3 = abs(t2)                    t3 = abs(t2)   @0   (t1 is dead by now)
    t4 = tanh(t3)                   t4 = tanh(t3)       (read by the output: not planned)

Walking :meth:`Graph.order`, a value is live from its definition to its last
use. A node takes the lowest free slot of exactly its byte size and dtype
(exact matches keep code generation simple), else opens a new one; slots free
up only *after* a value's last use, so an op never writes over its own input.
Ops whose row says the result may share memory with the first input
(``Op.may_alias``: views such as reshape/permute/expand/getitem, and a same-device
``to_device``) keep their source live until their last use; a value the output
aliases through them is not planned at all (it escapes).
Sets node attribute ``buffer`` and ``g.buffers = {slot: (nbytes, dtype)}``.
"""
from __future__ import annotations

import math

import numpy as np

from ..graph import Graph
from ..ops import get_op

__all__ = ["plan_buffers", "lifetimes", "view_root"]


def _nbytes(d: dict) -> int:
    return math.prod(d["shape"]) * np.dtype(d["dtype"]).itemsize


def _is_view(d: dict) -> bool:
    """The node's value may share memory with its first argument (the row says so)."""
    return d["kind"] == "op" and bool(d["args"]) and get_op(d["op"]).may_alias


def view_root(g: Graph, nid: int) -> tuple[int, int]:
    """(the node whose storage ``nid``'s value may share, how many view rows lead there)."""
    steps = 0
    while _is_view(g.node(nid)):
        nid, steps = g.node(nid)["args"][0], steps + 1
    return nid, steps


def lifetimes(g: Graph) -> dict[int, tuple[int, int]]:
    """Node -> (definition, last use) as positions in ``g.order()``, views folded in."""
    order = g.order()
    pos = {n: i for i, n in enumerate(order)}
    live = {n: (pos[n], max([pos[u] for u in g.users(n)], default=pos[n])) for n in order}
    for n in reversed(order):  # a view's readers keep its source alive (chains included)
        if _is_view(g.node(n)):
            src = g.node(n)["args"][0]
            live[src] = (live[src][0], max(live[src][1], live[n][1]))
    return live


def _escaping(g: Graph) -> set[int]:
    """The output's values and every value they may alias through views."""
    todo, seen = list(g.node(g.output)["args"]), set()
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            if _is_view(g.node(n)):
                todo.append(g.node(n)["args"][0])
    return seen


def plan_buffers(graph: Graph) -> Graph:
    """A copy of ``graph`` with a ``buffer`` slot on every intermediate op/group node."""
    g = graph.copy()
    g.buffers = {}
    for n in g.nx:
        g.node(n).pop("buffer", None)  # a stale plan from an earlier run must not survive
    live, escaping = lifetimes(g), _escaping(g)
    # A group with side outputs (``outs``) writes several fresh arrays: not planned.
    planned = [n for n in g.order()
               if g.node(n)["kind"] in ("op", "group") and "outs" not in g.node(n)
               and n not in escaping]
    free: dict[tuple, list[int]] = {}   # (nbytes, dtype) -> free slots
    busy: list[tuple[int, int]] = []    # (last use, slot) of values now in a slot
    before = 0
    for n in planned:
        start, end = live[n]
        for last, slot in [b for b in busy if b[0] < start]:  # dead strictly before n
            busy.remove((last, slot))
            free.setdefault(g.buffers[slot], []).append(slot)
        key = (_nbytes(g.node(n)), g.node(n)["dtype"])
        pool = sorted(free.get(key, []))
        slot = pool[0] if pool else len(g.buffers)
        if pool:
            free[key].remove(slot)
        g.buffers[slot] = key
        g.node(n)["buffer"] = slot
        busy.append((end, slot))
        before += key[0]
    after = sum(nbytes for nbytes, _ in g.buffers.values())
    g.notes.append(f"plan_buffers: {len(planned)} intermediates in {len(g.buffers)} slots, "
                   f"{before} -> {after} bytes")
    return g
