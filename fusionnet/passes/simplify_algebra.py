"""``simplify_algebra``: drop identity arithmetic and collapse layout chains.

Before -> after (readers of the left value read the right one; the dead nodes
stay behind for ``eliminate_dead_code``)::

    mul(x, 1), mul(1, x), add(x, 0), add(0, x), sub(x, 0), div(x, 1)   -> x
    permute(permute(x, p), q)    -> permute(x, p∘q), or x if that is the identity
    permute(x, identity)         -> x
    reshape(x, x.shape)          -> x
    reshape(reshape(x, a), b)    -> reshape(x, b)
    cast(x, x.dtype)             -> x

Every rule reads a fact of the op's row, never its name: the neutral elements and
where they may stand (``Op.neutral``), the primitive layout steps a view op is made
of (``Op.layout``: a view op whose steps all change nothing is its input; two
single-step layout ops of one composable step merge into that step), and
``Op.same_type_is_identity`` (``cast``). So a new view op row (``movedim``, say) is
simplified with no change here.

An arithmetic identity only applies when the constant is a *literal* whose
values are all exactly the neutral value and the result has x's own shape and
dtype; otherwise broadcasting or type promotion would change the result. (``x + 0``
turns ``-0.0`` into ``0.0``; the two compare equal, as in other compilers.)
``copy`` is kept: it means "a fresh buffer".
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph
from ..ops import LAYOUT_STEPS, get_op, layout_steps

__all__ = ["simplify_algebra"]


def _all_equal(d: dict, neutral, dtype) -> bool:
    """Whether constant node ``d`` is all ``neutral`` once converted to the result's
    ``dtype``, the sign of a float zero included: ``x + 0.0`` is not ``x`` for
    ``x = -0.0`` (it is ``+0.0``); ``x + (-0.0)`` and ``x - 0.0`` are."""
    if d["kind"] != "constant" or "value" not in d or "ref" in d:
        return False
    value = np.asarray(d["value"])
    if not value.size or not np.all(value == neutral):
        return False
    if np.dtype(dtype).kind != "f":
        return True
    as_result = value.astype(dtype)
    return bool(np.all(np.signbit(as_result) == np.signbit(np.asarray(neutral, dtype))))


def _same_type(g: Graph, a: int, b: int) -> bool:
    da, db = g.node(a), g.node(b)
    return tuple(da["shape"]) == tuple(db["shape"]) and da["dtype"] == db["dtype"]


def _identity_arg(g: Graph, n: int, neutral: dict):
    """The node that ``mul(x, 1)``-style node ``n`` equals, or None."""
    d = g.node(n)
    for pos, value in neutral.items():
        other = d["args"][1 - pos]
        if _all_equal(g.node(d["args"][pos]), value, d["dtype"]) and _same_type(g, other, n):
            return other
    return None


def _steps(g: Graph, n: int):
    """The layout steps of op node ``n`` (those that change something), or None."""
    d = g.node(n)
    if d["kind"] != "op" or len(d["args"]) != 1:
        return None
    return layout_steps(get_op(d["op"]), g.node(d["args"][0])["shape"], d["shape"], d["attrs"])


def _compose(g: Graph, n: int, steps: tuple) -> tuple:
    """Merge node ``n`` (one layout step) with a source of one step of the same kind, in
    place: ``n`` becomes that step's op on the source's input. Returns n's steps."""
    src = g.node(n)["args"][0]
    inner = _steps(g, src)
    if len(steps) != 1 or not inner or len(inner) != 1 or inner[0][0] != steps[0][0]:
        return steps
    step = steps[0][0]
    rule = LAYOUT_STEPS[step]
    if rule.compose is None:
        return steps
    d, inner_op = g.node(n), g.node(src)["op"]
    what = f"{d['op']} of {inner_op}"
    d["op"] = step  # the row of a layout step's name is that step alone
    d["attrs"] = ((rule.attr, rule.compose(inner[0][1], steps[0][1])),)
    g.set_args(n, g.node(src)["args"])
    g.notes.append(f"simplify_algebra: node {n}: composed {what}")
    return _steps(g, n)


def _rewrite(g: Graph, n: int):
    """Simplify node ``n`` in place or return the node its readers should read instead."""
    d = g.node(n)
    op, args = get_op(d["op"]), d["args"]
    if op.neutral and len(args) == 2:
        return _identity_arg(g, n, op.neutral), f"{d['op']} by a neutral constant"
    steps = _steps(g, n)
    if steps is not None:
        steps = _compose(g, n, steps)
        if not steps:
            return d["args"][0], f"identity {d['op']}"
    if op.same_type_is_identity and len(args) == 1 and _same_type(g, args[0], n):
        return args[0], f"{d['op']} to the same dtype"
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
