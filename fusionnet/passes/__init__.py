"""Optimizer passes: small pure functions ``Graph -> Graph``, one per module.

The default pipeline is the list below, run in order by :func:`optimize`.
Each pass copies the graph it is given, so the input is never mutated.
Switch passes off by name with ``optimize(g, disable=[...])`` or the
environment variable ``FUSIONNET_DISABLE_PASSES=name,name``; set
``FUSIONNET_DEBUG_PASSES=1`` to verify the graph after every pass and
``FUSIONNET_DUMP_DIR=dir`` to write each stage's table there.
"""
from __future__ import annotations

import importlib
import os

from ..graph import Graph, GraphBreak
from .verify import GraphInvalid, verify

__all__ = ["DEFAULT_PIPELINE", "optimize", "get_pass", "verify", "GraphInvalid"]

#: The default pipeline: cleanups first, then fusion by op kind, then memory.
DEFAULT_PIPELINE = [
    "fold_constants",
    "eliminate_common_subexpressions",
    "simplify_algebra",
    "eliminate_dead_code",
    "fuse_gemm_epilogues",
    "fuse_reductions",
    "fuse_elementwise",
    "plan_buffers",
]


def get_pass(name: str):
    """The pass function called ``name`` (from ``fusionnet/passes/<name>.py``)."""
    if name not in DEFAULT_PIPELINE:
        raise KeyError(f"unknown pass {name!r}; known passes: {DEFAULT_PIPELINE}")
    return getattr(importlib.import_module(f"{__name__}.{name}"), name)


def _env_list(var: str) -> list[str]:
    return [p.strip() for p in os.environ.get(var, "").split(",") if p.strip()]


def optimize(graph: Graph, passes=None, disable=(), debug: bool | None = None,
             dump_dir: str | None = None) -> Graph:
    """Run ``passes`` (default: :data:`DEFAULT_PIPELINE`) over ``graph``; return the result.

    ``disable`` (and ``FUSIONNET_DISABLE_PASSES``) removes passes by name.
    With ``debug`` (or ``FUSIONNET_DEBUG_PASSES=1``) every intermediate graph is
    checked by :func:`verify`; with ``dump_dir`` (or ``FUSIONNET_DUMP_DIR``)
    each stage is written to ``NN-<pass>.txt`` there.
    """
    if not graph.complete:
        first = graph.breaks[0]
        raise GraphBreak(f"cannot optimize incomplete graph {graph.name!r} "
                         f"({first.reason})", first.source)
    names = list(DEFAULT_PIPELINE if passes is None else passes)
    off = set(disable) | set(_env_list("FUSIONNET_DISABLE_PASSES"))
    unknown = off - set(DEFAULT_PIPELINE)
    if unknown:
        raise KeyError(f"cannot disable unknown passes {sorted(unknown)}")
    if debug is None:
        debug = os.environ.get("FUSIONNET_DEBUG_PASSES") == "1"
    dump_dir = dump_dir or os.environ.get("FUSIONNET_DUMP_DIR")
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)
        _dump(dump_dir, 0, "traced", graph)
    for step, name in enumerate(names, start=1):
        if name in off:
            continue
        graph = get_pass(name)(graph)
        if debug:
            verify(graph, after=name)
        if dump_dir:
            _dump(dump_dir, step, name, graph)
    return graph


def _dump(folder: str, step: int, name: str, graph: Graph) -> None:
    with open(os.path.join(folder, f"{step:02d}-{name}.txt"), "w", encoding="utf-8") as fh:
        fh.write(str(graph) + "\n")
