"""Region kinds: graph nodes that hold graphs of their own (*bodies*).

A fused kernel is a region (``group``: one ``body``, the ops it computes); so are
control-flow constructs (a loop holds its condition and its body). Each kind is
declared once here; the interpreter, the pass manager, verification, hashing,
lowering and ``export_graph`` read the declaration instead of knowing the kinds:

* ``bodies`` — the node fields that hold body graphs, in a fixed order;
* ``optimize_inside`` — whether the pass pipeline also runs on the bodies (a
  loop body: yes; a fused kernel: no, its body is what fusion produced);
* ``run(node, args, run_graph)`` — the node's value given its argument values,
  for the reference interpreter (``run_graph(body, *inputs)`` runs a body);
* ``kernel`` — the region is one fused kernel (its body is computed inside one loop
  nest), as opposed to control flow the driver runs;
* ``loop_state`` — the region is a loop carrying state: its args start with one
  initial value per result (``outs``), every body takes that state then the captured
  values, ``cond`` returns the condition and ``body`` the new state then the next
  condition (``eliminate_dead_loop_state`` drops state nothing reads);
* ``feeds(node, field)`` — for each input of that body (by ``target``), the outer
  node that feeds it, or None when the region itself does (a loop's carried state
  on later iterations); pictures and analyses follow values through it.

A body graph's ``input`` nodes are numbered by ``target``; what they receive is
the region kind's business (a group's body receives the group's arguments).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["RegionKind", "REGIONS", "register_region", "region_of", "bodies_of"]


@dataclass(frozen=True)
class RegionKind:
    """The declaration of one region node kind (see the module docstring)."""

    name: str
    bodies: tuple
    optimize_inside: bool
    run: Callable
    doc: str
    feeds: Callable = lambda node, field: list(node["args"])
    kernel: bool = False
    loop_state: bool = False


#: kind name -> its declaration.
REGIONS: dict[str, RegionKind] = {}


def register_region(kind: RegionKind) -> RegionKind:
    """Declare a region kind (names are unique)."""
    if kind.name in REGIONS:
        raise ValueError(f"region kind {kind.name!r} registered twice")
    REGIONS[kind.name] = kind
    return kind


def region_of(node) -> RegionKind | None:
    """The declaration of ``node``'s kind, or None for plain nodes."""
    return REGIONS.get(node["kind"])


def bodies_of(node) -> list:
    """``[(field, body graph), ...]`` of a region node (empty for plain nodes)."""
    kind = REGIONS.get(node["kind"])
    return [] if kind is None else [(f, node[f]) for f in kind.bodies if f in node]


register_region(RegionKind(
    "group", ("body",), optimize_inside=False,
    run=lambda node, args, run_graph: run_graph(node["body"], *args),
    doc="a fused kernel: its body computes the group's value from its arguments",
    kernel=True))


def _run_while(node, args, run_graph):
    k = len(node["outs"])
    state, caps = list(args[:k]), list(args[k:])
    (c,) = run_graph(node["cond"], *state, *caps)
    while bool(c):
        out = run_graph(node["body"], *state, *caps)
        state, c = list(out[:-1]), out[-1]
    return tuple(state)


register_region(RegionKind(
    "while", ("cond", "body"), optimize_inside=True, run=_run_while,
    doc="a loop: args are the initial state then captured values; `cond` maps (state, "
        "captures) to a bool, `body` to (new state..., the next bool); one `item` node per "
        "state variable reads the final state",
    feeds=lambda node, field: list(node["args"]), loop_state=True))


def _run_cond(node, args, run_graph):
    c, rest = args[0], list(args[1:])
    return tuple(run_graph(node["then"] if bool(c) else node["else"], *rest))


register_region(RegionKind(
    "cond", ("then", "else"), optimize_inside=True, run=_run_cond,
    doc="a two-way branch: args are the condition, then the state and captured values both "
        "branches read; each branch returns the new state; `item` nodes read it",
    feeds=lambda node, field: list(node["args"][1:])))
