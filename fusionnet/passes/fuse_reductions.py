"""Fold elementwise producers into the reduction that consumes them.

Before::  X -> abs -> sum
After::   group[reduction](X) = sum(abs(X))

A producer joins when all its readers are already in the group and it has the
reduction's input shape (so one loop reads X once and accumulates). A producer of that
shape that is also read later, outside, joins as a *side output*: the kernel stores
its value while it accumulates (a loop body's ``X = X / 2`` followed by the next test's
``X.abs().sum()`` becomes one pass over ``X`` instead of two kernels)::

    X -> div(., 2) -> abs -> sum         group[reduction](X) = (sum(abs(X / 2)), X / 2)
           '-> (read by the loop state)

A full reduction's 0-d consumers (``X.abs().sum() > 1``: the ``gt``) join as its
*epilogue* when they alone read its value: the kernel computes them once on the
finished value and stores the last one::

    X -> abs -> sum -> gt(., 1)          group[reduction](X) = sum(abs(X)) > 1

Reductions the backend cannot generate (``Backend.supports``), and rows without
``Op.reduction`` (``argmax``, ``argmin``: an index, which the lowering gives a driver
step of its own where the backend finds indices) are left alone, with a note saying why.
"""
from __future__ import annotations

from ..codegen.backend import Backend, default_backend
from ..graph import Graph
from ..ops import Kind, get_op
from ._groups import grow_epilogue, grow_side_outputs, grow_upward, make_group, op_kind

__all__ = ["fuse_reductions"]


def fuse_reductions(graph: Graph, backend: Backend | None = None) -> Graph:
    """Make each reduction a kernel, with its elementwise producers folded in; only those
    ``backend`` (default: the one ``fuse`` compiles with) can generate."""
    backend = backend or default_backend()
    g = graph.copy()
    position = {n: i for i, n in enumerate(graph.order())}
    for r in reversed(graph.order()):
        if r not in g.nx or op_kind(g, r) is not Kind.REDUCTION:
            continue
        d = g.node(r)
        op = get_op(d["op"])
        why = backend.why_unsupported(op)
        if op.reduction is None and not why:  # an index (argmax): its own driver step
            why = "it returns an index, not an accumulated value (no Op.reduction)"
        if why:
            g.notes.append(f"fuse_reductions: {d['op']} n{r} not fused: {why}")
            continue
        source_shape = g.node(d["args"][0])["shape"]
        why_not: list[str] = []
        members = grow_upward(g, {r}, source_shape, why_not)
        side: list = []
        while True:  # side outputs bring their own producers, which may bring more
            more = grow_side_outputs(g, members, r, source_shape, position, 4 - len(side))
            if not more:
                break
            side += more
            members = grow_upward(g, members, source_shape, why_not)
        why_not[:] = [w for w in why_not if not any(f" n{m} " in w for m in members)]
        epilogue = grow_epilogue(g, r, members, position) if tuple(d["shape"]) == () else []
        gid = make_group(g, members | set(epilogue), epilogue[-1] if epilogue else r,
                         "reduction", side=side)
        for n in [gid, *g.users(gid)]:   # the group and its items stand where r stood
            position[n] = position[r]
        g.notes.extend(f"fuse_reductions: {n}" for n in why_not)
    return g
