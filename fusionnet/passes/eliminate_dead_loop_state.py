"""``eliminate_dead_loop_state``: stop carrying loop state nothing reads.

Before -> after (``y`` is carried but never read after the loop)::

    w = while(x, y0) { x / 2, y + x/2 }     w = while(x) { x / 2 }
    r0 = item 0 of w                 ->     r0 = item 0 of w
    r1 = item 1 of w   (no readers)         output(r0 * 3)
    output(r0 * 3)

A carried variable is live when a reader outside reads its result, when the loop's
condition reads it, when the next condition computed in the body reads it, or when the
new value of a live variable is computed from it. The others are dropped from the
loop's arguments, results and bodies (their per-trip work goes with them), unless
computing them may raise on their values (``Op.value_errors``), which eager would do.
Region kinds say whether they carry state (``RegionKind.loop_state``); the pass never
looks at a kind's name. The trip count the tracer adds to decide whether a result is
the caller's own tensor (``tracer._select_passthrough``) is one such variable when the
output does not need it.
"""
from __future__ import annotations

import networkx as nx

from ..graph import Graph
from ..regions import region_of
from .eliminate_dead_code import eliminate_dead_code, may_raise_on_values

__all__ = ["eliminate_dead_loop_state"]


def eliminate_dead_loop_state(graph: Graph) -> Graph:
    """A copy of ``graph`` whose loops carry only the state something reads."""
    g = graph.copy()
    dropped = []
    for n in g.regions():
        d = g.node(n)
        kind = region_of(d)
        if not kind.loop_state:
            continue
        dead = _dead_states(g, n)
        if dead:
            _drop(g, n, dead)
            dropped.append(f"{n}: {len(dead)} of {len(dead) + len(g.node(n)['outs'])}")
    if dropped:
        g.notes.append("eliminate_dead_loop_state: dropped carried state of loop "
                       + ", ".join(dropped))
    return g


def _input_targets(body: Graph, leaves, limit: int) -> set:
    """The state inputs (targets below ``limit``) that ``leaves`` of ``body`` depend on."""
    found = set()
    for leaf in leaves:
        for a in nx.ancestors(body.nx, leaf) | {leaf}:
            d = body.node(a)
            if d["kind"] == "input" and d["target"] < limit:
                found.add(d["target"])
    return found


def _raises(body: Graph, leaf) -> bool:
    return any(may_raise_on_values(body.node(a)) for a in nx.ancestors(body.nx, leaf) | {leaf})


def _dead_states(g: Graph, n: int) -> list:
    d = g.node(n)
    count = len(d["outs"])
    body, cond = d["body"], d["cond"]
    results = body.node(body.output)["args"]
    live = {g.node(u)["target"] for u in g.users(n)
            if g.node(u)["kind"] == "item" and g.users(u)}
    live |= _input_targets(cond, [cond.output], count)
    live |= _input_targets(body, [results[count]], count)  # the next condition
    live |= {k for k in range(count) if _raises(body, results[k])}
    todo = list(live)
    while todo:
        for k in _input_targets(body, [results[todo.pop()]], count) - live:
            live.add(k)
            todo.append(k)
    return [k for k in range(count) if k not in live]


def _drop(g: Graph, n: int, dead: list) -> None:
    """Remove state ``dead`` from loop ``n`` of ``g`` (its bodies are copied first)."""
    d = g.node(n)
    count = len(d["outs"])
    keep = [k for k in range(count) if k not in dead]
    renumber = {old: new for new, old in enumerate(
        keep + list(range(count, len(d["args"]))))}
    for item in [u for u in g.users(n) if g.node(u)["kind"] == "item"]:
        target = g.node(item)["target"]
        if target in dead:
            g.remove_node(item)  # no readers (it is dead)
        else:
            g.node(item)["target"] = renumber[target]
    args = d["args"]
    g.set_args(n, [args[k] for k in keep] + list(args[count:]))
    d["outs"] = tuple(d["outs"][k] for k in keep)
    body = d["body"].copy()
    out = body.node(body.output)
    results = out["args"]
    body.set_args(body.output, [results[k] for k in keep] + [results[count]])
    out["spec"] = ("tuple", ("T",) * (len(keep) + 1))
    if "requires_grad" in out:
        grads = tuple(out["requires_grad"])
        out["requires_grad"] = tuple(grads[k] for k in keep) + grads[count:count + 1]
    d["body"] = _renumber_inputs(eliminate_dead_code(body), renumber)
    d["cond"] = _renumber_inputs(d["cond"].copy(), renumber)


def _renumber_inputs(body: Graph, renumber: dict) -> Graph:
    """Drop the inputs of dropped state (nothing reads them now) and renumber the rest."""
    for i in list(body.inputs):
        target = body.node(i)["target"]
        if target not in renumber:
            body.remove_node(i)
        else:
            body.node(i)["target"] = renumber[target]
    body._order = None
    return body
