"""``Graph``: a traced forward as data, held in a ``networkx.DiGraph``.

Nodes are integers, numbered in creation order (deterministic). Each node's
attributes are plain values:

=========  ==================================================================
kind       ``input`` | ``param`` | ``buffer`` | ``constant`` | ``op`` | ``output``
op         op-table name (``op`` nodes only)
attrs      the op's attributes as a sorted tuple of (name, value) pairs
args       argument node ids in order (DiGraph edges have no order; this has)
shape      tuple of ints
dtype      NumPy dtype name (``"float32"``)
source     ``file:line: code`` in ``forward`` that created the node
module     dotted path of the submodule whose ``forward`` created it
target     parameter/buffer/constant name (``0.weight``); input position for inputs
no_grad    (op nodes, optional) computed under ``no_grad()`` inside forward: no gradient
           flows through it, as in eager
spec       (output node) how the output leaves nest (see :mod:`fusionnet.structure`)
requires_grad  (input and output nodes) whether eager's value requires grad
=========  ==================================================================

``param``/``buffer`` nodes (and module-attribute constants) point at the live
tensor in ``ref`` so later weight updates are seen; ``ref`` is excluded from
:meth:`Graph.content_hash`. Literal constants keep their array in ``value``.
An edge ``u -> v`` has attribute ``slots``: the positions of ``u`` in ``v``'s args.
"""
from __future__ import annotations

import hashlib
import json
import os
import re

import networkx as nx
import numpy as np

from .structure import describe

__all__ = ["Graph", "GraphBreak", "NODE_KINDS"]

NODE_KINDS = ("input", "param", "buffer", "constant", "op", "group", "output")


class GraphBreak(RuntimeError):
    """Tracing stopped: ``forward`` needed a traced value as a Python value.

    Attributes: ``reason`` (what was asked for), ``source`` (``file:line: code``),
    and ``graph`` (what had been traced up to the break).
    """

    def __init__(self, reason: str, source: str, graph=None):
        super().__init__(f"graph break: {reason} at {source}")
        self.reason = reason
        self.source = source
        self.graph = graph


class Graph:
    """A dataflow graph of op-table calls; see the module docstring for node attributes."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.nx = nx.DiGraph()
        self.breaks: list[GraphBreak] = []
        self.notes: list[str] = []  # decisions made by passes, for `explain`
        self.buffers: dict[int, tuple] = {}  # buffer slot -> (nbytes, dtype), see plan_buffers
        self.shape_reads: list[str] = []  # user-code lines that read traced sizes
        self.input_mutations: list[str] = []  # lines where forward wrote into an input
        self.grad_enabled = False  # the grad mode the graph was traced under
        self.reads = None  # what the trace read from Python (a pystate.Recorder), if traced
        self._next_id = 0

    # ---- building ------------------------------------------------------------------------

    def add_node(self, kind: str, *, args=(), shape=(), dtype="float32", **attrs) -> int:
        """Add a node of ``kind`` reading ``args``; returns its id."""
        if kind not in NODE_KINDS:
            raise ValueError(f"unknown node kind {kind!r}")
        nid = self._next_id
        self._next_id += 1
        attrs.setdefault("attrs", ())
        self.nx.add_node(nid, kind=kind, args=tuple(args), shape=tuple(shape),
                         dtype=str(np.dtype(dtype)), **attrs)
        for pos, a in enumerate(args):
            if a not in self.nx:
                raise KeyError(f"node {nid} reads unknown node {a}")
            if self.nx.has_edge(a, nid):
                self.nx.edges[a, nid]["slots"] += (pos,)
            else:
                self.nx.add_edge(a, nid, slots=(pos,))
        return nid

    def copy(self) -> "Graph":
        """A structural copy (node attribute dicts copied; live refs shared)."""
        g = Graph(self.name)
        g.nx = self.nx.copy()
        for n in g.nx:
            g.nx.nodes[n].update(dict(self.nx.nodes[n]))
        g.breaks = list(self.breaks)
        g.notes = list(self.notes)
        g.buffers = dict(self.buffers)
        g.shape_reads = list(self.shape_reads)
        g.input_mutations = list(self.input_mutations)
        g.grad_enabled = self.grad_enabled
        g.reads = self.reads
        g._next_id = self._next_id
        return g

    # ---- rewriting (used by passes on their own copy) ----------------------------------

    def set_args(self, nid: int, args) -> None:
        """Give node ``nid`` new arguments, keeping edges (and their slots) consistent."""
        for a in list(self.nx.predecessors(nid)):
            self.nx.remove_edge(a, nid)
        self.nx.nodes[nid]["args"] = tuple(args)
        for pos, a in enumerate(args):
            if self.nx.has_edge(a, nid):
                self.nx.edges[a, nid]["slots"] += (pos,)
            else:
                self.nx.add_edge(a, nid, slots=(pos,))

    def replace_uses(self, old: int, new: int) -> None:
        """Make every reader of ``old`` read ``new`` instead."""
        for user in self.users(old):
            args = tuple(new if a == old else a for a in self.nx.nodes[user]["args"])
            self.set_args(user, args)

    def remove_node(self, nid: int) -> None:
        """Delete a node that nothing reads any more."""
        if self.users(nid):
            raise ValueError(f"node {nid} still has readers {self.users(nid)}")
        self.nx.remove_node(nid)

    # ---- reading -------------------------------------------------------------------------

    def node(self, nid: int) -> dict:
        """The attribute dict of node ``nid``."""
        return self.nx.nodes[nid]

    def order(self) -> list[int]:
        """Node ids in a deterministic topological order (ties broken by id)."""
        return list(nx.lexicographical_topological_sort(self.nx, key=lambda n: n))

    def nodes_of(self, kind: str) -> list[int]:
        """Ids of the nodes of one kind, in topological order."""
        return [n for n in self.order() if self.nx.nodes[n]["kind"] == kind]

    @property
    def inputs(self) -> list[int]:
        """Input placeholder ids, by position."""
        return sorted(self.nodes_of("input"), key=lambda n: self.nx.nodes[n]["target"])

    @property
    def output(self) -> int:
        """The id of the output node."""
        outs = self.nodes_of("output")
        if len(outs) != 1:
            raise ValueError(f"graph {self.name!r} has {len(outs)} output nodes")
        return outs[0]

    def users(self, nid: int) -> list[int]:
        """Nodes that read ``nid``."""
        return sorted(self.nx.successors(nid))

    def op_counts(self) -> dict[str, int]:
        """How many op nodes there are of each op name."""
        counts: dict[str, int] = {}
        for n in self.nodes_of("op"):
            name = self.nx.nodes[n]["op"]
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def complete(self) -> bool:
        """False when tracing met a graph break: such a graph must not be run."""
        return not self.breaks

    # ---- identity ------------------------------------------------------------------------

    def content_hash(self) -> str:
        """A stable hash of structure, ops, attributes, shapes, dtypes and literal constants.

        Live references (parameter values) are left out: the same graph with new
        weights has the same hash, so compiled code keyed by it stays valid.
        """
        h = hashlib.sha256()
        for n in self.order():
            d = self.nx.nodes[n]
            row = {k: _plain(d[k]) for k in sorted(d)
                   if k not in ("ref", "value", "source", "body", "members", "spec")}
            if "spec" in d:
                row["spec"] = describe(d["spec"])
            h.update(json.dumps([n, row], sort_keys=True, default=repr).encode())
            if "body" in d:
                h.update(d["body"].content_hash().encode())
            if "value" in d:
                arr = np.ascontiguousarray(d["value"])
                h.update(str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())
        return h.hexdigest()[:16]

    # ---- running and printing ------------------------------------------------------------

    def run(self, *inputs):
        """Execute the graph with the reference interpreter (the oracle for every stage)."""
        from .interpreter import run  # noqa: PLC0415 - interpreter imports graph

        return run(self, *inputs)

    def __str__(self) -> str:
        header = ("id", "kind", "op / target", "args", "shape", "dtype", "source")
        rows = [header]
        for n in self.order():
            d = self.nx.nodes[n]
            what = d.get("op") or (f"{d['group_kind']}[{'+'.join(d['ops'])}]"
                                   if d["kind"] == "group" else str(d.get("target", "")))
            if d.get("buffer") is not None:
                what += f" @buf{d['buffer']}"
            if d.get("attrs"):
                what += "(" + ", ".join(f"{k}={_short(v)}" for k, v in d["attrs"]) + ")"
            src = _short_source(d.get("source", ""))
            rows.append((str(n), d["kind"], what, ",".join(map(str, d["args"])),
                         "x".join(map(str, d["shape"])) or "()", d["dtype"], src))
        widths = [min(max(len(r[i]) for r in rows), 48) for i in range(len(header))]
        lines = [f"Graph {self.name} ({self.nx.number_of_nodes()} nodes, hash "
                 f"{self.content_hash()})"]
        for r in rows:
            lines.append("  ".join(c[:48].ljust(w) for c, w in zip(r, widths)).rstrip())
        for b in self.breaks:
            lines.append(f"graph break: {b.reason} at {b.source}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<Graph {self.name}: {self.nx.number_of_nodes()} nodes, "
                f"{len(self.nodes_of('op'))} ops, {len(self.breaks)} breaks>")


def _short_source(source: str) -> str:
    """``/long/path/file.py:12: code`` -> ``file.py:12: code``."""
    match = re.match(r"^(.*?):(\d+): (.*)$", source)
    if not match:
        return source
    return f"{os.path.basename(match.group(1))}:{match.group(2)}: {match.group(3)}"


def _plain(v):
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, np.dtype):
        return str(v)
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


def _short(v) -> str:
    if isinstance(v, np.dtype):
        return str(v)
    text = repr(v)
    return text if len(text) <= 24 else text[:21] + "..."
