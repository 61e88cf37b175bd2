"""Optimizer passes: small pure functions ``Graph -> Graph``, one per module.

The default pipeline is :data:`DEFAULT_PIPELINE`, a plain list of those functions,
run in order by :func:`optimize`; any other ``Graph -> Graph`` callable can be put in
a pipeline too (``optimize(g, passes=[my_pass, *DEFAULT_PIPELINE])``). Each pass
copies the graph it is given, so the input is never mutated. A pass that raises is
reported as ``PassError: pass X failed (after A, B)``.

Regions whose kind says so (control-flow bodies, not fused kernels: see
:mod:`fusionnet.regions`) are optimized from the inside out: the pipeline runs on
each body before it runs on the graph that holds it.

Switch passes off by name with ``optimize(g, disable=[...])`` or the
environment variable ``FUSIONNET_DISABLE_PASSES=name,name``; set
``FUSIONNET_DEBUG_PASSES=1`` to verify the graph after every pass and
``FUSIONNET_DUMP_DIR=dir`` to write each stage's table there.
"""
from __future__ import annotations

import os
from typing import Callable

from ..graph import Graph, GraphBreak
from ..regions import REGIONS, bodies_of
from .eliminate_common_subexpressions import eliminate_common_subexpressions
from .eliminate_dead_code import eliminate_dead_code
from .eliminate_dead_loop_state import eliminate_dead_loop_state
from .fold_constants import fold_constants
from .fuse_elementwise import fuse_elementwise
from .fuse_gemm_epilogues import fuse_gemm_epilogues
from .fuse_reductions import fuse_reductions
from .plan_buffers import plan_buffers
from .simplify_algebra import simplify_algebra
from .verify import GraphInvalid, verify

__all__ = ["DEFAULT_PIPELINE", "optimize", "get_pass", "verify", "GraphInvalid", "PassError",
           "pass_name"]

#: The default pipeline: cleanups first, then fusion by op kind, then memory.
DEFAULT_PIPELINE: list[Callable[[Graph], Graph]] = [
    fold_constants,
    eliminate_common_subexpressions,
    simplify_algebra,
    eliminate_dead_loop_state,
    eliminate_dead_code,
    fuse_gemm_epilogues,
    fuse_reductions,
    fuse_elementwise,
    plan_buffers,
]


class PassError(RuntimeError):
    """A pass raised; the message names it, the passes before it and the graph."""


def pass_name(p) -> str:
    """The name a pass is known by (its function name)."""
    return getattr(p, "__name__", None) or type(p).__name__


def get_pass(name: str) -> Callable[[Graph], Graph]:
    """The default-pipeline pass called ``name``."""
    for p in DEFAULT_PIPELINE:
        if pass_name(p) == name:
            return p
    raise KeyError(f"unknown pass {name!r}; known passes: "
                   f"{[pass_name(p) for p in DEFAULT_PIPELINE]}")


def _env_list(var: str) -> list[str]:
    return [p.strip() for p in os.environ.get(var, "").split(",") if p.strip()]


def optimize(graph: Graph, passes=None, disable=(), debug: bool | None = None,
             dump_dir: str | None = None) -> Graph:
    """Run ``passes`` (default: :data:`DEFAULT_PIPELINE`) over ``graph``; return the result.

    ``passes`` holds ``Graph -> Graph`` callables or the names of default passes.
    ``disable`` (and ``FUSIONNET_DISABLE_PASSES``) removes passes by name.
    With ``debug`` (or ``FUSIONNET_DEBUG_PASSES=1``) every intermediate graph is
    checked by :func:`verify`; with ``dump_dir`` (or ``FUSIONNET_DUMP_DIR``)
    each stage is written to ``NN-<pass>.txt`` there.
    """
    if not graph.complete:
        first = graph.breaks[0]
        raise GraphBreak(f"cannot optimize incomplete graph {graph.name!r} "
                         f"({first.reason})", first.source)
    pipeline = [get_pass(p) if isinstance(p, str) else p
                for p in (DEFAULT_PIPELINE if passes is None else passes)]
    for p in pipeline:
        if not callable(p):
            raise TypeError(f"optimize: a pass must be a Graph -> Graph callable, got {p!r}")
    off = set(disable) | set(_env_list("FUSIONNET_DISABLE_PASSES"))
    unknown = off - {pass_name(p) for p in DEFAULT_PIPELINE} - {pass_name(p) for p in pipeline}
    if unknown:
        raise KeyError(f"cannot disable unknown passes {sorted(unknown)}")
    if debug is None:
        debug = os.environ.get("FUSIONNET_DEBUG_PASSES") == "1"
    dump_dir = dump_dir or os.environ.get("FUSIONNET_DUMP_DIR")
    run = [p for p in pipeline if pass_name(p) not in off]
    graph = _optimize_bodies(graph, lambda body: optimize(body, passes=run, debug=debug))
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)
        _dump(dump_dir, 0, "traced", graph)
    done: list[str] = []
    for step, p in enumerate(pipeline, start=1):
        name = pass_name(p)
        if name in off:
            continue
        try:
            result = p(graph)
        except Exception as err:
            raise PassError(f"pass {name} failed (after {', '.join(done) or 'no other pass'}) "
                            f"on graph {graph.name!r}: {type(err).__name__}: {err}") from err
        if not isinstance(result, Graph):
            raise PassError(f"pass {name} returned {type(result).__name__}, not a Graph")
        graph = result
        done.append(name)
        if debug:
            verify(graph, after=name)
        if dump_dir:
            _dump(dump_dir, step, name, graph)
    return graph


def _optimize_bodies(graph: Graph, optimize_body) -> Graph:
    """``graph`` with every body of an open region (``optimize_inside``) optimized."""
    open_regions = [n for n in graph.regions() if REGIONS[graph.node(n)["kind"]].optimize_inside]
    if not open_regions:
        return graph
    g = graph.copy()
    for n in open_regions:
        for field, body in bodies_of(g.node(n)):
            g.node(n)[field] = optimize_body(body)
    return g


def _dump(folder: str, step: int, name: str, graph: Graph) -> None:
    with open(os.path.join(folder, f"{step:02d}-{name}.txt"), "w", encoding="utf-8") as fh:
        fh.write(str(graph) + "\n")
