"""``export_graph``: draw a block's traced and optimized graphs (DOT, SVG, PNG) or dump them
as JSON node-link data.

The DOT text is built here in pure Python, so ``.dot`` and ``.json`` need neither
Graphviz nor its Python package; ``.svg`` and ``.png`` run Graphviz's ``dot``
program. In the picture every fused kernel (``group`` node) is a coloured cluster
titled with its kind, ops, FLOPs and bytes moved; graph breaks and eager
fallbacks are red. See ``docs/visualization.md``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass

import networkx as nx
import numpy as np

from .graph import Graph, short_source
from .regions import bodies_of, region_of
from .structure import describe
from .ops import Kind, OPS

__all__ = ["export_graph", "to_dot", "to_networkx", "read_json", "kernel_cost", "STAGES"]

#: Accepted values of ``stage``.
STAGES = ("optimized", "traced", "both")
_FORMATS = (".dot", ".svg", ".png", ".json")
_INSTALL_HINT = ("install Graphviz's `dot` program (`apt-get install graphviz` on Debian/Ubuntu, "
                 "`brew install graphviz` on macOS) and `pip install 'fusionnet[viz]'`; "
                 "`.dot` and `.json` exports need neither")
# (fill, border) per kernel cluster, cycled; no reds: red means a break or a fallback.
_PALETTE = (("#e3f2fd", "#1e88e5"), ("#e8f5e9", "#43a047"), ("#fff3e0", "#fb8c00"),
            ("#f3e5f5", "#8e24aa"), ("#e0f7fa", "#00acc1"), ("#fffde7", "#c0a000"),
            ("#efebe9", "#6d4c41"), ("#ede7f6", "#5e35b1"))
_RED = "#d32f2f"


@dataclass
class _Stage:
    """One picture panel: a graph (None when there is no optimized graph) and a red note."""

    name: str
    graph: Graph | None
    note: str | None = None


# ---- which graphs ----------------------------------------------------------------------


def _stages(obj, inputs, stage: str) -> tuple[str, list[_Stage]]:
    """(name, panels) for ``obj`` at ``stage``; traces and optimizes as needed."""
    from .explain import inspect_block  # noqa: PLC0415 - explain imports the engine
    from .passes import optimize  # noqa: PLC0415

    if stage not in STAGES:
        raise ValueError(f"export_graph: stage must be one of {STAGES}, got {stage!r}")
    if isinstance(obj, Graph):
        traced = obj
        optimized = optimize(traced) if traced.complete and stage != "traced" else None
    else:
        seen = inspect_block(obj, inputs)
        traced, optimized = seen.traced, seen.optimized
    if not traced.complete:
        note = f"falls back to eager: {traced.breaks[0].reason}"
        if stage == "both":
            return traced.name, [_Stage("traced", traced), _Stage("optimized", None, note)]
        # Without an optimized graph the traced one is the picture, whatever was asked for.
        return traced.name, [_Stage("traced", traced, None if stage == "traced" else note)]
    panels = []
    if stage in ("traced", "both"):
        panels.append(_Stage("traced", traced))
    if stage in ("optimized", "both"):
        panels.append(_Stage("optimized", optimized))
    return traced.name, panels


# ---- costs -----------------------------------------------------------------------------


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _op_flops(op: str, out_shape, arg_shapes) -> int:
    """FLOPs of one op: matmul 2*M*N*K, elementwise 1 per output element, reduction 1 per
    input element, layout and opaque ops 0."""
    kind = OPS[op].kind if op in OPS else Kind.OPAQUE
    if kind is Kind.MATMUL:
        k = arg_shapes[0][-1] if arg_shapes and arg_shapes[0] else 1
        return 2 * _numel(out_shape) * int(k)
    if kind is Kind.ELEMENTWISE:
        return _numel(out_shape)
    if kind is Kind.REDUCTION:
        return _numel(arg_shapes[0]) if arg_shapes else 0
    return 0


def kernel_cost(graph: Graph, nid: int) -> tuple[int, int]:
    """(FLOPs, bytes moved) of node ``nid``: a group's body ops summed, or one op.

    Bytes moved are the sizes of the node's inputs plus its output, times their
    itemsize (each distinct input counted once): what a fused kernel must read and write.
    """
    d = graph.node(nid)
    if d["kind"] == "group":
        body = d["body"]
        flops = sum(kernel_cost(body, n)[0] for n in body.nodes_of("op"))
    elif d["kind"] == "op":
        flops = _op_flops(d["op"], d["shape"], [graph.node(a)["shape"] for a in d["args"]])
    else:
        return 0, 0
    sizes = [(graph.node(a)["shape"], graph.node(a)["dtype"]) for a in dict.fromkeys(d["args"])]
    sizes.append((d["shape"], d["dtype"]))
    return flops, sum(_numel(s) * np.dtype(t).itemsize for s, t in sizes)


# ---- DOT text --------------------------------------------------------------------------


def _q(text) -> str:
    """A DOT quoted string (backslashes kept literal, newlines as centred line breaks)."""
    text = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n") + '"'


def _attrs(**kw) -> str:
    return "[" + ", ".join(f"{k}={_q(v)}" for k, v in kw.items() if v is not None) + "]"


def _shape(shape) -> str:
    return "x".join(map(str, shape)) or "()"


def _wrap(text: str, width: int = 46) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _op_text(d: dict) -> str:
    attrs = ", ".join(f"{k}={v!r}"[:32] for k, v in d.get("attrs", ()))
    return d["op"] + (f"({attrs})" if attrs else "")


def _node_style(d: dict) -> dict:
    """Label and style of one node: activations plain, state grey, constants dashed notes."""
    kind, meta = d["kind"], f"{_shape(d['shape'])} {d['dtype']}"
    if kind == "input":
        return dict(label=f"input {d.get('target', '')}\n{meta}", shape="ellipse",
                    style="filled", fillcolor="#cfe8fc")
    if kind == "output":
        return dict(label=f"output\n{meta}", shape="ellipse", style="filled",
                    fillcolor="#cfe8fc")
    if kind == "item":  # one result of a loop or branch region
        return dict(label=f"result {d.get('target', '')}\n{meta}", shape="ellipse",
                    style="dashed")
    if kind in ("param", "buffer"):
        data = " (.data)" if d.get("detach") else ""
        return dict(label=f"{kind} {d.get('target', '')}{data}\n{meta}", shape="box",
                    style="filled", fillcolor="#d9d9d9", color="#7f7f7f")
    if kind == "constant":
        value = np.asarray(d["value"]) if d.get("value") is not None else None
        # A literal scalar (`+ 1`) shows its value; arrays are too big for a label.
        shown = f" = {value.item():g}" if value is not None and value.ndim == 0 \
            and value.dtype.kind in "fiub" else ""
        return dict(label=f"const {d.get('target', '')}{shown}\n{meta}", shape="note",
                    style="dashed", color="#7f7f7f")
    return dict(label=f"{_op_text(d)}\n{meta}", shape="box", style="rounded")


class _DotPanel:
    """Writes the DOT statements of one panel; ``p`` prefixes ids so panels never clash."""

    def __init__(self, panel: _Stage, p: str):
        self.panel, self.p, self.g = panel, p, panel.graph
        self.lines: list[str] = []
        self.edges: list[str] = []  # after every node: an edge inside a cluster would pull
        self.regions_drawn = 0      # its endpoints into that cluster

    @staticmethod
    def body_prefix(p: str, n: int, field: str, bodies: list) -> str:
        """The id prefix of region ``n``'s body ``field`` (``g13_`` for a one-body group)."""
        return f"{p}g{n}_" if len(bodies) == 1 else f"{p}g{n}{field}_"

    @staticmethod
    def node_id(p: str, n: int, in_body: bool) -> str:
        """A node's DOT id: ``n5`` at the top, ``g13_4`` inside a body."""
        return f"{p}{n}" if in_body else f"{p}n{n}"

    def producer(self, n: int, g: Graph | None = None, p: str | None = None,
                 in_body: bool = False) -> str:
        """The DOT id of the node that draws node ``n``'s value (a region: the node that
        draws its last body's result)."""
        g = self.g if g is None else g
        p = self.p if p is None else p
        d = g.node(n)
        bodies = bodies_of(d)
        if bodies:
            field, body = bodies[-1]
            return self.producer(body.node(body.output)["args"][0], body,
                                 self.body_prefix(p, n, field, bodies), True)
        return self.node_id(p, n, in_body)

    def emit(self) -> list[str]:
        g = self.g
        if g is not None:
            hot = {n for b in g.breaks for n in g.nodes_of("op")
                   if g.node(n).get("source") == b.source}
            self.nodes(g, self.p, hot, outer=None)
            self.lines += self.edges
            for i, b in enumerate(g.breaks):
                self.graph_break(i, b, hot)
        if self.panel.note:
            self.lines.append(f"{self.p}fallback " + _attrs(
                label=_wrap(self.panel.note), tooltip=self.panel.note, shape="note",
                style="filled", fillcolor="#ffebee", color=_RED, fontcolor=_RED, penwidth="2"))
        return self.lines

    def nodes(self, g: Graph, p: str, hot=frozenset(), outer=None) -> None:
        """Draw ``g``'s nodes with prefix ``p``. Inside a region body (``outer`` = (graph,
        prefix, the region's feeds, that graph's own outer)) inputs and the output are not
        drawn: edges come from what feeds the inputs."""
        for n in g.order():
            d = g.node(n)
            if outer is not None and d["kind"] in ("input", "output"):
                continue
            if region_of(d) is not None:
                self.region(g, p, n, outer)
                continue
            style = _node_style(d)
            if n in hot:  # ops on a break's source line
                style.update(color=_RED, fontcolor=_RED, penwidth="2")
            if outer is not None:
                style["fillcolor"] = "white"
            me = self.node_id(p, n, outer is not None)
            self.lines.append(f"{me} " + _attrs(
                **style, tooltip=short_source(d.get("source", "")) or None))
            for a in dict.fromkeys(d["args"]):
                self.edge(self.source_of(g, p, a, outer), me, g.node(a))

    def source_of(self, g: Graph, p: str, a: int, outer) -> str:
        """The DOT id an edge from node ``a`` of ``g`` starts at."""
        d = g.node(a)
        if outer is not None and d["kind"] == "input":
            og, op, feeds, outer_of_outer = outer
            fed = feeds[d["target"]]
            if fed is not None:
                return self.source_of(og, op, fed, outer_of_outer)
        return self.producer(a, g, p, outer is not None)

    def edge(self, src: str, dst: str, producer: dict) -> None:
        state = producer["kind"] in ("param", "buffer", "constant")
        self.edges.append(f"{src} -> {dst} " + _attrs(
            label=_shape(producer["shape"]), color="#9e9e9e" if state else None))

    def region(self, g: Graph, p: str, n: int, outer) -> None:
        """A region node (a fused kernel, a loop...) as a cluster holding one sub-cluster
        per body, each body's nodes wired to what feeds its inputs."""
        d = g.node(n)
        colours = _PALETTE[self.regions_drawn % len(_PALETTE)]
        self.regions_drawn += 1
        if region_of(d).kernel:
            flops, nbytes = kernel_cost(g, n)
            title = (f"kernel g{n}: {d['group_kind']}\n{' + '.join(d['ops'])}\n"
                     f"{flops:,} FLOPs, {nbytes:,} bytes moved")
        else:
            title = f"{d['kind']} r{n}"
        bodies = bodies_of(d)
        kind = region_of(d)
        self.lines.append(f"subgraph cluster_{p}g{n} {{")
        self.lines.append("graph " + _attrs(label=title, style="filled,rounded",
                                            fillcolor=colours[0], color=colours[1],
                                            penwidth="2", tooltip=short_source(d.get("source"))))
        for field, body in bodies:
            feeds = kind.feeds(d, field)
            bp = self.body_prefix(p, n, field, bodies)
            if len(bodies) > 1:
                self.lines.append(f"subgraph cluster_{bp} {{")
                self.lines.append("graph " + _attrs(label=field, style="dashed"))
            self.nodes(body, bp, outer=(g, p, feeds, outer))
            if len(bodies) > 1:
                self.lines.append("}")
        self.lines.append("}")

    def graph_break(self, i: int, brk, hot: set) -> None:
        """A red node with the reason and source line, fed by the values turned into Python."""
        bid = f"{self.p}break{i}"
        self.lines.append(bid + " " + _attrs(
            label=f"graph break\n{_wrap(brk.reason)}\nat {short_source(brk.source)}",
            tooltip=f"{brk.reason} at {short_source(brk.source)}", shape="octagon", style="filled",
            fillcolor="#ffebee", color=_RED, fontcolor=_RED, penwidth="2"))
        at = [n for n in self.g.order() if n in hot and self.g.node(n)["source"] == brk.source]
        # The values asked for as Python values are the ones nothing on that line reads.
        sinks = [n for n in at if not set(self.g.users(n)) & set(at)] or at[-1:]
        for n in sinks:
            self.lines.append(f"{self.p}n{n} -> {bid} " + _attrs(
                label="to Python", color=_RED, fontcolor=_RED, style="dashed"))


def _panel_title(name: str, panel: _Stage) -> str:
    g = panel.graph
    if g is None:
        return f"{panel.name}: {name} (none)"
    ops = sum(g.op_counts().values())
    kernels = g.nodes_of("group")
    text = f"{panel.name}: {name} ({g.nx.number_of_nodes()} nodes" + (f", {ops} ops" if ops
                                                                      else "")
    if kernels:
        flops = sum(kernel_cost(g, n)[0] for n in g.order())
        text += f", {len(kernels)} kernels, {flops:,} FLOPs"
    n = len(g.breaks)
    text += f", {n} graph break{'s' if n > 1 else ''})" if n else ")"
    return text


def _dot_text(name: str, panels: list[_Stage]) -> str:
    lines = [f"digraph {_q(name)} {{",
             "graph " + _attrs(rankdir="TB", labelloc="t", fontname="Helvetica",
                               fontsize="12", newrank="true"),
             "node " + _attrs(fontname="Helvetica", fontsize="10"),
             "edge " + _attrs(fontname="Helvetica", fontsize="9", color="#424242")]
    if len(panels) == 1:
        lines.append("graph " + _attrs(label=_panel_title(name, panels[0])))
        lines += _DotPanel(panels[0], "").emit()
    else:  # one top-level cluster per stage; with no edges between them they sit side by side
        for panel in panels:
            p = panel.name[0] + "_"
            lines.append(f"subgraph cluster_{panel.name} {{")
            lines.append("graph " + _attrs(label=_panel_title(name, panel), style="dashed",
                                           color="#757575", fontsize="14"))
            lines += _DotPanel(panel, p).emit()
            lines.append("}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_dot(obj, *example_inputs, stage: str = "optimized") -> str:
    """The DOT text :func:`export_graph` writes for ``obj`` (pure Python, no Graphviz)."""
    return _dot_text(*_stages(obj, example_inputs, stage))


# ---- JSON ------------------------------------------------------------------------------


def _jsonable(v):
    """Plain JSON data: tuples become lists, NumPy scalars and dtypes plain values."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if np.isfinite(v) else repr(v)  # NaN would compare unequal on reading
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return _jsonable(v.item())
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)[:200]


def _json_node(graph: Graph, n: int) -> dict:
    d = graph.node(n)
    bodies = bodies_of(d)
    skip = {"ref"} | {field for field, _ in bodies}
    out = {}
    for key, v in d.items():
        if key in skip:
            continue  # live tensors and nested graphs: bodies are summarised below
        if key == "attrs":
            out[key] = ", ".join(f"{k}={x!r}" for k, x in v)
        elif key == "value":
            out[key] = np.array2string(np.asarray(v), threshold=16, separator=", ")
        elif key == "spec":
            out[key] = describe(v)
        else:
            out[key] = _jsonable(v)
    if d["kind"] == "group":  # a fused kernel: its cost and its ops
        out["flops"], out["bytes"] = kernel_cost(graph, n)
        body = d["body"]
        out["body"] = [{"id": b, "op": body.node(b)["op"],
                        "attrs": _json_node(body, b)["attrs"],
                        "args": list(body.node(b)["args"]),
                        "shape": list(body.node(b)["shape"]), "dtype": body.node(b)["dtype"]}
                       for b in body.nodes_of("op")]
    else:  # any other region: each body as node-link data
        for field, body in bodies:
            out[field] = nx.node_link_data(to_networkx(body, "body"), edges="edges")
    return out


def to_networkx(graph: Graph, stage: str = "traced") -> nx.DiGraph:
    """A JSON-safe copy of ``graph.nx`` (what ``.json`` holds; see docs/visualization.md).

    Kept: every plain attribute (``kind``, ``op``, ``args``, ``shape``, ``dtype``,
    ``source``, ``module``, ``target``, ``group_kind``, ``ops``, ``members``...), with
    tuples as lists; ``attrs`` as a string; literal constant ``value`` as a string.
    Added for groups: ``flops``, ``bytes`` and ``body`` (its ops as plain dicts).
    Dropped: ``ref`` (live parameters) and the body ``Graph``. Graph attributes:
    ``name``, ``stage``, ``complete``, ``breaks`` (reason, source), ``notes``.
    """
    out = nx.DiGraph(name=graph.name, stage=stage, complete=graph.complete,
                     breaks=[{"reason": b.reason, "source": b.source} for b in graph.breaks],
                     notes=list(graph.notes))
    for n in graph.order():
        out.add_node(n, **_json_node(graph, n))
    for u, v, e in graph.nx.edges(data=True):
        out.add_edge(u, v, **{**_jsonable(dict(e)), "shape": list(graph.node(u)["shape"])})
    return out


def _json_graph(name: str, panels: list[_Stage]) -> nx.DiGraph:
    fallback = next((p.note for p in panels if p.note), None)
    if len(panels) == 1:
        out = to_networkx(panels[0].graph, panels[0].name)
        out.graph["fallback"] = fallback
        return out
    # "both": one graph holding each stage's nodes as "<stage>/<id>".
    out = nx.DiGraph(name=name, stage="both", fallback=fallback, stages={})
    for panel in panels:
        if panel.graph is None:
            continue
        part = to_networkx(panel.graph, panel.name)
        out.graph["stages"][panel.name] = part.graph
        out.add_nodes_from((f"{panel.name}/{n}", {**d, "stage": panel.name})
                           for n, d in part.nodes(data=True))
        out.add_edges_from((f"{panel.name}/{u}", f"{panel.name}/{v}", e)
                           for u, v, e in part.edges(data=True))
    return out


def _node_link_data(g: nx.DiGraph) -> dict:
    try:
        return nx.node_link_data(g, edges="edges")
    except TypeError:  # networkx < 3.4 spells the keyword `link`
        return nx.node_link_data(g, link="edges")


def read_json(path) -> nx.DiGraph:
    """Read a ``.json`` written by :func:`export_graph` back into a ``networkx.DiGraph``."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    try:
        return nx.node_link_graph(data, edges="edges")
    except TypeError:  # networkx < 3.4
        return nx.node_link_graph(data, link="edges")


# ---- writing ---------------------------------------------------------------------------


def _render(dot_text: str, path: str, fmt: str) -> None:
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError(f"export_graph: writing {os.path.basename(path)} needs Graphviz's "
                           f"`dot` program, which is not on PATH: {_INSTALL_HINT}")
    done = subprocess.run([exe, f"-T{fmt}", "-o", path], input=dot_text.encode("utf-8"),
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"export_graph: dot -T{fmt} failed: "
                           f"{done.stderr.decode(errors='replace').strip()}")


def export_graph(obj, path, *example_inputs, stage: str = "optimized") -> str:
    """Write a picture or JSON of ``obj``'s graph to ``path``; returns ``path``.

    ``obj`` is a module (traced on ``example_inputs``, breaks recorded), a fused
    module (its original is traced) or a :class:`~fusionnet.graph.Graph` (taken as
    the traced graph). ``stage``: ``"optimized"`` (default), ``"traced"`` or
    ``"both"`` side by side. A graph with a break has no optimized stage: the
    traced graph is drawn with the break and a "falls back to eager" note.
    The suffix picks the format: ``.dot``, ``.json`` (pure Python), ``.svg``,
    ``.png`` (need Graphviz's ``dot``; a ``RuntimeError`` says how to install it).
    """
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lower()
    if fmt not in _FORMATS:
        raise ValueError(f"export_graph: cannot tell the format of {path!r}; use one of "
                         f"{', '.join(_FORMATS)}")
    if fmt in (".svg", ".png") and shutil.which("dot") is None:
        _render("", path, fmt[1:])  # fail before tracing, with the install hint
    name, panels = _stages(obj, example_inputs, stage)
    if fmt == ".json":
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(_node_link_data(_json_graph(name, panels)), fh, indent=1)
            fh.write("\n")
        return path
    text = _dot_text(name, panels)
    if fmt == ".dot":
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        _render(text, path, fmt[1:])
    return path
