"""``eliminate_common_subexpressions``: compute each distinct value once.

Before -> after::

    t1 = exp(x)                     t1 = exp(x)
    t2 = exp(x)          ->         t3 = add(t1, t1)
    t3 = add(t1, t2)

Op nodes merge when op, attrs and args agree (args compared after earlier
merges, so whole repeated chains collapse in one topological walk). Literal
constants merge when dtype, shape and bytes agree; param/buffer (and
module-attribute constant) nodes when they name the same live tensor with the
same detach flag. The later duplicate is removed; its readers read the first.
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph

__all__ = ["eliminate_common_subexpressions"]


def _key(d: dict):
    """What makes two nodes the same value, or None if the node never merges."""
    kind = d["kind"]
    if kind == "op":
        return ("op", d["op"], d["attrs"], d["args"])
    if kind == "constant" and "value" in d and "ref" not in d:
        arr = np.asarray(d["value"])  # not ascontiguousarray: it turns 0-d into shape (1,)
        return ("literal", str(arr.dtype), arr.shape, arr.tobytes(order="C"))
    if kind in ("param", "buffer", "constant") and "ref" in d:
        # same target *and* same live object: hand-built graphs may reuse names
        return (kind, d.get("target"), bool(d.get("detach")), id(d["ref"]))
    return None  # inputs are positional; groups and the output are never merged


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    """A copy of ``graph`` in which equal values are computed (or held) only once."""
    g = graph.copy()
    first: dict = {}
    for n in g.order():  # readers come after their args, so args are already merged
        key = _key(g.node(n))
        try:
            hash(key)
        except TypeError:  # an attr that is not plain data: do not guess equality
            continue
        if key is None:
            continue
        keep = first.setdefault(key, n)
        if keep != n:
            d = g.node(n)
            g.replace_uses(n, keep)
            g.remove_node(n)
            what = d.get("op") or d.get("target") or d["kind"]
            g.notes.append(f"eliminate_common_subexpressions: merged node {n} ({what}) "
                           f"into node {keep}")
    return g
