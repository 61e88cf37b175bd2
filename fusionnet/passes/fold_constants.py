"""``fold_constants``: compute ops whose arguments are all literal constants.

Before -> after::

    c1 = constant [1., 1., 1.]      c5 = constant [3., 3., 3.]
    c2 = constant 2.
    t3 = mul(c1, c2)           ->   (c1, c2, c3 are left for DCE)
    c3 = constant 1.
    t4 = add(t3, c3)

The value is computed by the op table's own eager implementation
(:func:`fusionnet.dispatch.run_eager`), so folding can never disagree with
execution. Only *literal* constants (a ``value`` key) fold: constants with a
``ref`` are live module attributes and params/buffers can change between calls.
"""
from __future__ import annotations

import numpy as np

from ..dispatch import run_eager
from ..graph import Graph
from ..ops import Kind, get_op
from ..tensor import Tensor

__all__ = ["fold_constants"]


def _is_literal(d: dict) -> bool:
    return d["kind"] == "constant" and "value" in d and "ref" not in d


def _fold_one(g: Graph, n: int, made: set[int]) -> bool:
    """Replace op node ``n`` by a literal constant if it can be computed now."""
    d = g.node(n)
    op = get_op(d["op"])
    if op.kind is Kind.OPAQUE:  # device copies and the like: never bake them in
        return False
    try:
        out = run_eager(op, [Tensor._wrap(g.node(a)["value"]) for a in d["args"]],
                        dict(d["attrs"]))
    except Exception as err:  # noqa: BLE001 - leave it to fail at run time, as eager would
        g.notes.append(f"fold_constants: kept node {n} ({d['op']}): {err}")
        return False
    value = np.array(out._data, copy=True)  # a view of another constant must not alias it
    if value.shape != tuple(d["shape"]) or str(value.dtype) != d["dtype"]:
        g.notes.append(f"fold_constants: kept node {n} ({d['op']}): computed "
                       f"{value.dtype}{list(value.shape)} != recorded {d['dtype']}"
                       f"{list(d['shape'])}")
        return False
    new = g.add_node("constant", shape=value.shape, dtype=value.dtype, value=value,
                     target=f"folded{n}", source=d.get("source", ""),
                     module=d.get("module", ""))
    g.replace_uses(n, new)
    g.remove_node(n)
    made.add(new)
    args = ", ".join(_show(g.node(a)["value"]) for a in d["args"])
    g.notes.append(f"fold_constants: folded {d['op']}({args}) -> constant {new}")
    for a in set(d["args"]) & made:  # our own intermediate results; the rest is DCE's job
        if not g.users(a):
            g.remove_node(a)
    return True


def _show(value) -> str:
    arr = np.asarray(value)
    return repr(arr.item()) if arr.size == 1 else f"{arr.dtype}{list(arr.shape)}"


def fold_constants(graph: Graph) -> Graph:
    """A copy of ``graph`` with every all-literal-constant op replaced by its value."""
    g = graph.copy()
    made: set[int] = set()   # constants this pass created
    # One walk in topological order suffices: a node's arguments are folded (or not)
    # before the node is looked at, so chains of constants fold in a single pass.
    for n in graph.order():
        d = g.node(n)
        if d["kind"] == "op" and d["args"] and all(_is_literal(g.node(a)) for a in d["args"]):
            _fold_one(g, n, made)
    return g
