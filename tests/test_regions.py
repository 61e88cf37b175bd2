"""Regions (nodes that hold body graphs) are handled generically, and passes are plain
callables: a toy region kind declared here is interpreted, verified, hashed, optimized
inside and drawn without any stage knowing it; a custom pass plugs into ``optimize``."""
from __future__ import annotations

import json

import numpy as np
import pytest

import fusionnet as torch
from fusionnet import nn, viz, zoo
from fusionnet.graph import Graph
from fusionnet.passes import DEFAULT_PIPELINE, PassError, optimize, verify
from fusionnet.regions import REGIONS, RegionKind, register_region


@pytest.fixture
def twice():
    """A toy region: ``twice(x) = body(body(x))`` (its body is optimized inside)."""
    def run(node, args, run_graph):
        return run_graph(node["body"], run_graph(node["body"], *args))

    kind = register_region(RegionKind("twice", ("body",), optimize_inside=True, run=run,
                                      doc="apply the body twice"))
    yield kind
    del REGIONS["twice"]


def _body() -> Graph:
    """x -> (x * 1) * 2 + -0.0: the `* 1` and `+ -0.0` are for simplify_algebra to remove
    (`+ 0.0` is not an identity: -0.0 + 0.0 is +0.0)."""
    b = Graph("body")
    x = b.add_node("input", shape=(3,), target=0)
    one = b.add_node("constant", shape=(), value=np.array(1.0, np.float32), target="one")
    two = b.add_node("constant", shape=(), value=np.array(2.0, np.float32), target="two")
    zero = b.add_node("constant", shape=(), value=np.array(-0.0, np.float32), target="zero")
    t = b.add_node("op", op="mul", args=[x, one], shape=(3,))
    t = b.add_node("op", op="mul", args=[t, two], shape=(3,))
    t = b.add_node("op", op="add", args=[t, zero], shape=(3,))
    b.add_node("output", args=[t], shape=(3,), spec="T")
    return b


def _outer() -> Graph:
    g = Graph("outer")
    x = g.add_node("input", shape=(3,), target=0)
    r = g.add_node("twice", args=[x], shape=(3,), body=_body())
    g.add_node("output", args=[r], shape=(3,), spec="T")
    return g


def test_a_new_region_kind_runs_verifies_and_hashes(twice):
    g = _outer()
    verify(g)
    x = torch.tensor([1.0, 2.0, 3.0])
    assert g.run(x).tolist() == [4.0, 8.0, 12.0]
    other = _outer()
    assert other.content_hash() == g.content_hash()
    body = other.node(other.regions()[0])["body"]
    body.node(body.nodes_of("constant")[1])["value"] = np.array(3.0, np.float32)
    assert other.content_hash() != g.content_hash()  # the body is part of the hash


def test_passes_optimize_inside_open_regions_only(twice):
    g = _outer()
    opt = optimize(g)
    body = opt.node(opt.regions()[0])["body"]
    # Inside the body: identities gone, the remaining multiply fused into one kernel.
    assert [body.node(n)["group_kind"] for n in body.nodes_of("group")] == ["elementwise"]
    assert body.node(body.nodes_of("group")[0])["ops"] == ("mul",)
    x = torch.tensor([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(opt.run(x).numpy(), g.run(x).numpy())
    # A group is a closed region: its body is what fusion produced, left as it is.
    mlp = optimize(torch.trace(zoo.MLP(), torch.rand(2, 20)))
    again = optimize(mlp, passes=DEFAULT_PIPELINE[:4])
    assert [again.node(n)["body"] is mlp.node(n)["body"] for n in mlp.regions()] == [True] * 2


def test_export_draws_any_region_as_a_cluster(twice, tmp_path):
    g = _outer()
    dot = viz.to_dot(g, stage="traced")
    assert "subgraph cluster_g1 {" in dot and 'label="twice r1"' in dot
    assert "n0 -> g1_4" in dot  # the outer input feeds the body's first op
    data = viz.to_networkx(g)
    assert "body" in data.nodes[1] and data.nodes[1]["kind"] == "twice"
    json.dumps(viz.nx.node_link_data(data, edges="edges"))  # JSON-safe


def test_a_custom_pass_is_a_plain_function():
    seen = []

    def count_ops(graph):
        seen.append(len(graph.nodes_of("op")))
        return graph

    g = torch.trace(zoo.MLP(), torch.rand(2, 20))
    out = optimize(g, passes=[count_ops, *DEFAULT_PIPELINE, count_ops])
    assert seen[0] == 7 and seen[1] == 0  # before: 7 ops; after fusion: kernels only
    assert len(out.nodes_of("group")) == 2


def test_a_failing_pass_is_named_with_the_passes_before_it():
    def broken(graph):
        raise ValueError("boom")

    g = torch.trace(zoo.MLP(), torch.rand(2, 20))
    passes = [DEFAULT_PIPELINE[0], DEFAULT_PIPELINE[1], broken]
    with pytest.raises(PassError, match=r"pass broken failed \(after fold_constants, "
                                        r"eliminate_common_subexpressions\).*boom"):
        optimize(g, passes=passes)
    with pytest.raises(PassError, match="returned NoneType"):
        optimize(g, passes=[lambda graph: None])


def test_interpreter_errors_name_the_node_and_the_users_line():
    class Block(nn.Module):
        def forward(self, x):
            return (x + 1).sqrt()

    x = torch.ones(2)
    g = torch.trace(Block(), x)
    sqrt = g.nodes_of("op")[-1]
    g.node(sqrt)["attrs"] = (("bogus", 1),)  # break the node on purpose
    with pytest.raises(TypeError) as info:
        g.run(x)
    note = "\n".join(info.value.__notes__)
    assert f"node {sqrt} (sqrt)" in note and "return (x + 1).sqrt()" in note
