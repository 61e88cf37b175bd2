"""Fold elementwise producers into the reduction that consumes them.

Before::  X -> abs -> sum
After::   group[reduction](X) = sum(abs(X))

A producer joins when all its readers are already in the group and it has the
reduction's input shape (so one loop reads X once and accumulates). Reductions the
backend cannot generate (``Backend.supports``: ``argmax``, ``argmin``, whose rows have
no ``Op.reduction``) are left alone, with a note saying why.
"""
from __future__ import annotations

from ..codegen.backend import Backend, default_backend
from ..graph import Graph
from ..ops import Kind, get_op
from ._groups import grow_upward, make_group, op_kind

__all__ = ["fuse_reductions"]


def fuse_reductions(graph: Graph, backend: Backend | None = None) -> Graph:
    """Make each reduction a kernel, with its elementwise producers folded in; only those
    ``backend`` (default: the one ``fuse`` compiles with) can generate."""
    backend = backend or default_backend()
    g = graph.copy()
    for r in reversed(graph.order()):
        if r not in g.nx or op_kind(g, r) is not Kind.REDUCTION:
            continue
        d = g.node(r)
        why = backend.why_unsupported(get_op(d["op"]))
        if why:
            g.notes.append(f"fuse_reductions: {d['op']} n{r} not fused: {why}")
            continue
        source_shape = g.node(d["args"][0])["shape"]
        why_not: list[str] = []
        members = grow_upward(g, {r}, source_shape, why_not)
        make_group(g, members, r, "reduction")
        g.notes.extend(f"fuse_reductions: {n}" for n in why_not)
    return g
