"""Fuse each matmul with the elementwise chain that consumes its output.

Before::  W -> permute -> matmul(X, .) -> add(., b) -> relu -> ...
After::   group[gemm_epilogue](X, W, b) = relu(add(matmul(X, permute(W)), b))

The transposed-weight ``permute`` that ``Linear`` produces is absorbed as a
prologue (BLAS reads a transposed operand for free): any op whose row's layout steps
(``Op.layout``) are one 2-D transpose is, whatever its name (``t``, ``transpose``, a
user's ``movedim``). The epilogue grows one
reader at a time while the matmul's value has exactly one reader, that reader
is elementwise, and it keeps the matmul's output shape and dtype; elementwise
producers read only by the epilogue (a ReLU mask in a backward) join it. Every
decision is noted for ``explain``.
"""
from __future__ import annotations

from ..graph import Graph
from ..ops import Kind, get_op, is_transpose, layout_steps
from ._groups import grow_upward, is_op, make_group, op_kind

__all__ = ["fuse_gemm_epilogues"]


def _transposed_operand(graph: Graph, a: int, matmul: int) -> int | None:
    """The 2-D transpose feeding ``matmul`` at ``a``, private to it (or None).

    A transpose of weights shared by two layers (tied weights, after CSE) is
    duplicated so that each GEMM gets its own: a transpose is a free view.
    """
    d = graph.node(a)
    if not (is_op(graph, a) and len(d["args"]) == 1 and len(d["shape"]) == 2):
        return None
    steps = layout_steps(get_op(d["op"]), graph.node(d["args"][0])["shape"], d["shape"],
                         d["attrs"])
    if steps is None or not is_transpose(steps):
        return None
    if graph.users(a) == [matmul]:
        return a
    twin = graph.add_node("op", op=d["op"], attrs=d["attrs"], args=d["args"],
                          shape=d["shape"], dtype=d["dtype"], source=d.get("source", ""),
                          module=d.get("module", ""))
    args = graph.node(matmul)["args"]
    graph.set_args(matmul, tuple(twin if x == a else x for x in args))
    return twin


def _next_epilogue_op(graph: Graph, root: int, shape, dtype, notes: list):
    """The reader of ``root`` that can join the epilogue, or None (with a note why)."""
    users = graph.users(root)
    if len(users) != 1:
        notes.append(f"epilogue stops after n{root}: its value is read by {len(users)} nodes")
        return None
    u = users[0]
    d = graph.node(u)
    if d["kind"] != "op":
        return None  # the graph output (or a group): nothing more to fuse
    if op_kind(graph, u) is not Kind.ELEMENTWISE:
        notes.append(f"epilogue stops before {d['op']} n{u}: kind "
                     f"{op_kind(graph, u).value}, not elementwise")
        return None
    if tuple(d["shape"]) != tuple(shape) or d["dtype"] != dtype:
        notes.append(f"epilogue stops before {d['op']} n{u}: it changes shape/dtype to "
                     f"{d['shape']}/{d['dtype']}")
        return None
    return u


def fuse_gemm_epilogues(graph: Graph) -> Graph:
    """Group every matmul with its transposed-operand prologue and elementwise epilogue."""
    g = graph.copy()
    for m in graph.order():
        if m not in g.nx or op_kind(g, m) is not Kind.MATMUL:
            continue
        d = g.node(m)
        prologue = {_transposed_operand(g, a, m) for a in set(d["args"])} - {None}
        members = {m} | prologue
        notes: list[str] = []
        root = m
        while (u := _next_epilogue_op(g, root, d["shape"], d["dtype"], notes)) is not None:
            members.add(u)
            root = u
        if root != m:
            # Elementwise producers read only by the epilogue are computed in its loop too
            # (a backward's ReLU mask ``h > 0`` beside ``g @ W``): never producers of the
            # GEMM's own operands, which BLAS reads as arrays.
            epilogue = members - {m} - prologue
            members |= grow_upward(g, set(epilogue), d["shape"], []) - epilogue
        make_group(g, members, root, "gemm_epilogue" if root != m else "gemm")
        g.notes.extend(f"fuse_gemm_epilogues: {n}" for n in notes)
    return g
