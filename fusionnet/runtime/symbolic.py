"""Which sizes may vary between calls without recompiling (batch-size polymorphism).

The graph is traced twice with the leading dimension of every input set to two
probe sizes. If both traces agree on everything but sizes, and every size that
differs is ``k * batch`` in both, the compiled code can read the batch size at
run time: one compile serves every batch size. Any disagreement (a reshape
that bakes in the batch size, a constant built from it, a shape read by user
code) makes the signature exact instead: recompiling is always safe.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..graph import Graph
from ..tensor import Tensor
from ..tracer import trace

__all__ = ["BatchAnalysis", "analyse_batch", "PROBES"]

#: Probe batch sizes: primes unlikely to equal a model's feature sizes.
PROBES = (97, 113)


@dataclass
class BatchAnalysis:
    """The outcome: a graph to compile and how to map its sizes, or why sizes are exact."""

    graph: Graph | None
    generic: bool
    reason: str = ""

    def dim_of(self, d: int):
        """A traced size as an int (static) or an expression in ``B`` (batch)."""
        p = PROBES[0]
        if not self.generic or d == 0 or d % p:
            return d
        k = d // p
        return "B" if k == 1 else f"{k}*B"


def _probe(x: Tensor, size: int) -> Tensor:
    shape = (size,) + tuple(x.shape[1:])
    kind = x._data.dtype.kind
    if kind == "f":
        data = np.random.default_rng(size).standard_normal(shape).astype(x._data.dtype)
    else:  # integer/bool inputs are often indices: zeros stay valid
        data = np.zeros(shape, x._data.dtype)
    return Tensor._wrap(data)


def _compare(g1: Graph, g2: Graph, b1: int, b2: int) -> str:
    """'' if two traces, at batch sizes ``b1`` and ``b2`` (``b2`` a probe), agree up to
    batch-scaled sizes; else the first difference."""
    if list(g1.order()) != list(g2.order()):
        return "the graph's structure depends on the batch size"
    for n in g1.order():
        a, b = g1.node(n), g2.node(n)
        # A reshape/expand target may scale with the batch: code generation uses the
        # node's (symbolic) shape, not the attribute, and the sizes are compared below.
        keys = ("kind", "op", "args", "dtype", "target") + (
            () if a.get("op") in ("reshape", "expand") else ("attrs",))
        for key in keys:
            if a.get(key) != b.get(key):
                return f"node {n} ({a.get('op') or a['kind']}) has {key} depending on the batch"
        if "value" in a and not np.array_equal(a["value"], b["value"]):
            return f"constant node {n} depends on the batch size"
        if len(a["shape"]) != len(b["shape"]):
            return f"node {n} has a rank depending on the batch size"
        for d1, d2 in zip(a["shape"], b["shape"]):
            if d1 == d2 and b1 != b2:
                if d2 and d2 % b2 == 0:
                    return f"node {n} has a static size {d2} that looks batch-scaled"
            elif d2 % b2 or d1 != (d2 // b2) * b1:
                return f"node {n} has a size that is not a multiple of the batch"
    return ""


def analyse_batch(module, inputs, traced: Graph | None = None) -> BatchAnalysis:
    """Trace ``module`` at the probe batch sizes and decide whether sizes can be symbolic.

    ``traced`` is the trace at the real inputs: it must agree with the probes too, so
    a behaviour that changes below the probe sizes is never compiled in probe form."""
    if not inputs or any(x.ndim == 0 for x in inputs):
        return BatchAnalysis(None, False, "an input has no batch dimension")
    if len({x.shape[0] for x in inputs}) != 1:
        # The probes give every input the same leading size; with different leading
        # sizes those dimensions are not one batch dimension.
        return BatchAnalysis(None, False, "inputs have different leading sizes")
    try:
        g1 = trace(module, *[_probe(x, PROBES[0]) for x in inputs])
        g2 = trace(module, *[_probe(x, PROBES[1]) for x in inputs])
    except Exception as err:  # noqa: BLE001 - any failure just means "exact sizes"
        return BatchAnalysis(None, False, f"probing other batch sizes failed: {err}")
    if g1.shape_reads or g2.shape_reads:
        return BatchAnalysis(None, False, "forward reads tensor sizes as Python values "
                                          f"({g1.shape_reads[0] if g1.shape_reads else ''})")
    why = _compare(g1, g2, *PROBES)
    if not why and traced is not None:
        why = _compare(traced, g1, inputs[0].shape[0], PROBES[0])
        why = why and f"the real trace differs from the probes: {why}"
    if why:
        return BatchAnalysis(None, False, why)
    return BatchAnalysis(g1, True)
