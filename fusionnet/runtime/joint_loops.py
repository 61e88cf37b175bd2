"""The backward of a ``while`` region, recorded as loops (for ``joint.walk``).

A traced loop ``s_{k+1} = F(s_k, c)`` for ``k < n`` (``n`` data-dependent) has the
backward ``g_k = dF/ds(s_k)^T g_{k+1}`` from ``k = n - 1`` down to 0, with the
captures' gradients summed over iterations. It is recorded with the tracer's own
``while_region``, so it compiles like any loop:

1. a loop that counts the iterations (``n``), replaying the forward body;
2. a loop over ``k = n - 1 .. 0`` whose body recomputes ``s_k`` by an inner loop from
   the initial state (nothing per iteration is stored: the cost is quadratic in ``n``,
   fine for the short data-dependent loops of the chapter, and memory stays constant),
   replays ``F`` once more with gradients tracked and back-propagates ``g_{k+1}``
   through it.

Refused (the backward then replays eagerly): parameters that need a gradient inside
the body, and regions nested in it.
"""
from __future__ import annotations

import numpy as np

from .. import autograd
from ..interpreter import run
from ..tensor import Tensor
from .joint import NotDifferentiable, value_of, walk

__all__ = ["backward_while"]


def _zeros_like(t: Tensor) -> Tensor:
    # Exact zeros computed from t (a literal would be folded into batch-sized constants).
    return (t != t).logical_and(t == t).to(t.dtype)


def _check_body(body) -> None:
    for m in body.order():
        d = body.node(m)
        if d["kind"] in ("while", "cond", "group"):
            raise NotDifferentiable("a loop nested in a loop on the gradient path")
        if d["kind"] in ("param", "buffer") and not d.get("detach") and d["ref"].requires_grad:
            raise NotDifferentiable("a parameter that needs a gradient is used inside a "
                                    "data-dependent loop")


def backward_while(tracer, n: int, d, item_grads: dict, grads: dict) -> None:
    """Record the backward of while region ``n`` (record ``d``): ``item_grads`` holds the
    gradient of each result (by position); the gradients of its initial state and
    captures are added to ``grads``."""
    body, cond = d["body"], d["cond"]
    _check_body(body)
    _check_body(cond)
    k = len(d["outs"])
    state_args, cap_args = list(d["args"][:k]), list(d["args"][k:])
    init = [value_of(tracer, a) for a in state_args]
    caps = [value_of(tracer, a) for a in cap_args]
    floats = [i for i in range(k) if init[i]._data.dtype.kind == "f"]
    wants = [j for j, a in enumerate(cap_args) if tracer.grad.get(a, False)]

    def forward(s):
        return list(run(body, *s, *caps))[:-1]

    def test(s):
        return run(cond, *s, *caps)[0]

    zero = Tensor._wrap(np.zeros((), np.int64))
    counted = tracer.while_region(lambda c, *s: test(list(s)),
                                  lambda c, *s: (c + 1, *forward(list(s))),
                                  [zero, *init], ["<count>"] + [f"s{i}" for i in range(k)],
                                  None)
    trips = counted[0]
    gs0 = [item_grads.get(i) if item_grads.get(i) is not None else _zeros_like(init[i])
           for i in floats]
    gc0 = [_zeros_like(caps[j]) for j in wants]

    def step(left, *rest):
        gs, gc = list(rest[:len(floats)]), list(rest[len(floats):])
        here = left - 1
        redone = tracer.while_region(lambda i, *s: i < here,
                                     lambda i, *s: (i + 1, *forward(list(s))),
                                     [zero, *init], ["<i>"] + [f"s{i}" for i in range(k)],
                                     None)
        s_here = list(redone[1:])
        nodes = [tracer.node_for(t) for t in s_here]
        for i in floats:
            tracer.grad[nodes[i]] = True
        with autograd.enable_grad():
            new = forward(s_here)
        seeds = {}
        for idx, i in enumerate(floats):
            nid = tracer.node_for(new[i])
            if tracer.grad.get(nid, False):
                seeds[nid] = gs[idx] if nid not in seeds else seeds[nid] + gs[idx]
        stop = {nodes[i] for i in floats}
        with autograd.no_grad():
            leaves = walk(tracer, seeds, stop=stop) if seeds else {}
            out_gs = [leaves[nodes[i]] if nodes[i] in leaves else _zeros_like(s_here[i])
                      for i in floats]
            out_gc = []
            for pos, j in enumerate(wants):
                cid = tracer.node_for(caps[j])
                out_gc.append(gc[pos] + leaves[cid] if cid in leaves else gc[pos])
        return (here, *out_gs, *out_gc)

    done = tracer.while_region(lambda left, *rest: left > 0, step, [trips, *gs0, *gc0],
                               ["<left>"] + [f"g{i}" for i in floats] +
                               [f"c{j}" for j in wants], None)
    results = list(done[1:])
    for idx, i in enumerate(floats):
        a = state_args[i]
        if tracer.grad.get(a, False):
            g = results[idx]
            grads[a] = g if a not in grads else grads[a] + g
    for pos, j in enumerate(wants):
        a = cap_args[j]
        g = results[len(floats) + pos]
        grads[a] = g if a not in grads else grads[a] + g
