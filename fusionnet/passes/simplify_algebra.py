"""``simplify_algebra``: drop identity arithmetic and collapse layout chains.

Before -> after (readers of the left value read the right one; the dead nodes
stay behind for ``eliminate_dead_code``)::

    mul(x, 1), mul(1, x), add(x, 0), add(0, x), sub(x, 0), div(x, 1)   -> x
    permute(permute(x, p), q)    -> permute(x, p∘q), or x if that is the identity
    permute(x, identity)         -> x
    reshape(x, x.shape)          -> x
    reshape(reshape(x, a), b)    -> reshape(x, b)
    cast(x, x.dtype)             -> x

An arithmetic identity only applies when the constant is a *literal* whose
values are all exactly 1 (or 0) and the result has x's own shape and dtype;
otherwise broadcasting or type promotion would change the result. (``x + 0``
turns ``-0.0`` into ``0.0``; the two compare equal, as in other compilers.)
``copy`` is kept: it means "a fresh buffer".
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph

__all__ = ["simplify_algebra"]

# op -> (positions the constant may take, the neutral value)
_IDENTITIES = {"mul": ((0, 1), 1), "add": ((0, 1), 0), "sub": ((1,), 0), "div": ((1,), 1)}


def _all_equal(d: dict, neutral) -> bool:
    if d["kind"] != "constant" or "value" not in d or "ref" in d:
        return False
    value = np.asarray(d["value"])
    return bool(value.size) and bool(np.all(value == neutral))


def _same_type(g: Graph, a: int, b: int) -> bool:
    da, db = g.node(a), g.node(b)
    return tuple(da["shape"]) == tuple(db["shape"]) and da["dtype"] == db["dtype"]


def _identity_arg(g: Graph, n: int):
    """The node that ``mul(x, 1)``-style node ``n`` equals, or None."""
    d = g.node(n)
    positions, neutral = _IDENTITIES[d["op"]]
    for pos in positions:
        other = d["args"][1 - pos]
        if _all_equal(g.node(d["args"][pos]), neutral) and _same_type(g, other, n):
            return other
    return None


def _dims(d: dict) -> tuple:
    rank = len(d["shape"])
    return tuple(int(p) % max(rank, 1) for p in dict(d["attrs"])["dims"])


def _rewrite(g: Graph, n: int):
    """Simplify node ``n`` in place or return the node its readers should read instead."""
    d = g.node(n)
    op, args = d["op"], d["args"]
    if op in _IDENTITIES and len(args) == 2:
        return _identity_arg(g, n), f"{op} by a neutral constant"
    if op in ("permute", "reshape", "cast") and len(args) == 1:
        src = g.node(args[0])
        if op == "permute" and src["kind"] == "op" and src["op"] == "permute":
            inner, outer = _dims(src), _dims(d)
            d["attrs"] = (("dims", tuple(inner[q] for q in outer)),)
            g.set_args(n, src["args"])
            g.notes.append(f"simplify_algebra: node {n}: composed permute of permute")
        elif op == "reshape" and src["kind"] == "op" and src["op"] == "reshape":
            d["attrs"] = (("shape", tuple(d["shape"])),)
            g.set_args(n, src["args"])
            g.notes.append(f"simplify_algebra: node {n}: merged reshape of reshape")
        if op == "permute" and _dims(d) == tuple(range(len(d["shape"]))):
            return d["args"][0], "identity permute"
        if op == "reshape" and _same_type(g, d["args"][0], n):
            return d["args"][0], "reshape to the same shape"
        if op == "cast" and _same_type(g, d["args"][0], n):
            return d["args"][0], "cast to the same dtype"
    return None, ""


def simplify_algebra(graph: Graph) -> Graph:
    """A copy of ``graph`` with identity arithmetic and redundant layout ops bypassed."""
    g = graph.copy()
    for n in g.order():  # args come first, so chains are already simplified when we get here
        if g.node(n)["kind"] != "op":
            continue
        new, why = _rewrite(g, n)
        if new is not None and g.users(n):
            g.replace_uses(n, new)
            g.notes.append(f"simplify_algebra: node {n} ({why}) -> node {new}")
    return g
