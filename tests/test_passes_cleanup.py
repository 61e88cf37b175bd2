"""Cleanup passes: golden before/after graphs, interpreter equivalence, no input mutation,
buffer-plan soundness, and a Hypothesis property test over random traced op DAGs."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusionnet as torch
from fusionnet import nn, zoo
from fusionnet.dispatch import apply
from fusionnet.graph import Graph
from fusionnet.ops import get_op
from fusionnet.passes import verify
from fusionnet.passes.eliminate_common_subexpressions import eliminate_common_subexpressions
from fusionnet.passes.eliminate_dead_code import eliminate_dead_code
from fusionnet.passes.fold_constants import fold_constants
from fusionnet.passes.plan_buffers import plan_buffers
from fusionnet.passes.simplify_algebra import simplify_algebra
from fusionnet.tracer import trace

CLEANUPS = [fold_constants, eliminate_common_subexpressions, simplify_algebra,
            eliminate_dead_code, plan_buffers]
rng = np.random.default_rng(11)


# ---- helpers -----------------------------------------------------------------------------

class Fn(nn.Module):
    """A block whose forward is a plain function (so tests can trace one-liners)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def traced(fn, *shapes) -> Graph:
    """Trace ``fn`` (a function or a module) on random inputs of ``shapes``."""
    block = fn if isinstance(fn, nn.Module) else Fn(fn)
    return trace(block, *[torch.randn(*s) for s in shapes])


def assert_same_structure(got: Graph, expected: Graph):
    """Isomorphic, matching (kind, op, attrs, shape) on nodes and argument slots on edges."""
    def node_match(a, b):
        return (all(a.get(k) == b.get(k) for k in ("kind", "op", "attrs"))
                and tuple(a["shape"]) == tuple(b["shape"]))

    same = nx.is_isomorphic(got.nx, expected.nx, node_match=node_match,
                            edge_match=lambda a, b: a["slots"] == b["slots"])
    assert same, f"\n{got}\n  is not structurally\n{expected}"


def as_arrays(out) -> list[np.ndarray]:
    """The interpreter's result as a list of arrays."""
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [o.detach().numpy() for o in outs]


def fresh_inputs(g: Graph):
    """New random inputs matching the graph's placeholders."""
    return [torch.from_numpy(rng.standard_normal(g.node(n)["shape"]).astype(g.node(n)["dtype"]))
            for n in g.inputs]


def check_pass(pass_fn, g: Graph) -> Graph:
    """Run one pass; check it verifies, leaves its input alone and computes the same."""
    before_hash, before_nodes, before_notes = g.content_hash(), g.nx.number_of_nodes(), \
        list(g.notes)
    out = pass_fn(g)
    assert out is not g
    assert (g.content_hash(), g.nx.number_of_nodes(), g.notes) == \
        (before_hash, before_nodes, before_notes), f"{pass_fn.__name__} mutated its input"
    verify(out, after=pass_fn.__name__)
    for _ in range(2):
        xs = fresh_inputs(g)
        for a, b in zip(as_arrays(g.run(*xs)), as_arrays(out.run(*xs)), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-6)
    return out


def op_nodes(g: Graph) -> list[dict]:
    return [g.node(n) for n in g.nodes_of("op")]


def output_args(g: Graph) -> list[dict]:
    return [g.node(a) for a in g.node(g.output)["args"]]


def dead_branch(x):
    y = x.exp()  # noqa: F841 - the point: nothing reads it
    return x + 1


def chain6(x):
    return x.exp().neg().abs().tanh().sigmoid().relu()


class Attr(nn.Module):
    """Uses a module-attribute tensor (a live ``ref`` constant) and a parameter."""

    def __init__(self):
        super().__init__()
        self.scale = torch.ones(3)
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * (self.scale * 2) + (self.w * 1)


SAMPLES = {
    "identities": (lambda x: x * 1 + (-0.0), [(2, 3)]),  # x + 0.0 is not x at x = -0.0
    "left_identities": (lambda x: 1 * x - 0, [(2, 3)]),
    "double_transpose": (lambda x: (x.T).T, [(2, 3)]),
    "reshape_same": (lambda x: x.reshape(x.shape) / 1, [(2, 3)]),
    "exp_twice": (lambda x: x.exp() + x.exp(), [(2, 3)]),
    "folded": (lambda x: x + (torch.ones(3) * 2 + 1), [(2, 3)]),
    "dead_branch": (dead_branch, [(2, 3)]),
    "reshape_chain": (lambda x: x.reshape(6).reshape(3, 2) * 2, [(2, 3)]),
    "permute_chain": (lambda x: x.permute(1, 2, 0).permute(0, 2, 1).exp(), [(2, 3, 4)]),
    "attrs_differ": (lambda x: x.sum(0) + x.sum(1) + x.T.sum(0), [(3, 3)]),
    "broadcast_kept": (lambda x: x * torch.ones(2, 3) + torch.zeros(4, 1, 1), [(3,)]),
    "chain6": (chain6, [(4, 5)]),
    "attr": (Attr(), [(2, 3)]),
    "nest_mlp": (zoo.NestMLP(), [(2, 20)]),
    "tuple_out": (lambda x, y: (x.exp() * 1, (x.exp() + y).sum(0, keepdim=True)),
                  [(2, 3), (1, 3)]),
}


# ---- every pass, every sample: equal results, verifies, input untouched ----------------

@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("pass_fn", CLEANUPS, ids=lambda p: p.__name__)
def test_pass_preserves_results_and_input(pass_fn, name):
    fn, shapes = SAMPLES[name]
    check_pass(pass_fn, traced(fn, *shapes))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_pipeline_in_order_preserves_results(name):
    fn, shapes = SAMPLES[name]
    g = traced(fn, *shapes)
    for pass_fn in CLEANUPS:
        g = check_pass(pass_fn, g)
    assert all(line.split(":")[0] in {p.__name__ for p in CLEANUPS} for line in g.notes)


# ---- fold_constants ----------------------------------------------------------------------

def test_fold_ones_times_two_plus_one_golden():
    g = fold_constants(traced(SAMPLES["folded"][0], (2, 3)))
    e = Graph("expected")
    x = e.add_node("input", shape=(2, 3), target=0)
    for shape in [(3,), (), ()]:  # ones(3), 2 and 1: now unread, left for DCE
        e.add_node("constant", shape=shape)
    c = e.add_node("constant", shape=(3,))
    e.add_node("output", args=[e.add_node("op", op="add", args=[x, c], shape=(2, 3))],
               shape=(2, 3))
    assert_same_structure(g, e)
    (folded,) = [g.node(n) for n in g.nodes_of("constant") if g.users(n)]
    np.testing.assert_array_equal(folded["value"], np.full(3, 3.0, np.float32))
    # The folded constant is attributed to the user's line (this file), not to fusionnet.
    assert folded["dtype"] == "float32" and folded["source"].startswith(__file__)
    assert any(n.startswith("fold_constants: folded mul(") for n in g.notes)
    assert any(n.startswith("fold_constants: folded add(") for n in g.notes)


def test_fold_leaves_live_refs_and_params_alone():
    block = Attr()
    g = traced(block, (2, 3))
    out = fold_constants(g)
    assert out.op_counts() == g.op_counts()
    assert not any(n.startswith("fold_constants: folded") for n in out.notes)
    block.scale._data[...] = 5.0  # module state changes after tracing: the graph must see it
    block.w._data[...] = -2.0
    x = torch.randn(2, 3)
    np.testing.assert_array_equal(as_arrays(out.run(x))[0], block(x).detach().numpy())


def test_fold_copies_views_and_keeps_failing_ops():
    g = Graph("by_hand")
    base = np.arange(6, dtype=np.float32).reshape(2, 3)
    c = g.add_node("constant", shape=(2, 3), value=base, target="c")
    t = g.add_node("op", op="permute", args=[c], shape=(3, 2), attrs=(("dims", (1, 0)),))
    bad_a = g.add_node("constant", shape=(2,), value=np.ones(2, np.float32), target="a")
    bad_b = g.add_node("constant", shape=(3,), value=np.ones(3, np.float32), target="b")
    bad = g.add_node("op", op="add", args=[bad_a, bad_b], shape=(3,))
    g.add_node("output", args=[t, bad], shape=(3, 2), structure="tuple")
    out = fold_constants(g)
    (t_new, bad_new) = out.node(out.output)["args"]
    assert bad_new == bad and out.node(bad)["kind"] == "op"
    assert any(n.startswith(f"fold_constants: kept node {bad}") for n in out.notes)
    folded = out.node(t_new)["value"]
    np.testing.assert_array_equal(folded, base.T)
    assert not np.shares_memory(folded, base)


# ---- eliminate_common_subexpressions -----------------------------------------------------

def test_cse_exp_twice_golden():
    g = eliminate_common_subexpressions(traced(SAMPLES["exp_twice"][0], (2, 3)))
    e = Graph("expected")
    x = e.add_node("input", shape=(2, 3), target=0)
    t = e.add_node("op", op="exp", args=[x], shape=(2, 3))
    e.add_node("output", args=[e.add_node("op", op="add", args=[t, t], shape=(2, 3))],
               shape=(2, 3))
    assert_same_structure(g, e)
    assert any("merged node" in n for n in g.notes)


def test_cse_collapses_repeated_chains_and_literals():
    g = eliminate_common_subexpressions(
        traced(lambda x: (x.exp() + 1) * (x.exp() + 1), (2, 3)))
    assert g.op_counts() == {"add": 1, "exp": 1, "mul": 1}
    assert len(g.nodes_of("constant")) == 1


def test_cse_constants_params_by_hand():
    g = Graph("by_hand")
    x = g.add_node("input", shape=(3,), target=0)
    w = nn.Parameter(torch.ones(3))
    p1 = g.add_node("param", shape=(3,), target="w", ref=w, detach=False)
    p2 = g.add_node("param", shape=(3,), target="w", ref=w, detach=False)
    p3 = g.add_node("param", shape=(3,), target="w", ref=w, detach=True)   # different
    zero = g.add_node("constant", shape=(), value=np.float32(0.0), target="z")
    zero2 = g.add_node("constant", shape=(), value=np.float32(0.0), target="z2")
    neg_zero = g.add_node("constant", shape=(), value=np.float32(-0.0), target="nz")
    other = g.add_node("constant", shape=(1,), value=np.zeros(1, np.float32), target="s")
    acc = x
    for a in [p1, p2, p3, zero, zero2, neg_zero, other]:
        acc = g.add_node("op", op="add", args=[acc, a], shape=(3,))
    g.add_node("output", args=[acc], shape=(3,))
    out = check_pass(eliminate_common_subexpressions, g)
    assert set(out.nx) == set(g.nx) - {p2, zero2}
    assert len(out.users(p1)) == 2 and len(out.users(zero)) == 2


# ---- simplify_algebra --------------------------------------------------------------------

def _simplified(fn, *shapes) -> Graph:
    return eliminate_dead_code(simplify_algebra(traced(fn, *shapes)))


def _identity_graph(shape) -> Graph:
    e = Graph("expected")
    x = e.add_node("input", shape=shape, target=0)
    e.add_node("output", args=[x], shape=shape)
    return e


@pytest.mark.parametrize("name", ["identities", "left_identities", "double_transpose"])
def test_simplify_to_the_input_golden(name):
    g = simplify_algebra(traced(SAMPLES[name][0], (2, 3)))
    assert output_args(g)[0]["kind"] == "input"
    assert_same_structure(eliminate_dead_code(g), _identity_graph((2, 3)))
    assert any(n.startswith("simplify_algebra: node") for n in g.notes)


@pytest.mark.parametrize("fn", [lambda x: x.reshape(x.shape), lambda x: x / 1,
                                lambda x: apply("cast", x, dtype=np.dtype("float32")),
                                lambda x: x.permute(0, 1), lambda x: -0.0 + x,
                                lambda x: x.permute(1, 0).permute(-1, -2)])
def test_simplify_single_identities(fn):
    assert_same_structure(_simplified(fn, (2, 3)), _identity_graph((2, 3)))


def test_simplify_reshape_chain_golden():
    g = _simplified(SAMPLES["reshape_chain"][0], (2, 3))
    e = Graph("expected")
    x = e.add_node("input", shape=(2, 3), target=0)
    r = e.add_node("op", op="reshape", args=[x], shape=(3, 2), attrs=(("shape", (3, 2)),))
    two = e.add_node("constant", shape=())
    e.add_node("output", args=[e.add_node("op", op="mul", args=[r, two], shape=(3, 2))],
               shape=(3, 2))
    assert_same_structure(g, e)


def test_simplify_permute_chain_golden():
    g = _simplified(SAMPLES["permute_chain"][0], (2, 3, 4))
    e = Graph("expected")
    x = e.add_node("input", shape=(2, 3, 4), target=0)
    p = e.add_node("op", op="permute", args=[x], shape=(3, 2, 4), attrs=(("dims", (1, 0, 2)),))
    e.add_node("output", args=[e.add_node("op", op="exp", args=[p], shape=(3, 2, 4))],
               shape=(3, 2, 4))
    assert_same_structure(g, e)


@pytest.mark.parametrize("fn, shape", [
    (lambda x: x * torch.ones(2, 3), (3,)),                # broadcasting grows the shape
    (lambda x: x + torch.zeros(3, dtype=torch.float64), (3,)),  # promotion changes dtype
    (lambda x: x * 2, (3,)),                               # not neutral
    (lambda x: x * torch.tensor([1.0, 2.0, 1.0]), (3,)),   # not all ones
    (lambda x: 0 - x, (3,)),                               # 0 - x is -x
    (lambda x: x + 0, (3,)),                               # -0.0 + 0.0 is +0.0
    (lambda x: 0.0 + x, (3,)),
    (lambda x: x - (-0.0), (3,)),                          # -0.0 - -0.0 is +0.0
    (lambda x: 1 / x, (3,)),
    (lambda x: x.clone(), (3,)),                           # copy means a fresh buffer
    (lambda x: apply("cast", x, dtype=np.dtype("float64")), (3,)),
])
def test_simplify_keeps_what_is_not_an_identity(fn, shape):
    g = traced(fn, shape)
    out = check_pass(simplify_algebra, g)
    assert output_args(out)[0]["kind"] == "op"
    assert not any(n.startswith("simplify_algebra") for n in out.notes)


def test_simplify_int_times_float_one_is_kept():
    block = Fn(lambda x: x * 1.0)
    g = trace(block, torch.tensor([1, 2, 3]))
    out = simplify_algebra(g)
    assert output_args(out)[0]["kind"] == "op" and output_args(out)[0]["dtype"] == "float32"


# ---- eliminate_dead_code -----------------------------------------------------------------

def test_dce_dead_branch_golden():
    g = eliminate_dead_code(traced(dead_branch, (2, 3)))
    e = Graph("expected")
    x = e.add_node("input", shape=(2, 3), target=0)
    one = e.add_node("constant", shape=())
    e.add_node("output", args=[e.add_node("op", op="add", args=[x, one], shape=(2, 3))],
               shape=(2, 3))
    assert_same_structure(g, e)
    assert any(n.startswith("eliminate_dead_code: removed 1") for n in g.notes)


def test_dce_keeps_unused_inputs_removes_unused_state():
    g = Graph("by_hand")
    x = g.add_node("input", shape=(3,), target=0)
    unused = g.add_node("input", shape=(3,), target=1)
    w = g.add_node("param", shape=(3,), target="w", ref=torch.ones(3))
    b = g.add_node("buffer", shape=(3,), target="b", ref=torch.ones(3))
    t = g.add_node("op", op="mul", args=[w, b], shape=(3,))
    g.add_node("op", op="exp", args=[t], shape=(3,))
    g.add_node("output", args=[x], shape=(3,))
    out = check_pass(eliminate_dead_code, g)
    assert sorted(out.nx) == sorted([x, unused, out.output])


# ---- plan_buffers ------------------------------------------------------------------------

def recomputed_lifetimes(g: Graph) -> dict[int, tuple[int, int]]:
    """Independent of the pass: [definition, last use] with views extending their source."""
    order = g.order()
    pos = {n: i for i, n in enumerate(order)}
    end = {n: max([pos[u] for u in g.users(n)], default=pos[n]) for n in order}
    changed = True
    while changed:
        changed = False
        for n in order:
            d = g.node(n)
            if d["kind"] == "op" and get_op(d["op"]).may_alias and end[d["args"][0]] < end[n]:
                end[d["args"][0]] = end[n]
                changed = True
    return {n: (pos[n], end[n]) for n in order}


def assert_sound_plan(g: Graph):
    """Every planned slot fits its values, and no two values in one slot are live together."""
    live = recomputed_lifetimes(g)
    planned = [n for n in g.nx if "buffer" in g.node(n)]
    by_slot: dict[int, list[int]] = {}
    for n in planned:
        d = g.node(n)
        assert d["kind"] in ("op", "group")
        nbytes = int(np.prod(d["shape"], dtype=np.int64)) * np.dtype(d["dtype"]).itemsize
        assert g.buffers[d["buffer"]] == (nbytes, d["dtype"])
        by_slot.setdefault(d["buffer"], []).append(n)
    for members in by_slot.values():
        spans = sorted(live[n] for n in members)
        for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
            assert e1 < s2, f"overlapping lifetimes {spans} share a slot"
    return planned


@pytest.mark.parametrize("fn, shapes", [(zoo.NestMLP(), [(2, 20)]), (chain6, [(4, 5)])])
def test_plan_buffers_shares_slots(fn, shapes):
    g = traced(fn, *shapes)
    out = check_pass(plan_buffers, g)
    planned = assert_sound_plan(out)
    intermediates = [n for n in g.nodes_of("op") if n not in g.node(g.output)["args"]]
    assert sorted(planned) == sorted(intermediates)
    assert len(out.buffers) < len(intermediates)
    assert not g.buffers and not any("buffer" in g.node(n) for n in g.nx)
    assert any(n.startswith("plan_buffers:") and "bytes" in n for n in out.notes)


def test_plan_buffers_chain6_uses_two_slots():
    out = plan_buffers(traced(chain6, (4, 5)))
    assert len(out.buffers) == 2 and out.buffers[0] == (80, "float32")


def test_plan_buffers_views_keep_their_source_alive():
    # t = exp(x); v = permute(t); a = neg(x); b = neg(a); c = add(b, v)
    # Without the view rule, b could take t's slot although v (an alias of t) is read later.
    g = Graph("views")
    x = g.add_node("input", shape=(3, 3), target=0)
    t = g.add_node("op", op="exp", args=[x], shape=(3, 3))
    v = g.add_node("op", op="permute", args=[t], shape=(3, 3), attrs=(("dims", (1, 0)),))
    a = g.add_node("op", op="neg", args=[x], shape=(3, 3))
    b = g.add_node("op", op="neg", args=[a], shape=(3, 3))
    c = g.add_node("op", op="add", args=[b, v], shape=(3, 3))
    g.add_node("output", args=[g.add_node("op", op="exp", args=[c], shape=(3, 3))],
               shape=(3, 3))
    out = check_pass(plan_buffers, g)
    assert_sound_plan(out)
    assert out.node(b)["buffer"] != out.node(t)["buffer"]
    assert out.node(c)["buffer"] == out.node(a)["buffer"]  # a died before c: shared


def test_plan_buffers_skips_values_the_output_aliases():
    out = plan_buffers(traced(lambda x: x.exp().reshape(6), (2, 3)))
    assert not any("buffer" in out.node(n) for n in out.nx)
    again = plan_buffers(plan_buffers(traced(chain6, (4, 5))))
    assert_sound_plan(again)
    assert len(again.buffers) == 2


# ---- property: random traced DAGs through the cleanup pipeline -------------------------

UNARY = ["tanh", "neg", "abs", "sigmoid", "relu", "exp"]
BINARY = ["add", "sub", "mul", "div", "maximum"]
CONSTS = [np.float32(0), np.float32(1), np.ones(4, np.float32), np.zeros((3, 1), np.float32),
          np.array([[0.5, -1.0, 2.0, 1.0]], np.float32)]
SCALARS = [0, 1, 2.5]
IDENTITIES = ["mul1", "1mul", "add0", "0add", "sub0", "div1", "TT", "reshape", "cast",
              "reshape2", "permute2"]


def _identity(kind: str, v):
    if kind in ("TT", "permute2") and v.ndim < 2:
        kind = "reshape"
    return {"mul1": lambda: v * 1, "1mul": lambda: 1 * v, "add0": lambda: v + (-0.0),
            "0add": lambda: -0.0 + v, "sub0": lambda: v - 0, "div1": lambda: v / 1,
            "TT": lambda: v.T.T, "reshape": lambda: v.reshape(v.shape),
            "cast": lambda: apply("cast", v, dtype=np.dtype("float32")),
            "reshape2": lambda: v.reshape(-1).reshape(v.shape),
            "permute2": lambda: v.permute(1, 0).permute(1, 0) * 1}[kind]()


def _execute(step, pool, w):
    kind = step[0]
    if kind == "unary":
        return apply(step[1], pool[step[2]])
    if kind == "binary":
        _, op, i, j, scalar = step
        a, b = pool[i], (pool[j] if scalar is None else scalar)
        if op == "div":  # keep denominators away from zero
            b = b.abs() + 1 if scalar is None else abs(b) + 1
        return apply(op, a, b)
    if kind == "reduce":
        v = pool[step[2]]
        if v.ndim == 0:
            return v.neg()
        return apply(step[1], v, dim=step[3] % v.ndim, keepdim=True)
    if kind == "matmul":
        v = pool[step[1]]
        if v.ndim >= 1 and v.shape[-1] == 4:
            rhs = w if step[2] else torch.tensor(np.eye(4, dtype=np.float32))
            return v @ rhs
        return v * v
    if kind == "identity":
        return _identity(step[1], pool[step[2]])
    raise AssertionError(kind)


class Program(nn.Module):
    """Runs a list of steps over a growing pool of values (inputs, literal constants)."""

    def __init__(self, steps, n_out):
        super().__init__()
        self.steps, self.n_out = steps, n_out

    def forward(self, x, y, w):
        pool = [x, y] + [torch.tensor(c) for c in CONSTS]
        done = []
        for step in self.steps:
            if step[0] == "dup":  # re-run an earlier step exactly: CSE should merge it
                step = done[step[1] % len(done)] if done else ("unary", "neg", 0)
            done.append(step)
            pool.append(_execute(step, pool, w))
        return tuple(pool[-self.n_out:])


@st.composite
def programs(draw):
    steps = []
    for _ in range(draw(st.integers(1, 9))):
        size = 2 + len(CONSTS) + len(steps)
        # favour inputs and computed values, so most steps depend on the inputs
        idx = st.one_of(st.sampled_from([0, 1]), st.integers(0, size - 1),
                        st.integers(max(2 + len(CONSTS), size - 3) if steps else 0, size - 1))
        steps.append(draw(st.one_of(
            st.tuples(st.just("unary"), st.sampled_from(UNARY), idx),
            st.tuples(st.just("binary"), st.sampled_from(BINARY), idx, idx,
                      st.one_of(st.none(), st.sampled_from(SCALARS))),
            st.tuples(st.just("reduce"), st.sampled_from(["sum", "mean", "max"]), idx,
                      st.integers(0, 1)),
            st.tuples(st.just("matmul"), idx, st.booleans()),
            st.tuples(st.just("identity"), st.sampled_from(IDENTITIES), idx),  # twice: weighted up
            st.tuples(st.just("identity"), st.sampled_from(IDENTITIES), idx),
            st.tuples(st.just("dup"), st.integers(0, 8)),
        )))
    y_shape = draw(st.sampled_from([(1, 4), (3, 1), (4,), ()]))
    return steps, draw(st.integers(1, 2)), y_shape


@settings(max_examples=40, deadline=None)
@given(programs())
def test_random_dags_keep_their_results_through_the_cleanups(program):
    steps, n_out, y_shape = program
    block = Program(steps, n_out)
    g = trace(block, torch.randn(3, 4), torch.randn(*y_shape), torch.randn(4, 4))
    out = g
    for pass_fn in CLEANUPS:
        before = (out.content_hash(), out.nx.number_of_nodes())
        nxt = pass_fn(out)
        assert (out.content_hash(), out.nx.number_of_nodes()) == before
        verify(nxt, after=pass_fn.__name__)
        out = nxt
    assert_sound_plan(out)
    for _ in range(2):
        xs = [torch.randn(3, 4), torch.randn(*y_shape), torch.randn(4, 4)]
        for a, b in zip(as_arrays(g.run(*xs)), as_arrays(out.run(*xs)), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-6)


# ---- eliminate_dead_loop_state -------------------------------------------------------------

class _CarriesUnread(nn.Module):
    """``y`` is carried but never read after the loop; ``z`` feeds ``w``, which the
    condition reads, so both stay (and the trip count the tracer adds for ``x``, the
    caller's input, goes: the output is ``x * 3``, never ``x`` itself)."""

    def forward(self, x):
        y, z, w = x * 0, x * 1, x.sum() * 0
        while x.abs().sum() > 1 and w < 50:
            x = x / 2
            y = y + x
            z = z + 1
            w = w + z.sum()
        return x * 3


def _loops(g: Graph) -> list:
    return [g.node(n) for n in g.regions() if g.node(n)["kind"] == "while"]


def test_dead_loop_state_golden():
    from fusionnet.passes.eliminate_dead_loop_state import eliminate_dead_loop_state
    g = traced(_CarriesUnread(), (4, 3))
    (before,) = _loops(g)
    assert len(before["outs"]) == 5  # x, y, z, w and the trip count
    out = check_pass(eliminate_dead_loop_state, g)
    (loop,) = _loops(out)
    # x (read after the loop), z and w (the condition reads w, w reads z) stay.
    assert [tuple(s) for s, _ in loop["outs"]] == [(4, 3), (4, 3), ()]
    body = loop["body"]
    assert len(body.inputs) == len(loop["args"]) == len(loop["cond"].inputs)
    assert sorted(body.node(i)["target"] for i in body.inputs) == list(range(len(body.inputs)))
    ops = sorted(body.node(n)["op"] for n in body.nodes_of("op"))
    assert ops.count("add") == 2  # z + 1, w + z.sum(): y + x and the trip count are gone
    assert any(n.startswith("eliminate_dead_loop_state: dropped") for n in out.notes)
    # The pipeline end to end: the same values, less carried.
    again = check_pass(lambda g: eliminate_dead_code(eliminate_dead_loop_state(g)), g)
    assert len(_loops(again)[0]["outs"]) == 3


def test_dead_loop_state_keeps_what_is_read():
    from fusionnet.passes.eliminate_dead_loop_state import eliminate_dead_loop_state
    from test_control_flow import TwoCarried  # returns both carried tensors

    g = traced(TwoCarried(), (4, 3))
    out = check_pass(eliminate_dead_loop_state, g)
    assert len(_loops(out)[0]["outs"]) == len(_loops(g)[0]["outs"])
    assert not any(n.startswith("eliminate_dead_loop_state") for n in out.notes)


def test_adding_zero_to_a_negative_zero_is_not_simplified_away():
    # Fuzz case 1223001955: 0.5 / (x + zeros_like(x)) was -inf fused, +inf eager.
    x = torch.tensor([-0.0, 1.0, -2.0])
    g = simplify_algebra(traced(lambda v: 0.5 / (v + torch.zeros_like(v)), (3,)))
    assert [d["op"] for d in op_nodes(eliminate_dead_code(g))].count("add") == 1
    np.testing.assert_array_equal(g.run(x).numpy(), (0.5 / (x + torch.zeros_like(x))).numpy())
    assert np.isposinf(g.run(x).numpy()[0])
