"""Gradients of a compiled forward.

The compiled driver computes values only. When an output requires grad (as eager's
would: the signature includes the grad mode and each input's ``requires_grad``), the
output gets one autograd node whose gradient replays the traced graph through the op
table's eager implementations with autograd on and back-propagates through it. The
graph carries eager's stops (``no_grad`` nodes, ``detach`` nodes), so gradients stop
where eager's do. Parameter gradients accumulate into their ``.grad`` directly.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import autograd
from ..interpreter import run as run_graph
from ..ops import Kind, Op
from ..tensor import Tensor

__all__ = ["attach", "graph_at", "run_with_grad"]


def _grad_op(runner) -> Op:
    op = runner.__dict__.get("_grad_op")
    if op is None:
        op = Op(f"fused_{runner.name}", Kind.OPAQUE, None, None, None, None, _fused_grad,
                f"the compiled forward of {runner.name}",
                saves=lambda needs: (tuple(range(len(needs))), False))
        runner._grad_op = op
    return op


def attach(runner, entry, outs, args) -> None:
    """Give the single output ``outs[0]`` the autograd node of the compiled forward."""
    out = outs[0]
    needs = tuple(bool(t.requires_grad) for t in args)
    # The replay reads every input: those eager's backward reads are version-checked as
    # eager checks them; the others are copied now, so a later in-place write into one
    # changes neither the gradient nor raises where eager does not.
    eager_reads = getattr(entry.traced, "saved_inputs", None) or (True,) * len(args)
    saved = tuple((t, t._version[0], f"input {i}") for i, t in enumerate(args)
                  if eager_reads[i])
    copies = {i: t._data.copy() for i, t in enumerate(args) if not eager_reads[i]}
    out_alias = None
    if getattr(entry.traced, "saved_outputs", (False,))[0]:
        # The eager backward reads this output's storage (a relu's result, or a view of
        # it): writing into it before backward must fail here as it fails there.
        out_alias = Tensor._wrap(out._data, version=out._version)
        saved += ((out_alias, out._version[0], "output 0"),)
    out.requires_grad = True
    if not saved:  # something for the engine to free: a second backward must raise
        sentinel = Tensor._wrap(np.empty(0, np.float32))
        saved = ((sentinel, sentinel._version[0], "saved values"),)
    out._ctx = autograd.Node(_grad_op(runner), tuple(args), {"runner": runner, "entry": entry,
                             "copies": copies}, out_alias, saved, needs)


def graph_at(runner, args):
    """The traced graph for exactly these input shapes, traced with grad enabled."""
    from .runner import eager_region  # noqa: PLC0415 - runner imports this module

    key = (runner.module.training, *[(t._data.shape, t._data.dtype, type(t._data),
                                      bool(t.requires_grad)) for t in args])
    cache: OrderedDict = runner.backward_graphs
    graph = cache.get(key)
    if graph is None:
        from ..tracer import trace  # noqa: PLC0415

        with eager_region(), autograd.enable_grad():
            graph = trace(runner.module, *args)
        cache[key] = graph
        if len(cache) > runner.cache_size:
            cache.popitem(last=False)
    return graph


def _graph_for(runner, entry, args):
    traced = entry.traced if entry is not None else None
    if traced is not None and traced.grad_enabled and all(
            tuple(t.shape) == traced.node(n)["shape"] for t, n in zip(args, traced.inputs)):
        return traced  # the forward's own trace: no second trace
    return graph_at(runner, args)


def run_with_grad(runner, entry, args):
    """Run the traced graph through the op table with autograd (several outputs)."""
    return run_graph(_graph_for(runner, entry, args), *args)


def _fused_grad(g, *inputs, needs, runner, entry=None, copies=None, **_):
    """Backward of a compiled forward: replay the traced graph eagerly with autograd on
    (on the inputs as they were at forward time), then back-propagate ``g`` through it."""
    graph = _graph_for(runner, entry, inputs)
    copies = copies or {}
    arrays = [copies.get(i, t._data) for i, t in enumerate(inputs)]
    leaves = [Tensor._wrap(a).requires_grad_(True) if need else Tensor._wrap(a)
              for a, need in zip(arrays, needs)]
    with autograd.enable_grad():
        out = run_graph(graph, *leaves)
        if out.requires_grad:
            autograd.backward(out, g)
    return tuple(leaf.grad if need else None for leaf, need in zip(leaves, needs))
