"""``Graph``: a traced forward as data, held in a ``networkx.DiGraph``.

Nodes are integers, numbered in creation order (deterministic). Each node's
attributes are a :class:`Node` record — a dict (networkx stores it as the node's
attribute dict) whose fields are declared once, in :data:`FIELDS`, with typed
accessors (``graph.node(n).shape``) beside the dict spelling (``graph.node(n)["shape"]``).
Every value is plain data except live references (``ref``) and namedtuple classes
inside an output ``spec``.

One source of truth for argument order: a node's ``args``. The DiGraph edges
(``u -> v`` with attribute ``slots``, the positions of ``u`` in ``v``'s args) are
derived from it by :meth:`Graph.add_node` and :meth:`Graph.set_args`, the only two
places that touch edges, so networkx algorithms (ancestors, isomorphism) see the
same graph.

``order()`` (a deterministic topological order, ties broken by id) is computed once
and kept until the graph changes; ``inputs`` and ``output`` come from an index by
kind, so asking for them is O(1) however often a pass does.

Regions: a node may hold *bodies*, graphs of their own (a fused kernel's ``group``
holds one ``body``; control-flow regions hold several). Each region kind is declared
once in :mod:`fusionnet.regions` (its bodies, whether passes optimise inside them, how
the interpreter runs it), and the interpreter, the passes, verification, hashing,
lowering and ``export_graph`` handle every kind through that declaration.

``param``/``buffer`` nodes (and module-attribute constants) point at the live
tensor in ``ref`` so later weight updates are seen; ``ref`` is excluded from
:meth:`Graph.content_hash`. Literal constants keep their array in ``value``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re

import networkx as nx
import numpy as np

from .structure import describe

__all__ = ["Graph", "GraphBreak", "Node", "NODE_KINDS", "FIELDS", "short_source"]

NODE_KINDS = ("input", "param", "buffer", "constant", "op", "group", "output", "item")

#: Every node field: name -> (who has it, what it means). ``kind``, ``args``,
#: ``shape``, ``dtype`` and ``attrs`` are on every node; the rest where listed.
FIELDS = {
    "kind": ("all", "input | param | buffer | constant | op | output, or a region kind"),
    "args": ("all", "argument node ids, in order (the edges are derived from this)"),
    "shape": ("all", "tuple of ints (the traced sizes)"),
    "dtype": ("all", "NumPy dtype name, e.g. 'float32'"),
    "attrs": ("all", "the op's attributes as a sorted tuple of (name, value) pairs"),
    "op": ("op", "op-table row name"),
    "source": ("most", "'file:line: code' of the user's line that created the node"),
    "module": ("most", "dotted path of the submodule whose forward created it"),
    "target": ("input, param, buffer, constant, item",
               "input position; parameter/buffer/constant name ('0.weight'); the result "
               "of a multi-result region an item reads"),
    "ref": ("param, buffer, constant; random inputs",
            "the live tensor (read at call time); a random input's Generator"),
    "random": ("input, optional", "(kind, dtype) of a random input: 'uniform' (rand) or "
               "'normal' (randn), drawn from the ref Generator at every call"),
    "detach": ("param, buffer, constant", "a `.data` read: no gradient flows"),
    "external": ("constant", "a live tensor found outside the module (a global...)"),
    "value": ("constant", "a literal's array"),
    "device": ("input", "device of the traced input"),
    "requires_grad": ("input, output", "whether eager's value requires grad (per leaf)"),
    "no_grad": ("op", "computed under no_grad() in a forward traced with grad on"),
    "phase": ("op, optional", "'backward' or 'update': recorded by loss.backward() or "
              "optimizer.step() inside a trace (runtime/joint.py, runtime/step.py; explain)"),
    "spec": ("output", "how the output leaves nest (fusionnet.structure)"),
    "sym_shape": ("all, optional", "shape with 'B'/'k*B' for batch-scaled sizes"),
    "buffer": ("op, group, optional", "buffer slot chosen by plan_buffers"),
    "body": ("group", "the fused kernel's body graph (a region body)"),
    "group_kind": ("group", "gemm | gemm_epilogue | elementwise | reduction"),
    "ops": ("group", "the body's op names, in order"),
    "members": ("group", "ids of the nodes the group replaced"),
    "outs": ("while, cond", "((shape, dtype), ...) of the region's results, one per item"),
    "cond": ("while", "the loop's first test: (state, captures) -> bool"),
    "then": ("cond", "the branch taken when the condition holds"),
    "else": ("cond", "the other branch"),
}


class Node(dict):
    """One node's attributes: a dict with typed accessors for the common fields.

    networkx creates these for every node (``node_attr_dict_factory``), so
    ``graph.nx.nodes[n]`` and ``graph.node(n)`` are the same record."""

    __slots__ = ()

    kind = property(lambda self: self["kind"], doc="the node kind")
    args = property(lambda self: self["args"], doc="argument node ids, in order")
    shape = property(lambda self: self["shape"], doc="the traced shape")
    dtype = property(lambda self: self["dtype"], doc="the dtype name")
    op = property(lambda self: self.get("op"), doc="the op-table name (op nodes)")
    source = property(lambda self: self.get("source", ""), doc="the user's source line")

    @property
    def attr_dict(self) -> dict:
        """The op's attributes as a dict."""
        return dict(self["attrs"])


class _NodeGraph(nx.DiGraph):
    """A DiGraph whose node attribute dicts are :class:`Node` records."""

    node_attr_dict_factory = Node


def short_source(source: str) -> str:
    """``/long/path/file.py:12: code`` -> ``file.py:12: code``."""
    match = re.match(r"^(.*?):(\d+): (.*)$", source or "")
    if not match:
        return source or ""
    return f"{os.path.basename(match.group(1))}:{match.group(2)}: {match.group(3)}"


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
        self.nx = _NodeGraph()
        self.breaks: list[GraphBreak] = []
        self.notes: list[str] = []  # decisions made by passes, for `explain`
        self.buffers: dict[int, tuple] = {}  # buffer slot -> (nbytes, dtype), see plan_buffers
        self.shape_reads: list[str] = []  # user-code lines that read traced sizes
        self.input_mutations: list[str] = []  # lines where forward wrote into an input
        self.grad_enabled = False  # the grad mode the graph was traced under
        self.backward_error = ""  # eager's error for a backward through this forward, if any
        self.saved_outputs: tuple = ()  # per output: does the backward read its storage
        self.saved_inputs: tuple = ()   # per input: does eager's backward read its storage
        self.reads = None  # what the trace read from Python (a pystate.Recorder), if traced
        self.converted: dict = {}  # function name -> converted source (autograph), if any
        self._next_id = 0
        self._order: list[int] | None = None   # cached topological order
        self._inputs: set[int] = set()
        self._outputs: set[int] = set()

    # ---- building ------------------------------------------------------------------------

    def add_node(self, kind: str, *, args=(), shape=(), dtype="float32", **attrs) -> int:
        """Add a node of ``kind`` reading ``args``; returns its id."""
        from .regions import REGIONS  # noqa: PLC0415 - regions is a leaf module

        if kind not in NODE_KINDS and kind not in REGIONS:
            raise ValueError(f"unknown node kind {kind!r}")
        nid = self._next_id
        self._next_id += 1
        for a in args:
            if a not in self.nx:
                raise KeyError(f"node {nid} reads unknown node {a}")
        attrs.setdefault("attrs", ())
        self.nx.add_node(nid, kind=kind, args=tuple(args), shape=tuple(shape),
                         dtype=str(np.dtype(dtype)), **attrs)
        self._link(nid, args)
        if kind == "input":
            self._inputs.add(nid)
        elif kind == "output":
            self._outputs.add(nid)
        self._order = None
        return nid

    def _link(self, nid: int, args) -> None:
        """The edges into ``nid``, derived from its args (the one place edges are made)."""
        for pos, a in enumerate(args):
            if self.nx.has_edge(a, nid):
                self.nx.edges[a, nid]["slots"] += (pos,)
            else:
                self.nx.add_edge(a, nid, slots=(pos,))

    def copy(self) -> "Graph":
        """A structural copy (node records copied; live refs and bodies shared)."""
        g = Graph(self.name)
        g.nx = self.nx.copy()
        g.breaks = list(self.breaks)
        g.notes = list(self.notes)
        g.buffers = dict(self.buffers)
        g.shape_reads = list(self.shape_reads)
        g.input_mutations = list(self.input_mutations)
        g.grad_enabled = self.grad_enabled
        g.backward_error = self.backward_error
        g.saved_outputs = self.saved_outputs
        g.saved_inputs = self.saved_inputs
        g.reads = self.reads
        g.converted = dict(self.converted)
        g._next_id = self._next_id
        g._order = None if self._order is None else list(self._order)
        g._inputs, g._outputs = set(self._inputs), set(self._outputs)
        return g

    # ---- rewriting (used by passes on their own copy) ----------------------------------

    def set_args(self, nid: int, args) -> None:
        """Give node ``nid`` new arguments (its edges follow)."""
        for a in list(self.nx.predecessors(nid)):
            self.nx.remove_edge(a, nid)
        self.nx.nodes[nid]["args"] = tuple(args)
        self._link(nid, args)
        self._order = None

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
        self._inputs.discard(nid)
        self._outputs.discard(nid)
        self._order = None

    # ---- reading -------------------------------------------------------------------------

    def node(self, nid: int) -> Node:
        """The record of node ``nid``."""
        return self.nx.nodes[nid]

    def order(self) -> list[int]:
        """Node ids in a deterministic topological order (ties broken by id).

        Computed once and kept until the graph changes (a copy: callers may mutate it)."""
        if self._order is None:
            self._order = list(nx.lexicographical_topological_sort(self.nx, key=lambda n: n))
        return list(self._order)

    def nodes_of(self, kind: str) -> list[int]:
        """Ids of the nodes of one kind, in topological order."""
        nodes = self.nx.nodes
        return [n for n in self.order() if nodes[n]["kind"] == kind]

    @property
    def inputs(self) -> list[int]:
        """Input placeholder ids, by position."""
        return sorted(self._inputs, key=lambda n: self.nx.nodes[n]["target"])

    @property
    def output(self) -> int:
        """The id of the output node."""
        if len(self._outputs) != 1:
            raise ValueError(f"graph {self.name!r} has {len(self._outputs)} output nodes")
        return next(iter(self._outputs))

    def users(self, nid: int) -> list[int]:
        """Nodes that read ``nid``."""
        return sorted(self.nx.successors(nid))

    def regions(self) -> list[int]:
        """Ids of the region nodes (groups, loops...), in topological order."""
        from .regions import REGIONS  # noqa: PLC0415

        nodes = self.nx.nodes
        return [n for n in self.order() if nodes[n]["kind"] in REGIONS]

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
        """A stable hash of structure, ops, attributes, shapes, dtypes, literal constants and
        region bodies.

        Live references (parameter values) are left out: the same graph with new
        weights has the same hash, so compiled code keyed by it stays valid.
        """
        from .regions import bodies_of  # noqa: PLC0415

        h = hashlib.sha256()
        for n in self.order():
            d = self.nx.nodes[n]
            bodies = bodies_of(d)
            skip = {"ref", "value", "source", "members", "spec"} | {f for f, _ in bodies}
            row = {k: _plain(d[k]) for k in sorted(d) if k not in skip}
            if "spec" in d:
                row["spec"] = describe(d["spec"])
            h.update(json.dumps([n, row], sort_keys=True, default=repr).encode())
            for field, body in bodies:
                h.update(field.encode() + body.content_hash().encode())
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
            src = short_source(d.get("source", ""))
            rows.append((str(n), d["kind"], what, ",".join(map(str, d["args"])),
                         "x".join(map(str, d["shape"])) or "()", d["dtype"], src))
        widths = [min(max(len(r[i]) for r in rows), 48) for i in range(len(header))]
        lines = [f"Graph {self.name} ({self.nx.number_of_nodes()} nodes, hash "
                 f"{self.content_hash()})"]
        for r in rows:
            lines.append("  ".join(c[:48].ljust(w) for c, w in zip(r, widths)).rstrip())
        for b in self.breaks:
            lines.append(f"graph break: {b.reason} at {b.source}")
        from .regions import REGIONS, bodies_of  # noqa: PLC0415
        for n in self.order():  # control-flow bodies (a group's body is its op list above)
            d = self.nx.nodes[n]
            if d["kind"] in REGIONS and not REGIONS[d["kind"]].kernel:
                for field, body in bodies_of(d):
                    inner = str(body).splitlines()
                    lines.append(f"  {d['kind']} {n} {field}:")
                    lines += ["    " + line for line in inner]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<Graph {self.name}: {self.nx.number_of_nodes()} nodes, "
                f"{len(self.nodes_of('op'))} ops, {len(self.breaks)} breaks>")


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
