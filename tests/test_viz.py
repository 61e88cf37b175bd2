"""Graph export: DOT structure (parsed back with pydot), SVG/PNG rendering (when Graphviz's
``dot`` is installed), JSON round trips, and the ``graph``/``explain`` command line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import networkx as nx
import pytest

import fusionnet as torch
from fusionnet import nn, viz, zoo
from fusionnet.__main__ import main

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's `dot` is not installed "
                                                   "(apt-get install graphviz)")
WHILE_LINE = "while X.abs().sum() > 1:"
BREAK_LINE = "while float(X.abs().sum()) > 1:"


class Breaky(nn.Module):
    """Chimera's loop with a Python float in its test: a graph break, not a region."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(20, 20)
        self.rand_weight = torch.rand(20, 20)

    def forward(self, X):
        X = (self.lin(X) @ self.rand_weight + 1).relu()
        while float(X.abs().sum()) > 1:
            X = X / 2
        return X.sum()


with open(__file__, encoding="utf-8") as _fh:
    _BREAK_LINENO = next(i for i, line in enumerate(_fh, 1) if BREAK_LINE in line
                         and "while float" in line and "BREAK_LINE" not in line)


@pytest.fixture
def X():
    torch.manual_seed(0)
    return torch.rand(2, 20)


def _export(tmp_path, obj, *inputs, stage="optimized", name="g.dot") -> str:
    path = viz.export_graph(obj, tmp_path / name, *inputs, stage=stage)
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _parse(text: str):
    """The DOT text parsed by pydot (the check is skipped where pydot is not installed)."""
    pydot = pytest.importorskip("pydot")
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1, "pydot could not parse the DOT text"
    return graphs[0]


def _attr(obj, key: str) -> str:
    """A pydot attribute without its quotes, DOT line breaks as spaces."""
    value = obj.get_attributes().get(key) or ""
    return value.strip('"').replace("\\n", " ")


def _clusters(g, prefix="cluster_") -> list:
    return [s for s in g.get_subgraphs() if s.get_name().strip('"').startswith(prefix)]


def _title(cluster) -> str:
    """A cluster's label, set by its `graph [label=...]` statement."""
    for attrs in [cluster.get_attributes()] + [n.get_attributes() for n in cluster.get_nodes()
                                               if n.get_name() == "graph"]:
        if "label" in attrs:
            return attrs["label"].strip('"').replace("\\n", " ")
    return ""


def _op_nodes(cluster) -> list[str]:
    """The op names (first label word) of a cluster's nodes."""
    return [_attr(n, "label").split("(")[0].split()[0] for n in cluster.get_nodes()
            if n.get_name() not in ("graph", "node", "edge")]


# ---- DOT structure --------------------------------------------------------------------------


def test_mlp_optimized_has_one_cluster_per_kernel(tmp_path, X):
    text = _export(tmp_path, zoo.MLP(), X)
    assert text.count("subgraph cluster_g") == 2  # checked without pydot too
    g = _parse(text)
    kernels = _clusters(g, "cluster_g")
    assert len(kernels) == 2
    first, second = (_title(k) for k in kernels)
    assert "gemm_epilogue" in first and "permute + matmul + add + relu" in first
    assert "gemm_epilogue" in second and "permute + matmul + add" in second
    assert "relu" not in second
    assert _op_nodes(kernels[0]) == ["permute", "matmul", "add", "relu"]
    assert _op_nodes(kernels[1]) == ["permute", "matmul", "add"]
    # FLOPs: matmul 2*M*N*K, add and relu one per element; bytes: inputs + output, float32.
    flops = 2 * 2 * 256 * 20 + 2 * 256 + 2 * 256
    nbytes = 4 * (256 * 20 + 2 * 20 + 256 + 2 * 256)
    assert f"{flops:,} FLOPs" in first and f"{nbytes:,} bytes moved" in first
    assert f"{2 * 2 * 10 * 256 + 2 * 10:,} FLOPs" in second


def test_node_styles_and_edge_labels(tmp_path, X):
    g = _parse(_export(tmp_path, zoo.MLP(), X))
    nodes = {n.get_name(): n for n in g.get_nodes()}
    assert _attr(nodes["n0"], "shape") == "ellipse"             # input
    assert _attr(nodes["n12"], "shape") == "ellipse"            # output
    param = nodes["n1"]                                         # hidden.weight
    assert _attr(param, "shape") == "box" and "filled" in _attr(param, "style")
    assert _attr(param, "label") == "param hidden.weight 256x20 float32"
    inner = {n.get_name(): n for k in _clusters(g, "cluster_g") for n in k.get_nodes()}
    assert _attr(inner["g13_4"], "label") == "matmul 2x256 float32"
    edges = {(e.get_source(), e.get_destination()): _attr(e, "label") for e in g.get_edges()}
    assert edges[("n0", "g13_4")] == "2x20"                     # input into the kernel
    assert edges[("g13_6", "g14_4")] == "2x256"                 # kernel to kernel
    assert edges[("g14_5", "n12")] == "2x10"


def test_constants_are_dashed_notes(tmp_path):
    class Shift(nn.Module):
        def forward(self, x):
            return (x + 1.5).relu()

    g = _parse(_export(tmp_path, Shift(), torch.rand(3), stage="traced"))
    const = [n for n in g.get_nodes() if _attr(n, "shape") == "note"]
    assert len(const) == 1
    assert _attr(const[0], "style") == "dashed" and "= 1.5" in _attr(const[0], "label")


def test_a_break_is_highlighted_with_its_line(tmp_path, X):
    text = _export(tmp_path, Breaky(), X)
    assert BREAK_LINE in text
    g = _parse(text)
    assert not _clusters(g, "cluster_g")  # no optimized graph, so no kernels
    nodes = {n.get_name(): n for n in g.get_nodes()}
    brk = nodes["break0"]
    assert _attr(brk, "color") == "#d32f2f"
    label = _attr(brk, "label")
    assert "graph break" in label and f"test_viz.py:{_BREAK_LINENO}: {BREAK_LINE}" in label
    assert "float() needs the value of a traced tensor" in label
    fallback = nodes["fallback"]
    assert _attr(fallback, "color") == "#d32f2f"
    assert _attr(fallback, "label").startswith("falls back to eager: float() needs the value")
    # The values turned into Python (`sum`, one per loop test) feed the break, drawn red.
    feeders = [e.get_source() for e in g.get_edges() if e.get_destination() == "break0"]
    assert feeders and all(_attr(nodes[f], "label").startswith("sum") for f in feeders)
    assert all(_attr(nodes[f], "color") == "#d32f2f" for f in feeders)
    assert "traced: Breaky" in _attr(g, "label") or "traced: Breaky" in text


def test_chimera_loop_is_a_region_cluster_with_its_bodies(tmp_path, X):
    g = _parse(_export(tmp_path, zoo.Chimera(), X))
    regions = [c for c in _clusters(g, "cluster_g") if _title(c).startswith("while")]
    assert len(regions) == 1
    bodies = [b.get_name() for b in regions[0].get_subgraphs()]
    assert len(bodies) == 2 and all(b.startswith(("cluster_g", "cluster_")) for b in bodies)
    titles = {_title(b) for b in regions[0].get_subgraphs()}
    assert titles == {"cond", "body"}
    inner = [k for b in regions[0].get_subgraphs() for k in b.get_subgraphs()]
    assert inner and all(_title(k).startswith("kernel") for k in inner)  # fused inside


def test_stage_both_puts_two_clusters_side_by_side(tmp_path, X):
    g = _parse(_export(tmp_path, zoo.MLP(), X, stage="both"))
    top = [s.get_name() for s in g.get_subgraphs()]
    assert top == ["cluster_traced", "cluster_optimized"]
    traced, optimized = g.get_subgraphs()
    assert _title(traced).startswith("traced: MLP (13 nodes, 7 ops")
    assert _title(optimized).startswith("optimized: MLP (8 nodes, 2 kernels")
    assert not _clusters(traced) and len(_clusters(optimized, "cluster_o_g")) == 2
    names = [n.get_name() for s in (traced, optimized) for n in s.get_nodes()
             if n.get_name() not in ("graph", "node", "edge")]
    assert len(names) == len(set(names))  # the panels never share a node id


def test_stage_both_with_a_break_says_there_is_no_optimized_graph(tmp_path, X):
    g = _parse(_export(tmp_path, Breaky(), X, stage="both"))
    traced, optimized = g.get_subgraphs()
    assert "t_break0" in [n.get_name() for n in traced.get_nodes()]
    assert [n.get_name() for n in optimized.get_nodes() if n.get_name() != "graph"] == [
        "o_fallback"]
    assert "(none)" in _title(optimized)


def test_graph_and_fused_module_objects(tmp_path, X):
    net = zoo.MLP()
    module_text = _export(tmp_path, net, X)
    graph = torch.trace(net, X)
    assert _export(tmp_path, graph) == module_text          # a Graph: optimized by default
    assert "subgraph cluster_g" not in _export(tmp_path, graph, stage="traced")
    assert _export(tmp_path, torch.fuse(net), X) == module_text

    @torch.fuse
    class FusedMLP(zoo.MLP):
        pass

    torch.manual_seed(0)
    decorated = FusedMLP()
    decorated(X)  # compiled once: tracing must still see the plain forward's ops
    assert _export(tmp_path, decorated, X).count("subgraph cluster_g") == 2


def test_labels_are_escaped(tmp_path):
    class Quoted(nn.Module):
        def forward(self, x):
            if float(x.sum()) > 0: return x * 2  # "quoted" \ back  # noqa: E701
            return x

    text = _export(tmp_path, Quoted(), torch.ones(3), stage="traced")
    brk = [n for n in _parse(text).get_nodes() if n.get_name() == "break0"]
    assert brk and '\\"quoted\\" \\\\ back' in _attr(brk[0], "label")


@pytest.mark.parametrize("name", sorted(zoo.CHAPTER_BLOCKS))
def test_every_chapter_block_exports(tmp_path, name):
    cls, features = zoo.CHAPTER_BLOCKS[name]
    torch.manual_seed(0)
    net, x = cls(), torch.rand(2, features)
    traced = torch.trace(net, x, on_break="record")
    clusters = _all_regions(torch.optimize(traced)) if traced.complete else 0
    text = _export(tmp_path, net, x, stage="both")
    assert text.count("subgraph cluster_o_g") == clusters
    assert text.count("-> t_break") >= len(traced.breaks) and ("o_fallback" in text) == (
        not traced.complete)
    if traced.complete:
        assert clusters > 0
    _parse(text)
    back = _read(viz.export_graph(net, tmp_path / "g.json", x, stage="traced"))
    expected = viz.to_networkx(traced, "traced")
    expected.graph["fallback"] = None  # asked for the traced stage: no fallback note
    # Ops inside nn.Sequential's forward are attributed to the user's calling line, which
    # is a different line of this test for the two traces.
    for g in (back, expected):
        for _, d in g.nodes(data=True):
            if __file__ in str(d.get("source", "")):
                d["source"] = "<this test>"
    _assert_same(back, expected)


def test_bad_arguments(tmp_path, X):
    with pytest.raises(ValueError, match="format"):
        viz.export_graph(zoo.MLP(), tmp_path / "g.txt", X)
    with pytest.raises(ValueError, match="stage"):
        viz.export_graph(zoo.MLP(), tmp_path / "g.dot", X, stage="fused")


def test_kernel_cost_counts_flops_and_bytes():
    class Net(nn.Module):
        def forward(self, a, b):
            return (a @ b).sum()

    g = torch.trace(Net(), torch.rand(3, 4, dtype=torch.float64), torch.rand(4, 5,
                                                                             dtype=torch.float64))
    matmul, total = g.nodes_of("op")
    assert viz.kernel_cost(g, matmul) == (2 * 3 * 5 * 4, 8 * (12 + 20 + 15))
    assert viz.kernel_cost(g, total) == (15, 8 * (15 + 1))     # a reduction: 1 per input element
    assert viz.kernel_cost(g, g.inputs[0]) == (0, 0)


# ---- rendering ------------------------------------------------------------------------------


@needs_dot
@pytest.mark.parametrize("stage", ["optimized", "both"])
def test_svg_renders_and_parses_as_xml(tmp_path, X, stage):
    path = viz.export_graph(zoo.MLP(), tmp_path / "mlp.svg", X, stage=stage)
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    text = ET.tostring(root, encoding="unicode")
    assert "kernel g13: gemm_epilogue" in text


@needs_dot
def test_png_renders(tmp_path, X):
    path = viz.export_graph(Breaky(), tmp_path / "chimera.png", X)
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 1000


def test_without_dot_svg_raises_and_dot_json_still_work(tmp_path, X, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))               # no `dot` anywhere
    monkeypatch.setitem(sys.modules, "graphviz", None)      # nor the Python package
    for suffix in ("svg", "png"):
        with pytest.raises(RuntimeError, match=r"apt-get install graphviz.*fusionnet\[viz\]"):
            viz.export_graph(zoo.MLP(), tmp_path / f"g.{suffix}", X)
        assert not (tmp_path / f"g.{suffix}").exists()
    assert "digraph" in _export(tmp_path, zoo.MLP(), X, name="g.dot")
    assert json.loads(_export(tmp_path, zoo.MLP(), X, name="g.json"))["directed"] is True


def test_importing_fusionnet_loads_no_drawing_library():
    code = ("import sys, fusionnet; bad = {'graphviz', 'matplotlib', 'pydot'} & set(sys.modules);"
            " assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- JSON -----------------------------------------------------------------------------------


def _read(path) -> nx.DiGraph:
    return viz.read_json(path)


def _all_regions(graph) -> int:
    """Region nodes (kernels and loops), counted inside bodies too."""
    from fusionnet.regions import bodies_of
    count = 0
    for n in graph.regions():
        bodies = bodies_of(graph.node(n))
        count += 1 + (len(bodies) if len(bodies) > 1 else 0)  # one sub-cluster per body
        count += sum(_all_regions(b) for _, b in bodies)
    return count


def _assert_same(a: nx.DiGraph, b: nx.DiGraph):
    assert dict(a.nodes(data=True)) == dict(b.nodes(data=True))
    assert sorted(a.edges(data=True)) == sorted(b.edges(data=True))
    assert a.graph == b.graph


def test_json_round_trips_the_optimized_graph(tmp_path, X):
    net = zoo.MLP()
    path = viz.export_graph(net, tmp_path / "mlp.json", X)
    back = _read(path)
    optimized = torch.optimize(torch.trace(net, X))
    expected = viz.to_networkx(optimized, "optimized")
    expected.graph["fallback"] = None
    _assert_same(back, expected)
    assert set(back.nodes) == set(optimized.nx.nodes)
    assert set(back.edges) == set(optimized.nx.edges)
    group = back.nodes[13]
    assert group["kind"] == "group" and group["group_kind"] == "gemm_epilogue"
    assert group["ops"] == ["permute", "matmul", "add", "relu"]
    assert group["flops"] == 2 * 2 * 256 * 20 + 1024 and group["shape"] == [2, 256]
    assert [op["op"] for op in group["body"]] == group["ops"]
    assert group["body"][0]["attrs"] == "dims=(1, 0)"
    assert "ref" not in back.nodes[1] and back.nodes[1]["target"] == "hidden.weight"
    assert back.edges[0, 13] == {"slots": [1], "shape": [2, 20]}


def test_json_reads_back_with_plain_networkx(tmp_path, X):
    path = viz.export_graph(zoo.MLP(), tmp_path / "mlp.json", X, stage="traced")
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    try:
        back = nx.node_link_graph(data, edges="edges")
    except TypeError:  # networkx < 3.4
        back = nx.node_link_graph(data, link="edges")
    assert isinstance(back, nx.DiGraph) and back.number_of_nodes() == 13
    assert back.nodes[2]["attrs"] == "dims=(1, 0)" and back.nodes[3]["op"] == "matmul"


def test_json_keeps_breaks_constants_and_both_stages(tmp_path, X):
    back = _read(viz.export_graph(Breaky(), tmp_path / "c.json", X, stage="both"))
    assert back.graph["stage"] == "both"
    assert back.graph["fallback"].startswith("falls back to eager: float()")
    traced = back.graph["stages"]["traced"]
    assert traced["complete"] is False and traced["breaks"][0]["source"].endswith(BREAK_LINE)
    assert "optimized" not in back.graph["stages"]
    assert all(n.startswith("traced/") for n in back.nodes)
    consts = [d for d in back.nodes.values() if d["kind"] == "constant"]
    one = next(d for d in consts if d.get("value") == "1.")
    assert {d["target"] for d in consts} >= {"rand_weight", one["target"]}
    mlp = _read(viz.export_graph(zoo.MLP(), tmp_path / "m.json", X, stage="both"))
    assert {n.split("/")[0] for n in mlp.nodes} == {"traced", "optimized"}
    assert mlp.nodes["optimized/14"]["group_kind"] == "gemm_epilogue"
    assert mlp.has_edge("traced/0", "traced/3") and not mlp.has_edge("traced/0", "optimized/13")


# ---- command line ---------------------------------------------------------------------------


MODEL_PY = textwrap.dedent("""
    import fusionnet as torch
    from fusionnet import nn


    class MyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(20, 8)
            self.b = nn.Linear(5, 8)

        def forward(self, x, y):
            return torch.relu(self.a(x) + self.b(y))
""")


def test_cli_graph_for_a_package_module(tmp_path, capsys):
    out = tmp_path / "mlp.dot"
    assert main(["graph", "fusionnet.zoo:MLP", "--input-shape", "2,20", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.read_text().count("subgraph cluster_g") == 2
    both = tmp_path / "mlp-both.json"
    assert main(["graph", "fusionnet.zoo:MLP", "--input-shape", "2,20", "-o", str(both),
                 "--stage", "both", "--dtype", "float64"]) == 0
    assert _read(both).nodes["traced/0"]["dtype"] == "float64"


def test_cli_graph_and_explain_for_a_file(tmp_path, capsys):
    (tmp_path / "model.py").write_text(MODEL_PY)
    spec = f"{tmp_path / 'model.py'}:MyNet"
    out = tmp_path / "net.dot"
    args = [spec, "--input-shape", "4,20", "--input-shape", "4,5"]
    assert main(["graph", *args, "-o", str(out), "--stage", "traced"]) == 0
    assert "input 1\\n4x5 float32" in out.read_text()
    capsys.readouterr()
    assert main(["explain", *args]) == 0
    report = capsys.readouterr().out
    assert report.startswith("== explain: MyNet ==") and "-- kernels --" in report


def test_cli_explain_reports_the_loop(capsys):
    assert main(["explain", "fusionnet.zoo:Chimera", "--input-shape", "2,20"]) == 0
    report = capsys.readouterr().out
    assert "graph breaks: none" in report and WHILE_LINE in report
    assert "-- loops and branches --" in report and "-- converted source" in report


@needs_dot
def test_cli_renders_svg(tmp_path):
    out = tmp_path / "mlp.svg"
    assert main(["graph", "fusionnet.zoo:MLP", "--input-shape", "2,20", "-o", str(out),
                 "--stage", "both"]) == 0
    assert ET.parse(out).getroot().tag.endswith("svg")


@pytest.mark.parametrize("argv, message", [
    (["graph", "fusionnet.zoo", "--input-shape", "2,20"], "bad module spec"),
    (["graph", "fusionnet.nope:MLP", "--input-shape", "2,20"], "cannot import"),
    (["graph", "fusionnet.zoo:Nope", "--input-shape", "2,20"], "has no class 'Nope'"),
    (["graph", "missing/model.py:MyNet", "--input-shape", "2,20"], "no such file"),
    (["graph", "fusionnet.zoo:MLP", "--input-shape", "2,x,"], "bad --input-shape"),
    (["graph", "fusionnet.zoo:MLP", "--input-shape", "2,-1"], "bad --input-shape"),
    (["explain", "fusionnet.zoo:MLP", "--input-shape", "2,20", "--dtype", "int8"],
     "bad --dtype"),
    (["explain", "fusionnet.zoo:CHAPTER_BLOCKS", "--input-shape", "2,20"], "no class"),
    (["explain", "fusionnet.nn:Linear", "--input-shape", "2,20"], "no arguments"),
])
def test_cli_usage_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    if argv[0] == "graph":
        argv = argv + ["-o", str(tmp_path / "g.dot")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "g.dot").exists()


def test_cli_bad_output_suffix_and_failing_block(tmp_path, capsys):
    assert main(["graph", "fusionnet.zoo:MLP", "--input-shape", "2,20",
                 "-o", str(tmp_path / "g.txt")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    # The block itself rejects the input: one line naming the shapes, exit code 1.
    assert main(["explain", "fusionnet.zoo:MyLinear", "--input-shape", "2,7"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MyLinear on inputs of shape (2, 7): ShapeError" in err
