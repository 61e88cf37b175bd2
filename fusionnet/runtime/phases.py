"""Which part of a training step each kernel belongs to, and what crosses between parts.

Ops recorded by ``loss.backward()`` or ``optimizer.step()`` inside a trace carry a
``phase`` field (``"backward"``, ``"update"``); everything else is forward. A fused
kernel belongs to the latest phase among its ops (a ReLU mask fused into a backward
GEMM is backward). *Saved* values are forward results that a backward or update node
reads: what a separate forward would have to keep for the backward (in one fused
step they stay in the call's own buffers). ``explain`` prints these lines.
"""
from __future__ import annotations

import numpy as np

from .symbolic import evaluate

__all__ = ["PHASES", "phase_of", "phase_lines", "kernel_lines", "saved_bytes"]

PHASES = ("forward", "backward", "update")


def phase_of(graph, n: int, traced=None) -> str:
    """The phase of node ``n`` of an optimized graph: its own ``phase``, or for a fused
    kernel the latest phase of the traced nodes it replaced (``members``, looked up in
    ``traced``, the graph before the passes)."""
    d = graph.node(n)
    found = {d["phase"]} if d.get("phase") else set()
    if traced is not None:
        for m in d.get("members", ()) or ((n,) if d["kind"] == "op" else ()):
            if m in traced.nx and traced.node(m).get("phase"):
                found.add(traced.node(m)["phase"])
    return max(found, key=PHASES.index) if found else "forward"


def _nbytes(d, batch) -> int:
    shape = d.get("sym_shape", d["shape"]) if batch is not None else d["shape"]
    size = 1
    for s in shape:
        size *= evaluate(s, batch) if batch is not None else s
    return size * np.dtype(d["dtype"]).itemsize


def saved_bytes(graph, traced=None, batch=None) -> list[tuple[int, int]]:
    """``[(node, bytes), ...]``: forward values read by backward or update nodes (sizes at
    ``batch`` when the graph is batch-generic)."""
    phase = {n: phase_of(graph, n, traced) for n in graph.order()}
    out = {}
    for n in graph.order():
        if phase[n] == "forward" or graph.node(n)["kind"] == "output":
            continue
        for a in graph.node(n)["args"]:
            d = graph.node(a)
            if phase[a] == "forward" and d["kind"] in ("op", "group", "item", "while", "cond"):
                out[a] = _nbytes(d, batch)
    return sorted(out.items())


def kernel_lines(graph, indent: str = "  ", title: str = "kernels") -> list[str]:
    """``title: N`` and one line per fused kernel of ``graph``."""
    ks = graph.nodes_of("group")
    return [f"{indent}{title}: {len(ks)}"] + [
        f"{indent}  g{n}: {graph.node(n)['group_kind']}: {' + '.join(graph.node(n)['ops'])}"
        for n in ks]


def phase_lines(graph, traced=None, batch=None, indent: str = "  ") -> list[str]:
    """The kernels of ``graph`` by phase, then the saved values and their total size."""
    lines = []
    for ph in PHASES:
        ks = [n for n in graph.nodes_of("group") if phase_of(graph, n, traced) == ph]
        if not ks:
            continue
        lines.append(f"{indent}{ph} kernels: {len(ks)}")
        for n in ks:
            d = graph.node(n)
            lines.append(f"{indent}  g{n}: {d['group_kind']}: {' + '.join(d['ops'])}")
    saved = saved_bytes(graph, traced, batch)
    total = sum(b for _, b in saved)
    where = f" at batch {batch}" if batch is not None else ""
    lines.append(f"{indent}saved between forward and backward: {len(saved)} values, "
                 f"{total} bytes{where}")
    for n, b in saved:
        d = graph.node(n)
        what = d.get("group_kind") and f"g{n} ({'+'.join(d['ops'])})" or f"node {n} " \
            f"({d.get('op') or d['kind']})"
        lines.append(f"{indent}  {what}: {b} bytes")
    return lines
