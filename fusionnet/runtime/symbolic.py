"""Which sizes may vary between calls without recompiling (batch-size polymorphism).

The block is traced at two probe batch sizes, both traces are optimized, and the two
optimized graphs are compared node by node (group bodies included). A size that is
equal in both is static; a size ``d1`` at probe ``P1`` and ``d2`` at ``P2`` with
``d1 * P2 == d2 * P1`` is ``k * B`` (a size affine in the batch with a zero offset is
the only kind two points pin down); anything else, or any other difference (structure,
attributes, literal constants, a size read by user code), makes the signature exact.
The real trace must agree too. The decision is made per node and dimension from the
two traces, never from the value of a single size, so a static size that happens to
be a multiple of a probe stays static.

A batch-generic program is only used for batch sizes ``B >= 2`` (sizes 0 and 1 change
what ops do: squeezing, broadcasting), and only after :func:`check_at` has re-derived
every node's shape at the new ``B`` with the op table's shape rules and found the
symbolic shapes exact: slicing ``x[:5]`` or indexing ``x[3]`` at a batch too small for
them gives a different shape and gets its own exact compile.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..graph import Graph
from ..ops import get_op
from ..regions import bodies_of, region_of
from ..tensor import Tensor
from ..tracer import trace

__all__ = ["BatchAnalysis", "analyse_batch", "PROBES", "MIN_GENERIC_BATCH", "check_at",
           "evaluate"]

#: Probe batch sizes: two distinct primes (any two distinct sizes would be sound).
PROBES = (97, 113)
#: Batch sizes below this always compile exactly (0/1 specialise, as in PyTorch).
MIN_GENERIC_BATCH = 2


@dataclass
class BatchAnalysis:
    """The outcome: an optimized graph whose nodes carry ``sym_shape`` (ints and
    ``"B"``/``"k*B"``), or why sizes are exact."""

    graph: Graph | None
    generic: bool
    reason: str = ""


def evaluate(dim, batch: int) -> int:
    """A symbolic size (int, ``"B"`` or ``"k*B"``) at batch size ``batch``."""
    if isinstance(dim, int):
        return dim
    return (int(dim[:-2]) if dim != "B" else 1) * batch


def _probe(x: Tensor, size: int) -> Tensor:
    shape = (size,) + tuple(x.shape[1:])
    kind = x._data.dtype.kind
    if kind == "f":
        data = np.random.default_rng(size).standard_normal(shape).astype(x._data.dtype)
    else:  # integer/bool inputs are often indices: zeros stay valid
        data = np.zeros(shape, x._data.dtype)
    t = Tensor._wrap(data)
    if type(x._data) is not np.ndarray:  # probes go where the input is (a CUDA block)
        t = t.to(x.device)
    t.requires_grad = x.requires_grad
    return t


def _sym_dim(d1: int, d2: int, p1: int, p2: int):
    """The symbolic form of a size seen as ``d1`` at batch ``p1`` and ``d2`` at ``p2``."""
    if d1 == d2:
        return d1
    if d1 * p2 == d2 * p1 and d1 % p1 == 0 and d1 > 0:
        k = d1 // p1
        return "B" if k == 1 else f"{k}*B"
    return None


def _attrs_without_shape(d: dict) -> tuple:
    # A `shape` attribute is a target output shape (reshape, expand): it scales with the
    # batch like the node's own shape, which is compared instead.
    return tuple(kv for kv in d.get("attrs", ()) if kv[0] != "shape")


def _annotate(g1: Graph, g2: Graph, p1: int, p2: int, where: str = "") -> str:
    """Set ``sym_shape`` on the nodes of ``g1`` from the comparison with ``g2``; return ''
    or the first difference."""
    if list(g1.order()) != list(g2.order()):
        return f"{where}the graph's structure depends on the batch size"
    for n in g1.order():
        a, b = g1.node(n), g2.node(n)
        for key in ("kind", "op", "args", "dtype", "target", "group_kind", "no_grad"):
            if a.get(key) != b.get(key):
                return f"{where}node {n} ({a.get('op') or a['kind']}) has {key} depending on " \
                       "the batch"
        if _attrs_without_shape(a) != _attrs_without_shape(b):
            return f"{where}node {n} ({a.get('op') or a['kind']}) has attrs depending on the batch"
        if "value" in a and not (np.shape(a["value"]) == np.shape(b["value"]) and
                                 np.array_equal(a["value"], b["value"], equal_nan=True)):
            return f"{where}constant node {n} depends on the batch size"
        if len(a["shape"]) != len(b["shape"]):
            return f"{where}node {n} has a rank depending on the batch size"
        sym = tuple(_sym_dim(d1, d2, p1, p2) for d1, d2 in zip(a["shape"], b["shape"]))
        if None in sym:
            return f"{where}node {n} has a size that is not a multiple of the batch"
        a["sym_shape"] = sym
        for field, body in bodies_of(a):
            body = body.copy()
            why = _annotate(body, b[field], p1, p2, f"{where}{field} of node {n}: ")
            if why:
                return why
            a[field] = body
    return ""


def _agrees(graph: Graph, real: Graph, batch: int, where: str = "") -> str:
    """'' if ``real`` (traced at ``batch``) is ``graph``'s symbolic shapes at ``batch``."""
    if list(graph.order()) != list(real.order()):
        return f"{where}the graph's structure depends on the batch size"
    for n in graph.order():
        a, b = graph.node(n), real.node(n)
        want = tuple(evaluate(d, batch) for d in a["sym_shape"])
        if want != tuple(b["shape"]) or a.get("op") != b.get("op"):
            return f"{where}node {n} differs at batch {batch}"
        for field, body in bodies_of(a):
            why = _agrees(body, b[field], batch, f"{where}{field} of node {n}: ")
            if why:
                return why
    return ""


def check_at(graph: Graph, batch: int) -> str:
    """'' if every node's shape rule, applied at batch size ``batch``, gives the node's
    symbolic shape at ``batch``; else what differs. ``graph`` carries ``sym_shape``."""
    if batch < MIN_GENERIC_BATCH:
        return f"batch size {batch} < {MIN_GENERIC_BATCH} is always compiled exactly"
    return _check(graph, batch, {})


def _check(graph: Graph, batch: int, arg_shapes: dict) -> str:
    shapes: dict[int, tuple] = {}
    for n in graph.order():
        d = graph.node(n)
        want = tuple(evaluate(s, batch) for s in d["sym_shape"])
        kind = d["kind"]
        if kind == "input" and d["target"] in arg_shapes:
            got = arg_shapes[d["target"]]
        elif kind == "op":
            attrs = dict(d["attrs"])
            if "shape" in attrs:
                attrs["shape"] = want
            try:
                got = tuple(get_op(d["op"]).shape(*[shapes[a] for a in d["args"]], **attrs))
            except Exception as err:  # noqa: BLE001 - the rule refuses: not valid here
                return f"node {n} ({d['op']}) cannot run at batch {batch}: {err}"
        elif region_of(d) is not None:
            feeds = region_of(d).feeds(d, None)
            for field, body in bodies_of(d):
                why = _check(body, batch, {i: shapes[a] for i, a in enumerate(feeds)})
                if why:
                    return f"{field} of {d['kind']} {n}: {why}"
            got = want
        elif kind == "item":
            region = graph.node(d["args"][0])
            got = shapes[region_of(region).feeds(region, None)[d["target"]]] \
                if region["kind"] == "while" else want
        else:
            got = want
        if got != want:
            return f"node {n} has shape {got} at batch {batch}, not {want}"
        shapes[n] = got
    return ""


def analyse_batch(module, inputs, traced: Graph, optimize) -> BatchAnalysis:
    """Decide whether ``module``'s compiled code can take any batch size.

    ``traced`` is the trace at the real inputs and ``optimize`` the pass pipeline; the
    result's graph is the optimized probe graph with ``sym_shape`` on every node."""
    if not inputs or any(x.ndim == 0 for x in inputs):
        return BatchAnalysis(None, False, "an input has no batch dimension")
    if len({x.shape[0] for x in inputs}) != 1:
        # The probes give every input the same leading size; with different leading
        # sizes those dimensions are not one batch dimension.
        return BatchAnalysis(None, False, "inputs have different leading sizes")
    batch = inputs[0].shape[0]
    if batch < MIN_GENERIC_BATCH:
        return BatchAnalysis(None, False, f"batch size {batch} is compiled exactly")
    try:
        g1 = trace(module, *[_probe(x, PROBES[0]) for x in inputs])
        g2 = trace(module, *[_probe(x, PROBES[1]) for x in inputs])
    except Exception as err:  # noqa: BLE001 - any failure just means "exact sizes"
        return BatchAnalysis(None, False, f"probing other batch sizes failed: {err}")
    reads = g1.shape_reads or g2.shape_reads or traced.shape_reads
    if reads:
        return BatchAnalysis(None, False, f"forward reads tensor sizes as Python values "
                                          f"({reads[0]})")
    o1, o2 = optimize(g1), optimize(g2)
    why = _annotate(o1, o2, *PROBES)
    if not why:
        why = _agrees(o1, optimize(traced), batch)
        why = why and f"the real trace differs from the probes: {why}"
    if why:
        return BatchAnalysis(None, False, why)
    return BatchAnalysis(o1, True)
