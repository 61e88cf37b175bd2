"""Data-dependent control flow ([engine-4]): `while` / `if` on tensors become regions.

Every block here is traced once and then run — by the reference interpreter and, where
it compiles, by the fused module — at input scales and batch sizes the trace never saw,
and compared with eager (values and gradients, gradients also against finite
differences). Nothing may specialise on the values seen while tracing.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import fusionnet as torch
from fusionnet import nn, zoo
from fusionnet.graph import GraphBreak
from fusionnet.runtime import FusionFallbackWarning, fuse


class TwoCarried(nn.Module):
    """Two loop-carried tensors."""

    def forward(self, x):
        y = x * 0
        while x.abs().sum() > 1:
            x = x / 2
            y = y + x
        return x, y


class BreakLoop(nn.Module):
    """`while True` with a tensor-dependent `break`."""

    def forward(self, x):
        while True:
            x = x * 0.5
            if x.abs().max() < 0.1:
                break
        return x


class Counter(nn.Module):
    """A Python counter bounded by a constant: `and i < 40`."""

    def forward(self, x):
        i = 0
        while x.sum() > 0 and i < 40:
            x = x - 1
            i += 1
        return x * i


class Branches(nn.Module):
    """if / elif / else on tensor values."""

    def forward(self, x):
        if x.sum() > 0:
            y = x * 2
        elif x.sum() > -1:
            y = x * 3
        else:
            y = -x
        return y + 1


class EarlyReturn(nn.Module):
    """An early `return` inside a branch."""

    def forward(self, x):
        if x.mean() > 0:
            return x.exp()
        x = x * 2
        return x - 1


class LoopOverLayers(nn.Module):
    """A tensor loop inside a static Python loop over submodules."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x).tanh() * 3
            while x.abs().sum() > 1:
                x = x / 2
        return x


class Continue(nn.Module):
    """`continue` under a tensor condition."""

    def forward(self, x):
        total = x * 0
        k = x.sum() * 0
        while k < 5:
            k = k + 1
            if (x * k).sum() > 10:
                continue
            total = total + x * k
        return total


class Nested(nn.Module):
    """A loop inside a loop, both on tensors, and a branch inside."""

    def forward(self, x):
        n = x.sum() * 0
        while n < 3:
            n = n + 1
            while x.abs().max() > 2:
                x = x * 0.5
            if x.mean() > 0:
                x = x + n
            else:
                x = x - n
        return x


class Swap(nn.Module):
    """Two states passed through each other (``a, b = lin(b) / 2, a``): neither old
    array is dead after a trip, so no new state may be written into one (a GEMM would
    read its own output)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        a, b = x, x + 1
        i = 0
        while a.abs().sum() + b.abs().sum() > 1 and i < 20:
            a, b = self.lin(b) * 0.5, a
            i += 1
        return a, b


class InitReadAfter(nn.Module):
    """The loop's initial value is read again after the loop (it must stay intact)."""

    def forward(self, x):
        h = x * 2
        y = h
        while y.abs().sum() > 1:
            y = y / 2
        return y + h


class InitReadInside(nn.Module):
    """The initial value is also read by the body as a capture, every trip."""

    def forward(self, x):
        h = x * 2
        y = h
        i = 0
        while y.abs().sum() > 1 and i < 30:
            y = y / 2 + h * 1e-3
            i += 1
        return y


class OneValueTwoStates(nn.Module):
    """One new value carried into two state variables (their arrays are one)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        a, b = x, x * 3
        i = 0
        while (a - b).abs().sum() > 1e-3 and i < 20:
            a = self.lin(a + b) * 0.5
            b = a
            i += 1
        return a * 2 + b


class TempsAndLayers(nn.Module):
    """Body temporaries (GEMMs) beside the carried value, a layer after the loop that
    may take over the initial value's buffer, and loops that run no trip at all."""

    def __init__(self):
        super().__init__()
        self.lin, self.lin2, self.lin3 = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x):
        h = self.lin(x)
        i = 0
        while h.abs().sum() > 1000 and i < 100:
            # tanh keeps it a contraction (|h| tends to 2 or less) at every scale
            h = self.lin3(self.lin2(self.lin(h)).relu()).tanh() + h * 0.5
            i += 1
        return self.lin2(h) + h


class AliasedLoopResults(nn.Module):
    """A loop whose two results are one array, then a loop that takes one of them over:
    it may not write into that array, which the other result still is."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        a, b = x * 2, x * 3
        i = 0
        while (a - b).abs().sum() > 1e-3 and i < 20:
            a = self.lin(a + b) * 0.5
            b = a
            i += 1
        j = 0
        while a.abs().sum() > 1 and j < 30:
            a = self.lin(a) * 0.5
            j += 1
        return a + b


class ViewOfInit(nn.Module):
    """A view of the loop's initial value, made before the loop and read after it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        h = self.lin(x)
        v = h.reshape(-1)
        i = 0
        while h.abs().sum() > 1 and i < 30:
            h = self.lin(h) * 0.5
            i += 1
        return h.sum() + v.sum()


BLOCKS = {
    "FixedHiddenMLP": (zoo.FixedHiddenMLP, (2, 20)),
    "Chimera": (zoo.Chimera, (2, 20)),
    "TwoCarried": (TwoCarried, (3, 4)),
    "BreakLoop": (BreakLoop, (3, 4)),
    "Counter": (Counter, (2, 3)),
    "Branches": (Branches, (2, 3)),
    "EarlyReturn": (EarlyReturn, (2, 3)),
    "LoopOverLayers": (LoopOverLayers, (2, 4)),
    "Continue": (Continue, (2, 3)),
    "Nested": (Nested, (2, 3)),
    "Swap": (Swap, (2, 3)),
    "InitReadAfter": (InitReadAfter, (2, 3)),
    "InitReadInside": (InitReadInside, (2, 3)),
    "OneValueTwoStates": (OneValueTwoStates, (2, 3)),
    "TempsAndLayers": (TempsAndLayers, (2, 6)),
    "AliasedLoopResults": (AliasedLoopResults, (2, 3)),
    "ViewOfInit": (ViewOfInit, (2, 3)),
}
SCALES = (0.0, 1e-3, 0.5, 1.0, -1.0, 7.0, 1e3, 1e9, 1e18)  # 0 to ~60 halvings


def _tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _close(got, want):
    for g, w in zip(_tuple(got), _tuple(want), strict=True):
        assert tuple(g.shape) == tuple(w.shape) and g.dtype == w.dtype
        np.testing.assert_allclose(g.detach().numpy(), w.detach().numpy(), rtol=1e-5,
                                   atol=1e-6, equal_nan=True)


def _built(name):
    cls, shape = BLOCKS[name]
    torch.manual_seed(0)
    block = cls()
    block(torch.randn(*shape))  # materialise lazy layers
    return block, shape


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_traced_regions_equal_eager_at_unseen_scales_and_batches(name):
    block, shape = _built(name)
    graph = torch.trace(block, torch.randn(*shape))
    assert graph.complete
    kinds = {graph.node(n)["kind"] for n in graph.regions()}
    assert kinds & {"while", "cond"}, kinds
    base = torch.randn(*shape)
    for scale in SCALES:
        x = base * scale
        with torch.no_grad():
            _close(graph.run(x), block(x))


def test_if_else_takes_both_ways_under_one_trace():
    block = Branches()
    graph = torch.trace(block, torch.ones(2, 3))
    for x in (torch.ones(2, 3), -torch.ones(2, 3) * 0.1, -torch.ones(2, 3)):
        _close(graph.run(x), block(x))


def _grads(fn, block, x):
    block.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    sum((o * (i + 1)).sum() for i, o in enumerate(_tuple(out))).backward()
    return [x.grad] + [p.grad for p in block.parameters()]


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_gradients_through_regions_equal_eager(name):
    block, shape = _built(name)
    x = torch.randn(*shape) * 3
    graph = torch.trace(block, x)
    with torch.enable_grad():
        got = _grads(graph.run, block, x)
        want = _grads(block, block, x)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)


def test_gradient_through_a_loop_matches_finite_differences():
    block = TwoCarried()
    x = torch.tensor([[3.0, -1.5], [0.25, 2.0]], dtype=torch.float64)
    graph = torch.trace(block, x)
    xg = x.clone().requires_grad_(True)
    a, b = graph.run(xg)
    (a.sum() + 2 * b.sum()).backward()
    eps = 1e-6
    fd = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            d = np.zeros((2, 2))
            d[i, j] = eps
            up = [t.numpy().sum() for t in graph.run(torch.tensor(x.numpy() + d))]
            dn = [t.numpy().sum() for t in graph.run(torch.tensor(x.numpy() - d))]
            fd[i, j] = ((up[0] - dn[0]) + 2 * (up[1] - dn[1])) / (2 * eps)
    np.testing.assert_allclose(xg.grad.numpy(), fd, rtol=1e-5, atol=1e-7)


def test_weight_updates_after_tracing_change_the_trip_count():
    block, shape = _built("FixedHiddenMLP")
    x = torch.rand(*shape)
    graph = torch.trace(block, x)
    for factor in (10.0, 1e-3, 1e4):
        with torch.no_grad():
            for p in block.parameters():
                p.mul_(factor)
            _close(graph.run(x), block(x))


def test_converted_source_is_kept_and_only_tensor_statements_change():
    block, shape = _built("FixedHiddenMLP")
    graph = torch.trace(block, torch.rand(*shape))
    src = graph.converted["FixedHiddenMLP.forward"]
    assert "__ag.while_stmt(" in src and "X = self.linear(X)" in src
    assert "X @ self.rand_weight" in src  # untouched lines stay as written
    report = str(torch.explain(block, torch.rand(*shape)))
    assert "-- converted source (autograph) --" in report and "while r" in report


def test_exec_defined_forward_says_why_it_cannot_be_converted():
    namespace = {}
    exec("def forward(self, x):\n    while x.sum() > 1:\n        x = x / 2\n    return x\n",
         namespace)

    class Exec(nn.Module):
        forward = namespace["forward"]

    with pytest.raises(GraphBreak, match="source of forward is not available"):
        torch.trace(Exec(), torch.ones(3))


def test_convert_false_breaks_as_before():
    block, shape = _built("FixedHiddenMLP")
    with pytest.raises(GraphBreak, match="bool"):
        torch.trace(block, torch.rand(*shape), convert=False)


def test_a_loop_variable_that_changes_shape_is_refused_with_a_reason():
    class Grows(nn.Module):
        def forward(self, x):
            while x.sum() < 100:
                x = torch.cat([x, x])
            return x

    with pytest.raises(GraphBreak, match="changes from"):
        torch.trace(Grows(), torch.ones(2))


def test_a_parent_that_cannot_compile_calls_its_children_compiled():
    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = zoo.MLP(), nn.Linear(10, 3)

        def forward(self, x):
            h = self.a(x)
            scale = float(h.abs().max().item())  # a Python value: not compilable
            return self.b(h / scale)

    parent = Parent()
    x = torch.rand(4, 20)
    parent(x)
    fused = fuse(parent)
    with pytest.warns(FusionFallbackWarning, match="own forward eagerly.*item\\(\\)"):
        got = fused(x)
    _close(got, parent(x))
    runner = fused._fusion_runner
    children = list(runner.children.values())
    assert len(children) == 2
    assert all(e.fn is not None for c in children for e in c.exact.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = str(torch.explain(fused, x))
    assert "its children compiled" in report and "child Parent.a: compiled" in report


# ---- compiled: the regions run as native loops and branches ----------------------------------

@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_fused_regions_compile_and_equal_eager(name):
    block, shape = _built(name)
    fused = fuse(block, fallback=False)
    base = torch.randn(*shape)
    with torch.no_grad():
        for batch in (shape[0], 5, 64):
            x = torch.randn(batch, *shape[1:])
            for scale in SCALES:
                _close(fused(x * scale), block(x * scale))
    entry = next(iter(fused._fusion_runner.exact.values()))
    assert entry.fn is not None
    source = entry.compiled.kernel_sources["forward"]
    assert "while " in source or "if " in source
    del base


@pytest.mark.parametrize("name", ["FixedHiddenMLP", "TwoCarried", "Branches", "Nested"])
def test_fused_gradients_through_regions_equal_eager(name):
    block, shape = _built(name)
    fused = fuse(block, fallback=False)
    x = torch.randn(*shape) * 3
    got = _grads(fused, block, x)
    want = _grads(block, block, x)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)


def test_fused_loop_sees_weight_updates():
    block, shape = _built("FixedHiddenMLP")
    fused = fuse(block, fallback=False)
    x = torch.rand(*shape)
    with torch.no_grad():
        for factor in (10.0, 1e-3, 1e4):
            for p in block.parameters():
                p.mul_(factor)
            _close(fused(x), block(x))
    assert fused._fusion_runner.compiles == ["first call"]


class _DeadCarried(nn.Module):
    """Two loop-carried tensors, one never read after the loop (its item is dead)."""

    def forward(self, x):
        y = x * 0
        while x.abs().sum() > 1:
            x = x / 2
            y = y + x
        return x * 3


def test_a_dead_loop_result_keeps_the_symbolic_batch_size():
    # A result no item reads any more used to take the region's traced shape (the probe
    # batch); the CUDA plan allocates loop results by these shapes.
    from fusionnet.codegen.lower import Loop
    block = _DeadCarried()
    fused = fuse(block, fallback=False)
    with torch.no_grad():
        for batch in (128, 5):
            x = torch.randn(batch, 6) * 40
            _close(fused(x), block(x))
    entry = next(iter(fused._fusion_runner.generic.values()))
    prog = entry.compiled.program
    loops = [s for s in prog.steps if isinstance(s, Loop)]
    assert loops and all(prog.shapes[o] == prog.shapes[w] for lp in loops
                         for o, w in zip(lp.outs, lp.state))
    assert all("B" in str(prog.shapes[o]) for lp in loops for o in lp.outs)


# ---- in-place writes where eager's region result *is* an outer tensor ----------------------

class _WriteAfterLoop(nn.Module):
    """Fuzz case 1215000294: with no trip, ``h`` is the input itself, and ``clamp_``
    writes into the caller's tensor (or raises for a leaf that requires grad)."""

    def forward(self, x):
        h = x
        while h.abs().max() > 1000.0:
            h = h * 0.5
        h.clamp_(min=-1.0)
        return h * 2


class _WriteAfterBranch(nn.Module):
    """The else branch leaves ``h`` as it was: in eager ``h.add_`` then changes ``g``."""

    def forward(self, x):
        g = x * 1.5
        h = g
        if h.sum() > 0:
            h = h * 2
        h.add_(1.0)
        return g + h


@pytest.mark.parametrize("scale", [1.0, 1e6])   # no trip, and ~10 trips
def test_an_in_place_write_into_a_loop_result_runs_eagerly_and_equals_eager(scale):
    block = _WriteAfterLoop()
    fused = fuse(block)
    x = torch.randn(3, 4) * scale
    xe, xf = x.clone(), x.clone()
    want = block(xe)
    with pytest.warns(FusionFallbackWarning, match="in-place write into a result of the "
                                                   "tensor-dependent while"):
        got = fused(xf)
    _close(got, want)
    _close(xf, xe)   # with no trip both wrote into the caller's tensor
    leaf = torch.randn(3, 4).requires_grad_()
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        block(leaf)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        fused(leaf)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_an_in_place_write_into_a_branch_result_equals_eager_both_ways(sign):
    block = _WriteAfterBranch()
    fused = fuse(block)
    x = torch.rand(3, 4) * sign
    with pytest.warns(FusionFallbackWarning, match="tensor-dependent cond"):
        got = fused(x)
    _close(got, block(x))


class _WriteIntoTheBaseOfALoopInit(nn.Module):
    """The loop starts from a view of ``g``: with no trip its result *is* that view, so
    a write into ``g`` shows through it in eager."""

    def forward(self, x):
        g = x * 1.0
        h = g.view(-1)
        while h.abs().max() > 1000.0:
            h = h * 0.5
        g.add_(1.0)
        return h * 1.0


@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_a_write_into_the_base_of_a_loop_initial_value_equals_eager(scale):
    block = _WriteIntoTheBaseOfALoopInit()
    x = torch.randn(3, 4) * scale
    with pytest.warns(FusionFallbackWarning, match="tensor-dependent while"):
        got = fuse(block)(x)
    _close(got, block(x))


# ---- a region result that *is* the caller's tensor in eager --------------------------------

class _HalveUntilSmall(nn.Module):
    """Fuzz case 1216000831: with no trip eager returns ``x``, the caller's tensor."""

    def forward(self, x):
        while x.abs().sum() > 100.0:
            x = x / 2
        return x


class _DoubleIfPositive(nn.Module):
    """When the sum is not positive eager returns ``x`` itself (the else branch)."""

    def forward(self, x):
        if x.sum() > 0:
            x = x * 2
        return x, x.sum()


class _SwapInALoop(nn.Module):
    """``a, b = f(b), a``: after exactly one trip ``b`` is the caller's ``a``; after
    none ``a`` is the caller's ``a`` and ``b`` the caller's ``b``."""

    def forward(self, a, b):
        while (a.abs().sum() + b.abs().sum()) > 10.0:
            a, b = b * 0.25, a
        return a, b


class _CycleOfThree(nn.Module):
    """A pure rotation: every result is one of the caller's tensors, which one depending
    on the trip count modulo 3 (the runtime walks the rotation, not the trips)."""

    def forward(self, a, b, c, n):
        while n > 0:
            a, b, c = b, c, a
            n = n - 1
        return a, b, c


def _same_objects(got, want, inputs):
    """Each result is the same caller object as eager's, or a new tensor where eager's
    is; values, requires_grad and leaf-ness agree."""
    for g, w in zip(_tuple(got), _tuple(want), strict=True):
        assert [g is x for x in inputs] == [w is x for x in inputs]
        assert g.requires_grad == w.requires_grad and g.is_leaf == w.is_leaf
    _close(got, want)


@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_a_loop_that_runs_no_trip_returns_the_callers_tensor(scale):
    block = _HalveUntilSmall()
    fused = fuse(block, fallback=False)
    for requires_grad in (False, True):
        x = (torch.randn(4, 5) * scale).requires_grad_(requires_grad)
        _same_objects(fused(x), block(x), [x])
    entry = next(iter(fused._fusion_runner.generic.values()))
    assert entry.fn is not None and entry.hidden == 1  # compiled, with a trip count
    # Gradients through either path equal eager's.
    for s in (1.0, 1e3):
        xe = (torch.randn(4, 5) * s).requires_grad_()
        xf = xe.detach().clone().requires_grad_()
        (block(xe) * 3).sum().backward()
        (fused(xf) * 3).sum().backward()
        _close(xf.grad, xe.grad)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_branch_that_hands_its_input_on_returns_the_callers_tensor(sign):
    block = _DoubleIfPositive()
    fused = fuse(block, fallback=False)
    x = (torch.rand(3, 4) + 0.1) * sign
    _same_objects(fused(x), block(x), [x])
    xg = x.clone().requires_grad_()
    _same_objects(fused(xg), block(xg), [xg])


@pytest.mark.parametrize("scale", [0.1, 1.2, 3.0, 40.0])  # 0, 1, 2 and more trips
def test_swapped_loop_state_is_the_callers_tensor_after_the_right_trips(scale):
    block = _SwapInALoop()
    fused = fuse(block, fallback=False)
    a, b = torch.ones(2, 3) * scale, torch.ones(2, 3) * scale
    _same_objects(fused(a, b), block(a, b), [a, b])


@pytest.mark.parametrize("trips", [0, 1, 2, 3, 4, 5, 31])
def test_a_rotation_of_three_returns_the_right_callers_tensors(trips):
    block = _CycleOfThree()
    fused = fuse(block, fallback=False)
    xs = [torch.randn(2) for _ in range(3)] + [torch.tensor(trips)]
    _same_objects(fused(*xs), block(*xs), xs)


def test_trips_lead_to_walks_a_rotation_modulo_its_length():
    from fusionnet.autograph.record import trips_lead_to
    rotation = (("state", 1), ("state", 2), ("state", 0))
    assert [trips_lead_to(rotation, 0, t) for t in (0, 1, 2, 3, 10 ** 12)] == \
        [("state", 0), ("state", 1), ("state", 2), ("state", 0), ("state", 1)]
    handed = (None, ("state", 0), ("capture", 0))  # a fresh a; b = a; c = a capture
    assert trips_lead_to(handed, 1, 0) == ("state", 1)
    assert trips_lead_to(handed, 1, 1) == ("state", 0)
    assert trips_lead_to(handed, 1, 2) is None
    assert trips_lead_to(handed, 2, 5) == ("capture", 0)


class _HandOnThroughAnInnerLoop(nn.Module):
    """The inner loop may run no trip on every outer trip, so eager may return ``x``
    itself; the final trip counts cannot tell: the block runs eagerly, saying why."""

    def forward(self, x):
        n = x.sum() * 0
        while n < 2:
            n = n + 1
            while x.abs().sum() > 100.0:
                x = x / 2
        return x


def test_a_hand_on_the_compiled_code_cannot_select_runs_eagerly():
    block = _HandOnThroughAnInnerLoop()
    fused = fuse(block)
    x = torch.randn(3, 4)
    with pytest.warns(FusionFallbackWarning, match="output 0 may be input 0 itself"):
        got = fused(x)
    _same_objects(got, block(x), [x])


# ---- requires_grad of a region's results: per result, per trip count or branch -------------

class _GrowsGradInTheLoop(nn.Module):
    """Fuzz case 1221000148: ``h`` starts from values that do not require grad and
    requires grad after one trip through the Linear; ``k`` never meets a parameter.
    One output at a time (several outputs that need grad take the interpreter's path)."""

    def __init__(self, which: int):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.which = which

    def forward(self, x):
        with torch.no_grad():
            h = x * 1.0
        k = h + 1
        while h.abs().max() > 10.0:
            h = self.lin(h) * 0.01
            k = k * 0.5
        return h if self.which == 0 else k


class _GrowsGradInABranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        h = x * 1.0
        if h.sum() > 0:
            h = self.lin(h)
        return h * 2


def _grad_state(out):
    return [(t.requires_grad, t.grad_fn is None) for t in _tuple(out)]


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("scale", [1.0, 100.0])  # traced with no trip, or with trips
def test_a_loop_result_requires_grad_exactly_when_eagers_does(scale, which):
    block = _GrowsGradInTheLoop(which)
    fused = fuse(block)
    for s in (scale, 101.0 - scale, scale):
        x = torch.ones(2, 3) * s
        want, got = block(x), fused(x)
        assert _grad_state(got) == _grad_state(want)
        _close(got, want)
        if not want.requires_grad:
            for out in (want, got):
                with pytest.raises(RuntimeError, match="does not require grad"):
                    out.sum().backward()
    if which == 1:  # k never requires grad, whatever the trip count
        assert _grad_state(fused(torch.ones(2, 3) * 100.0)) == [(False, True)]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_branch_result_requires_grad_exactly_when_eagers_does(sign):
    block = _GrowsGradInABranch()
    fused = fuse(block)
    for s in (sign, -sign):
        x = torch.rand(2, 3) * s
        want, got = block(x), fused(x)
        assert _grad_state(got) == _grad_state(want)
        _close(got, want)


def test_grad_classes_of_a_loop_repeat_from_where_they_cycle():
    from fusionnet.autograph.record import grad_class
    classes, start = ((False, False), (True, False), (True, True)), 1
    assert [grad_class(classes, start, t) for t in (0, 1, 2, 3, 4, 10 ** 9)] == \
        [(False, False), (True, False), (True, True), (True, False), (True, True),
         (True, True)]
