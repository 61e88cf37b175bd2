"""Tracer, Graph and reference interpreter: differential, golden and graph-break tests."""
from __future__ import annotations

import numpy as np
import pytest
from test_op_table import SAMPLES

import fusionnet as torch
from fusionnet import nn, zoo
from fusionnet.dispatch import apply
from fusionnet.explain import explain
from fusionnet.graph import GraphBreak
from fusionnet.interpreter import GuardError
from fusionnet.nn import functional as F
from fusionnet.ops import OPS
from fusionnet.tracer import TraceError, trace

rng = np.random.default_rng(7)


def _fresh_like(a: np.ndarray) -> np.ndarray:
    """New random values of the same shape/dtype, in the same domain as the sample."""
    if a.dtype.kind == "b":
        return rng.random(a.shape) > 0.5
    if a.dtype.kind in "iu":
        return a.copy()  # indices: keep them valid
    lo, hi = (0.5, 2.0) if (a > 0).all() else (-2.0, 2.0)
    return rng.uniform(lo, hi, a.shape).astype(a.dtype)


class OneOp(nn.Module):
    """A block that applies one table op to its inputs."""

    def __init__(self, name, attrs):
        super().__init__()
        self.name, self.attrs = name, attrs

    def forward(self, *xs):
        return apply(self.name, *xs, **self.attrs)


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_traces_and_runs_like_eager(name):
    arrays, attrs, _ = SAMPLES[name]
    block = OneOp(name, attrs)
    graph = trace(block, *[torch.from_numpy(a.copy()) for a in arrays])
    op = OPS[name]
    if op.decompose is None:
        assert graph.op_counts() == {name: 1}
    else:  # recorded as the table ops it is made of (ops/loss.py)
        assert name not in graph.op_counts() and graph.op_counts()
    fresh = [torch.from_numpy(_fresh_like(a)) for a in arrays]
    np.testing.assert_array_equal(graph.run(*fresh).numpy(), block(*fresh).numpy())


COMPLETE_BLOCKS = ["MLP", "SequentialMLP", "MySequential", "NestMLP", "TiedMLP",
                   "CenteredLayer", "MyLinear", "LazyMLP"]


@pytest.mark.parametrize("name", COMPLETE_BLOCKS)
def test_chapter_blocks_trace_and_run_like_eager(name):
    cls, features = zoo.CHAPTER_BLOCKS[name]
    block = cls()
    graph = trace(block, torch.rand(2, features))
    assert graph.complete
    for _ in range(3):
        X = torch.randn(2, features)
        np.testing.assert_array_equal(graph.run(X).detach().numpy(), block(X).detach().numpy())


@pytest.mark.parametrize("name", ["FixedHiddenMLP", "Chimera"])
def test_while_loop_is_a_graph_break_at_its_line_without_conversion(name):
    cls, features = zoo.CHAPTER_BLOCKS[name]
    block = cls()
    with pytest.raises(GraphBreak) as info:
        trace(block, torch.rand(2, features), convert=False)
    assert "while X.abs().sum() > 1:" in info.value.source
    assert "zoo.py" in info.value.source
    assert "bool()" in info.value.reason


def test_nothing_is_specialised_on_loop_counts():
    block = zoo.FixedHiddenMLP()
    small, large = torch.rand(2, 20) * 0.001, torch.rand(2, 20) * 1000
    graph = trace(block, small, on_break="record", convert=False)
    assert not graph.complete and len(graph.breaks) == 1
    # The recorded graph unrolled the loop for `small`; it must refuse to run rather
    # than give a wrong answer for `large`, which needs more halvings.
    with pytest.raises(GraphBreak, match="incomplete"):
        graph.run(large)
    eager = block(large).item()
    assert abs(eager) <= 1.0  # the eager loop ran to completion


def test_branch_on_values_breaks_and_branch_on_shapes_unrolls():
    class Branchy(nn.Module):
        def forward(self, x):
            y = x * 2 if x.shape[0] == 2 else x * 3   # static: fine
            if y.sum() > 0:                          # data-dependent: a region
                return y
            return -y

    with pytest.raises(GraphBreak, match="bool"):
        trace(Branchy(), torch.rand(2, 3), convert=False)
    graph = trace(Branchy(), torch.rand(2, 3))     # converted: one `cond` region
    assert [graph.node(n)["kind"] for n in graph.regions()] == ["cond"]
    for x in (torch.rand(2, 3), -torch.rand(2, 3)):
        np.testing.assert_array_equal(graph.run(x).numpy(), Branchy()(x).numpy())

    class ShapeOnly(nn.Module):
        def forward(self, x):
            for _ in range(x.shape[1]):
                x = x + 1
            return x

    graph = trace(ShapeOnly(), torch.rand(2, 3))
    assert graph.op_counts() == {"add": 3}


@pytest.mark.parametrize("conv", [float, lambda t: t.item(), int, lambda t: t.tolist()])
def test_python_values_of_traced_tensors_break(conv):
    class Leaky(nn.Module):
        def forward(self, x):
            return x * conv(x.sum())

    with pytest.raises(GraphBreak):
        trace(Leaky(), torch.rand(2, 2))


def test_constant_only_python_values_do_not_break():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.tensor(3.0)

        def forward(self, x):
            k = float(torch.ones(1) * 2)  # made inside forward from nothing: a fixed value
            return x * k

    graph = trace(Scaled(), torch.rand(2))
    assert graph.complete


def test_random_numbers_in_forward_are_random_inputs():
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    g = trace(net, torch.rand(2, 4))
    assert [g.node(n).get("random") for n in g.inputs] == [None, ("uniform", "float32")]
    net.eval()
    assert len(trace(net, torch.rand(2, 4)).inputs) == 1

    class Fill(nn.Module):  # in-place random fills still break: NumPy math on the draws
        def forward(self, x):
            return x + torch.empty(2, 4).uniform_()
    with pytest.raises(GraphBreak, match="random"):
        trace(Fill(), torch.rand(2, 4))


def test_golden_graph_of_relu_mm_plus_one():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.W = nn.Parameter(torch.rand(4, 3))

        def forward(self, X):
            return F.relu(torch.mm(X, self.W) + 1)

    g = trace(Block(), torch.rand(2, 4))
    rows = [(g.node(n)["kind"], g.node(n).get("op"), g.node(n)["args"], g.node(n)["shape"])
            for n in g.order()]
    assert rows == [
        ("input", None, (), (2, 4)),
        ("param", None, (), (4, 3)),
        ("op", "matmul", (0, 1), (2, 3)),
        ("constant", None, (), ()),
        ("op", "add", (2, 3), (2, 3)),
        ("op", "relu", (4,), (2, 3)),
        ("output", None, (5,), (2, 3)),
    ]
    assert sorted(g.nx.edges) == [(0, 2), (1, 2), (2, 4), (3, 4), (4, 5), (5, 6)]
    assert g.node(1)["target"] == "W" and g.node(3)["value"].item() == 1.0
    assert all(g.node(n)["dtype"] == "float32" for n in g.order())
    assert "F.relu(torch.mm(X, self.W) + 1)" in g.node(5)["source"]


def test_a_layer_used_twice_is_one_parameter_node():
    g = trace(zoo.TiedMLP(), torch.rand(2, 20))
    targets = [g.node(n)["target"] for n in g.nodes_of("param")]
    assert targets.count("2.weight") == 1 and "4.weight" not in targets
    weight = g.nodes_of("param")[targets.index("2.weight")]
    assert len(g.users(weight)) == 2  # read by both uses (through its transpose)


def test_argument_order_is_explicit_for_repeated_inputs():
    class Square(nn.Module):
        def forward(self, x):
            return x - x * x

    g = trace(Square(), torch.rand(3))
    mul = [n for n in g.nodes_of("op") if g.node(n)["op"] == "mul"][0]
    assert g.node(mul)["args"] == (0, 0) and g.nx.edges[0, mul]["slots"] == (0, 1)


def test_hash_is_stable_and_ignores_weight_values():
    a, b = zoo.MLP(), zoo.MLP()
    X = torch.rand(2, 20)
    ga, gb = trace(a, X), trace(b, X)
    assert ga.content_hash() == gb.content_hash()
    assert list(ga.order()) == list(gb.order())
    assert trace(a, torch.rand(3, 20)).content_hash() != ga.content_hash()


def test_parameters_are_live_references():
    net = zoo.MLP()
    X = torch.rand(2, 20)
    g = trace(net, X)
    net.out.weight.data[:] = 0.0
    net.out.bias.data[:] = 1.5
    np.testing.assert_array_equal(g.run(X).detach().numpy(), np.full((2, 10), 1.5, np.float32))


def test_data_access_is_a_detached_parameter_reference():
    g = trace(zoo.MyLinear(), torch.rand(2, 20))
    params = [g.node(n) for n in g.nodes_of("param")]
    assert {p["target"] for p in params} == {"weight", "bias"}
    assert all(p["detach"] for p in params)


def test_inplace_ops_are_functionalised():
    class InPlace(nn.Module):
        def forward(self, x):
            y = x * 1
            y /= 2
            y += 1
            y[:, 0] = 0.0
            return y

    x = torch.rand(2, 3)
    before = x.numpy().copy()
    g = trace(InPlace(), x)
    assert g.op_counts() == {"add": 1, "div": 1, "mul": 1, "setitem": 1}
    out = g.run(x)
    np.testing.assert_array_equal(x.numpy(), before)  # the graph mutates nothing
    want = before / 2 + 1
    want[:, 0] = 0
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6)


def test_boolean_mask_indexing_breaks():
    class Mask(nn.Module):
        def forward(self, x):
            return x[x > 0].sum()

    with pytest.raises(GraphBreak, match="mask"):
        trace(Mask(), torch.randn(4))


def test_tuple_outputs_and_bad_outputs():
    class Two(nn.Module):
        def forward(self, x):
            return x + 1, x * 2

    out = trace(Two(), torch.ones(2)).run(torch.ones(2))
    assert isinstance(out, tuple) and out[1].tolist() == [2.0, 2.0]

    class Bad(nn.Module):
        def forward(self, x):
            return 3

    with pytest.raises(TraceError, match=r"returned no tensor \(int\)"):
        trace(Bad(), torch.ones(2))


def test_run_guards_inputs():
    g = trace(zoo.MLP(), torch.rand(2, 20))
    with pytest.raises(GuardError, match=r"shape \(2, 7\), expected \(2, 20\)"):
        g.run(torch.rand(2, 7))
    with pytest.raises(GuardError, match="dtype float64"):
        g.run(torch.rand(2, 20, dtype=torch.float64))
    with pytest.raises(GuardError, match="expected 1 input"):
        g.run()


def test_gradients_flow_through_the_interpreter():
    net = zoo.MLP()
    X = torch.rand(2, 20)
    g = trace(net, X)
    g.run(X).sum().backward()
    via_graph = net.hidden.weight.grad.numpy().copy()
    net.zero_grad()
    net(X).sum().backward()
    np.testing.assert_allclose(via_graph, net.hidden.weight.grad.numpy(), rtol=1e-6)


def test_graph_prints_a_table_and_explain_reports():
    g = trace(zoo.MLP(), torch.rand(2, 20))
    text = str(g)
    assert text.splitlines()[1].split()[:4] == ["id", "kind", "op", "/"]
    assert "matmul" in text and "hidden.weight" in text
    report = explain(zoo.Chimera(), torch.rand(2, 20))
    assert not report.breaks and report.op_counts["matmul"] >= 4
    text = str(report)
    assert "-- loops and branches --" in text and "while X.abs().sum() > 1:" in text
    assert "graph breaks: none" in str(explain(zoo.NestMLP(), torch.rand(2, 20)))


def test_param_and_param_data_are_different_nodes():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.w + x * self.w.data

    g = trace(Mixed(), torch.ones(3))
    params = sorted((g.node(n)["target"], g.node(n)["detach"]) for n in g.nodes_of("param"))
    assert params == [("w", False), ("w", True)]


def test_inplace_update_of_module_state_breaks():
    class Stateful(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            self.w.data += 1
            return x * self.w

    with pytest.raises(GraphBreak, match="in-place update of a module parameter"):
        trace(Stateful(), torch.ones(3))
