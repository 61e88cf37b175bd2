"""Fuse chains and trees of elementwise (and broadcasting) ops into one kernel each.

Before::  a -> exp -> mul(., b) -> add(., c) -> tanh
After::   group[elementwise](a, b, c) = tanh(add(mul(exp(a), b), c))

Walking from the last op backwards, each unfused elementwise op roots a group
that absorbs producers all of whose readers are inside it, so an intermediate
with readers in two different kernels is computed once, by its own kernel
(correct with several consumers, never recomputed).
"""
from __future__ import annotations

from ..graph import Graph
from ..ops import Kind
from ._groups import grow_upward, make_group, op_kind

__all__ = ["fuse_elementwise"]


def fuse_elementwise(graph: Graph) -> Graph:
    """Group the remaining elementwise ops, largest trees first."""
    g = graph.copy()
    for e in reversed(graph.order()):
        if e not in g.nx or op_kind(g, e) is not Kind.ELEMENTWISE:
            continue
        why_not: list[str] = []
        members = grow_upward(g, {e}, g.node(e)["shape"], why_not)
        make_group(g, members, e, "elementwise")
        g.notes.extend(f"fuse_elementwise: {n}" for n in why_not)
    return g
