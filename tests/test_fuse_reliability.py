"""Regression tests for `fuse`: never silently wrong, never a crash ([rel-2]).

Each test names the issue item it guards. Every comparison is fused vs eager on the
same module (and PyTorch where it defines the semantics).
"""
from __future__ import annotations

import collections
import copy
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fusionnet as torch
from fusionnet import nn, zoo
from fusionnet.nn import functional as F
from fusionnet.runtime import FusionFallbackWarning, fuse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _np(t):
    return t.detach().numpy()


def _compiles(fused):
    runner = fused.__dict__.get("_fusion_runner") or fused._fusion_runner
    return runner.compiles


def _same(got, want, rtol=1e-5, atol=1e-6):
    assert tuple(got.shape) == tuple(want.shape)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(_np(got), _np(want), rtol=rtol, atol=atol)


# ---- 1. symbolic sizes are decided soundly ---------------------------------------------------

class RowSum(nn.Module):
    def forward(self, X):
        return X.sum(1)


class ScaleByParam(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.w = nn.Parameter(torch.randn(features))

    def forward(self, X):
        return (X * self.w).relu() + 1


@pytest.mark.parametrize("features", [194, 226, 97 * 113])
def test_static_size_that_is_a_multiple_of_a_probe_stays_static(features):
    """Item 1: first call at batch 97 with a static size that is a multiple of 97."""
    for block in (RowSum(), ScaleByParam(features)):
        fused = fuse(block)
        with torch.no_grad():
            for batch in (97, 5, 113, 2, 300):
                X = torch.randn(batch, features)
                _same(fused(X), block(X), rtol=1e-4, atol=1e-4)


def test_no_out_of_bounds_access_at_large_batch_after_a_probe_sized_first_call():
    """Item 1: the elementwise case read out of bounds (a segfault) at batch 3000."""
    script = textwrap.dedent("""
        import numpy as np
        import fusionnet as torch
        from fusionnet import nn

        class Scale(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.randn(194))
            def forward(self, X):
                return X * self.w

        block = Scale()
        fused = torch.fuse(block)
        with torch.no_grad():
            for batch in (97, 3000, 1, 4096):
                X = torch.randn(batch, 194)
                np.testing.assert_allclose(fused(X).numpy(), block(X).numpy(), rtol=1e-6)
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_slices_that_depend_on_the_batch_size_get_their_own_compile():
    """A generic entry compiled at batch 10 must not serve batch 3 for `x[:5]`."""
    class Head(nn.Module):
        def forward(self, x):
            return x[:5] * 2

    block = Head()
    fused = fuse(block)
    with torch.no_grad():
        for batch in (10, 3, 64, 4, 5):
            X = torch.randn(batch, 6)
            _same(fused(X), block(X))


# ---- 2. shape-dependent ops key the compiled code on what they depend on -------------------

@pytest.mark.parametrize("squeeze, rest", [(lambda t: t.squeeze(), (1,)),
                                           (lambda t: t.squeeze(0), ())])
def test_squeeze_at_batch_one_after_compiling_at_64(squeeze, rest):
    class Squeeze(nn.Module):
        def forward(self, x):
            return squeeze(x * 2)

    block = Squeeze()
    fused = fuse(block)
    fused(torch.randn(64, *rest))
    x = torch.randn(1, *rest, requires_grad=True)
    got, want = fused(x), block(x)
    assert tuple(got.shape) == tuple(want.shape) == ()
    got.backward()
    g_fused = x.grad.numpy().copy()
    x.grad = None
    want.backward()
    np.testing.assert_array_equal(g_fused, x.grad.numpy())


# ---- 3. in-place ops through views ------------------------------------------------------------

VIEW_WRITES = {
    "view": lambda h: h.view(-1).mul_(2),
    "reshape": lambda h: h.reshape(-1).mul_(2),
    "t": lambda h: h.t().add_(1),
    "unsqueeze": lambda h: h.unsqueeze(0).mul_(3),
    "slice": lambda h: h[:, 1:].mul_(5),
    "view_of_slice": lambda h: h.view(-1)[2:4].add_(7),
    "setitem_on_view": lambda h: h.t().__setitem__((0, slice(None)), 9.0),
    "augmented": lambda h: h.view(12).__imul__(4),
}


@pytest.mark.parametrize("write", sorted(VIEW_WRITES))
def test_inplace_through_views_changes_the_base(write):
    class Block(nn.Module):
        def forward(self, x):
            h = x * 1
            other = h.view(-1)            # a second view taken before the write
            VIEW_WRITES[write](h)
            return h * 1 + other.sum()

    block = Block()
    x = torch.randn(3, 4, requires_grad=True)
    graph = torch.trace(block, x)         # the graph itself must say what eager does
    _same(graph.run(x), block(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FusionFallbackWarning)  # slices run eagerly for now
        fused = fuse(block)
        got, want = fused(x), block(x)
    _same(got, want)
    got.sum().backward()
    g_fused = x.grad.numpy().copy()
    x.grad = None
    want.sum().backward()
    np.testing.assert_allclose(g_fused, x.grad.numpy(), rtol=1e-6)


def test_inplace_through_a_view_of_the_input_is_refused_and_runs_eagerly():
    class Block(nn.Module):
        def forward(self, x):
            x.view(-1).mul_(2)            # eager changes the caller's tensor
            return x + 1

    block = Block()
    fused = fuse(block)
    x, y = torch.ones(2, 3), torch.ones(2, 3)
    with pytest.warns(FusionFallbackWarning, match="writes into its input"):
        got = fused(x)
    want = block(y)
    _same(got, want)
    np.testing.assert_array_equal(x.numpy(), y.numpy())  # the caller's tensor changed alike


def test_inplace_through_detach_is_refused():
    class Block(nn.Module):
        def forward(self, x):
            h = x * 1
            h.detach().mul_(2)
            return h + 1

    block = Block()
    with pytest.warns(FusionFallbackWarning, match="detach"):
        got = fuse(block)(torch.ones(2, 3))
    _same(got, block(torch.ones(2, 3)))


# ---- 4. detach(), .data and no_grad() inside forward stop the gradient ---------------------

class StopGradients(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        straight = h + (h.sign() - h).detach()      # straight-through estimator
        held = h.data * 3                           # .data: no gradient
        with torch.no_grad():
            scale = h.abs().sum() + 1               # computed without history
        return (straight * 2 + held + h * scale).sum()


def _grads(block, x):
    block.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    out = block(x)
    out.backward()
    return [out] + [x.grad] + [p.grad for p in block.parameters()]


def test_detach_data_and_no_grad_inside_forward_stop_gradients():
    torch.manual_seed(0)
    block = StopGradients()
    x = torch.randn(3, 4)
    want = _grads(block, x)
    got = _grads(fuse(block), x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(_np(g), _np(w), rtol=1e-5, atol=1e-5)


def test_detach_and_no_grad_match_pytorch():
    torch_ = pytest.importorskip("torch")
    torch.manual_seed(0)
    block = StopGradients()
    x = torch.randn(3, 4)
    got = _grads(fuse(block), x)
    lin = torch_.nn.Linear(4, 4)
    with torch_.no_grad():
        lin.weight.copy_(torch_.from_numpy(_np(block.lin.weight).copy()))
        lin.bias.copy_(torch_.from_numpy(_np(block.lin.bias).copy()))
    tx = torch_.from_numpy(x.numpy().copy()).requires_grad_(True)
    h = lin(tx)
    straight = h + (h.sign() - h).detach()
    held = h.data * 3
    with torch_.no_grad():
        scale = h.abs().sum() + 1
    out = (straight * 2 + held + h * scale).sum()
    out.backward()
    want = [out, tx.grad, lin.weight.grad, lin.bias.grad]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(_np(g), w.detach().numpy(), rtol=1e-4, atol=1e-4)


# ---- 5. grad mode and requires_grad read in forward --------------------------------------

class GradModeBranches(nn.Module):
    def forward(self, x):
        a = x * 2 if torch.is_grad_enabled() else x * 3
        b = a + 1 if x.requires_grad else a - 1
        return b


def test_forward_that_reads_grad_mode_and_requires_grad():
    block = GradModeBranches()
    fused = fuse(block)
    base = torch.randn(2, 3)
    for mode in (False, True, False, True):
        for rg in (False, True):
            x = base.clone().requires_grad_(rg)
            with torch.set_grad_enabled(mode):
                got, want = fused(x), block(x)
            _same(got, want)
            assert got.requires_grad == want.requires_grad


# ---- 6. outputs require grad exactly as eager's do -----------------------------------------

@pytest.mark.parametrize("fn", [
    lambda x: x.sign(), lambda x: x > 0, lambda x: (x * 2).argmax(dim=1),
    lambda x: (x * 2).detach(), lambda x: x.data + 1, lambda x: x * 2,
])
def test_outputs_require_grad_exactly_as_eager(fn):
    class Block(nn.Module):
        def forward(self, x):
            return fn(x)

    block = Block()
    fused = fuse(block)
    x = torch.randn(3, 4, requires_grad=True)
    got, want = fused(x), block(x)
    assert got.requires_grad == want.requires_grad
    assert (got.grad_fn is None) == (want.grad_fn is None)
    if not want.requires_grad:
        for out in (want, got):
            with pytest.raises(RuntimeError, match="does not require grad"):
                out.sum().backward()


# ---- 9. output structures are rebuilt ------------------------------------------------------

Pair = collections.namedtuple("Pair", ["low", "high"])


class Structured(nn.Module):
    def forward(self, x):
        return {"pair": Pair(x - 1, x + 1), "list": [x * 2, None, 3], "t": (x.sum(),),
                "name": "ok"}


def test_namedtuple_dict_and_nested_outputs_are_rebuilt():
    block = Structured()
    fused = fuse(block, fallback=False)
    x = torch.randn(2, 3)
    with torch.no_grad():
        got, want = fused(x), block(x)
    assert type(got["pair"]) is Pair and got["name"] == "ok"
    assert got["list"][1] is None and got["list"][2] == 3 and isinstance(got["list"], list)
    _same(got["pair"].low, want["pair"].low)
    _same(got["pair"].high, want["pair"].high)
    _same(got["list"][0], want["list"][0])
    _same(got["t"][0], want["t"][0])
    # with grad: each output still has the structure and its own gradient
    x.requires_grad_(True)
    out = fused(x)
    assert type(out["pair"]) is Pair
    (out["pair"].high.sum() + out["list"][0].sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 3), 3.0))


# ---- 10. Python state read by forward is guarded -----------------------------------------

SCALE = 2.0
OFFSET = torch.ones(3)


class ReadsPythonState(nn.Module):
    def __init__(self):
        super().__init__()
        self.cfg = [1, 2]
        self.table = {"shift": 0.5}
        self.consts = [torch.ones(3)]

    def forward(self, x):
        return x * self.cfg[0] * SCALE + self.table["shift"] + OFFSET + self.consts[0]


def test_mutable_state_and_globals_read_by_forward_are_guarded():
    global SCALE, OFFSET
    block = ReadsPythonState()
    fused = fuse(block)
    x = torch.randn(4, 3)

    def check():
        with torch.no_grad():
            _same(fused(x), block(x))

    check()
    block.cfg[0] = 3                         # a list attribute mutated in place
    check()
    block.table["shift"] = -1.0              # a dict entry
    check()
    old_scale, old_offset = SCALE, OFFSET
    try:
        SCALE = 0.25                         # a global float
        check()
        OFFSET = torch.full((3,), 7.0)       # a global tensor rebound
        check()
        OFFSET.mul_(2)                       # ... and changed in place
        check()
        block.consts[0] = torch.zeros(3)     # a tensor inside a list attribute
        check()
        block.consts[0].add_(5)
        check()
    finally:
        SCALE, OFFSET = old_scale, old_offset
    assert any("changed" in c for c in _compiles(fused)[1:])



def test_globals_of_exec_built_user_code_stay_guarded():
    # Code built by exec() has no file; it is still the user's when the user's forward
    # (or Module's call machinery, for an exec'd forward) runs it, so its globals are
    # guarded; library wrappers of the same kind (namedtuple's __new__) are not.
    ns = {"torch": torch, "K": 2.0}
    exec("def helper(x):\n    return x * K\n"                       # noqa: S102
         "def forward(self, x):\n    return helper(x) + K\n", ns)
    Block = type("ExecBlock", (nn.Module,), {"forward": ns["forward"]})
    block = Block()
    fused = fuse(block)
    x = torch.randn(3, 2)
    with torch.no_grad():
        _same(fused(x), block(x))
        ns["K"] = -3.0
        _same(fused(x), block(x))
    assert any("global 'K'" in c for c in _compiles(fused)[1:])


def test_library_generated_code_is_not_guarded_per_call():
    import collections

    Pair = collections.namedtuple("Pair", "a b")

    class UsesNamedTuple(nn.Module):
        def forward(self, x):
            p = Pair(x, x + 1)
            return p.a * p.b

    from fusionnet.runtime.runner import FusionRunner
    fused = fuse(UsesNamedTuple())
    with torch.no_grad():
        fused(torch.randn(2, 2))
    runner = next(v for v in vars(fused).values() if isinstance(v, FusionRunner))
    (entry,) = runner.exact.values()
    assert not [c.what for c in entry.per_call if "_tuple_new" in c.what]


def test_chimera_takes_the_inline_cache():
    # Per-call guards put an entry off the runner's fast path (x10 at batch 2): the
    # autograph-converted chimera must read no Python state that needs them.
    from fusionnet import zoo
    from fusionnet.runtime.runner import FusionRunner
    net = zoo.Chimera()
    fused = fuse(net, fallback=False)
    x = torch.rand(2, 20)
    with torch.no_grad():
        fused(x)
        _same(fused(x), net(x))
    runner = next(v for v in vars(fused).values() if isinstance(v, FusionRunner))
    (entry,) = runner.exact.values()
    assert [c.what for c in entry.per_call] == []
    assert entry.fast and runner.last is not None and runner.last[5] is entry

def test_submodule_training_flag_is_guarded():
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(3, 3)

        def forward(self, x):
            return self.inner(x) * (2.0 if self.inner.training else 5.0)

    block = Outer()
    fused = fuse(block)
    x = torch.randn(2, 3)
    with torch.no_grad():
        _same(fused(x), block(x))
        block.inner.eval()                   # only the child changes mode
        _same(fused(x), block(x))


# ---- 11. hooks and attributes on the fuse(net) wrapper --------------------------------------

def test_hooks_and_attributes_on_the_wrapper_take_effect():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = 2.0

        def forward(self, x):
            return x * self.scale

    block = Scaled()
    fused = fuse(block)
    x = torch.ones(2, 2)
    seen = []
    handle = fused.register_forward_hook(lambda m, args, out: out + 100)
    fused.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    with torch.no_grad():
        assert fused(x).tolist() == [[102.0, 102.0]] * 2
        fused.scale = 3.0                    # set on the wrapper: the original reads it
        assert block.scale == 3.0
        assert fused(x).tolist() == [[103.0, 103.0]] * 2
        handle.remove()
        assert fused(x).tolist() == [[3.0, 3.0]] * 2
    assert len(seen) == 3


# ---- 20. deep copies ---------------------------------------------------------------------

@fuse
class DecoratedMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x).relu()


def test_deepcopy_gives_an_independent_fused_module():
    x = torch.randn(4, 3)
    for original in (fuse(zoo.MLP()), DecoratedMLP()):
        original(torch.randn(4, 20) if isinstance(original, torch.FusedModule) else x)
        twin = copy.deepcopy(original)
        inp = torch.randn(4, 20) if isinstance(original, torch.FusedModule) else x
        with torch.no_grad():
            _same(twin(inp), original(inp))
            for p in twin.parameters():
                p.add_(1.0)                  # EMA/target-network style update of the copy
            assert not np.allclose(_np(twin(inp)), _np(original(inp)))
        plain = twin.original if isinstance(twin, torch.FusedModule) else twin
        eager = copy.deepcopy(plain)
        if isinstance(twin, torch.FusedModule):
            with torch.no_grad():
                _same(twin(inp), eager(inp))
        for p, q in zip(twin.parameters(), original.parameters()):
            assert p is not q


# ---- 21. a parent holding a fused child -----------------------------------------------------

def test_parent_with_a_fused_child_does_not_recompile_on_unrelated_changes():
    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.sub = fuse(nn.Linear(4, 4))
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.sub(x).relu())

    parent = Parent()
    fused = fuse(parent)
    x = torch.randn(3, 4)
    with torch.no_grad():
        fused(x)
        parent.unrelated = 5                 # bumps the structure version
        fused(x)
        parent.head.bias.data = torch.zeros(2)
        _same(fused(x), parent(x))
    assert _compiles(fused) == ["first call"]


# ---- 22. clear errors ------------------------------------------------------------------------

def test_bad_inputs_get_eager_errors_that_say_what_was_expected():
    mlp = zoo.MLP()
    fused = fuse(mlp)
    fused(torch.rand(2, 20))
    with pytest.raises(TypeError, match=r"linear\(\): argument 'input' must be Tensor, not list"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FusionFallbackWarning)
            fused([[0.0] * 20])
    with pytest.raises(RuntimeError, match="rank >= 1") as info:
        fused(torch.tensor(3.0))
    assert any("compiled for: (B, 20) float32" in n for n in info.value.__notes__)
    fused(torch.rand(2, 20, dtype=torch.float64))
    with pytest.raises(RuntimeError) as info:
        fused(torch.rand(2, 7))
    note = next(n for n in info.value.__notes__ if "compiled for" in n)
    assert note.count("(B, 20) float32") == 1 and "(B, 20) float64" in note


def test_cli_without_input_shape_says_what_is_expected():
    proc = subprocess.run([sys.executable, "-m", "fusionnet", "explain", "fusionnet.zoo:MLP"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert "MLP.forward takes 1 input (X)" in proc.stderr and "--input-shape" in proc.stderr


def test_fallback_warning_points_at_the_users_line():
    class Drop(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(x) + float(x.sum())   # a Python value of a traced tensor

    fused = fuse(Drop())
    with pytest.warns(FusionFallbackWarning) as caught:
        fused(torch.ones(2, 2))
    warning = caught[0]
    assert warning.filename == __file__
    assert "return self.drop(x) + float(x.sum())" in str(warning.message)
    assert "activation.py" not in str(warning.message)


# ---- 23. the suite passes in a clone named `fusionnet` ------------------------------------

def test_tracer_sources_do_not_depend_on_the_repository_folder_name(tmp_path):
    clone = tmp_path / "fusionnet"   # the default folder name of a clone
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(
        ".git", ".cache", "__pycache__", "*.egg-info", "bench-out", ".pytest_cache"))
    env = dict(os.environ, PYTHONPATH=str(clone))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_passes_cleanup.py", "-k", "fold"],
                          capture_output=True, text=True, timeout=300, cwd=clone, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]


# ---- found by the fuzzer -------------------------------------------------------------------

def test_an_output_view_of_a_base_written_later_is_rederived():
    """fuzz case 7000562: h3 views h1, a later write through another view changes h1."""
    class Block(nn.Module):
        def forward(self, x0):
            h1 = (x0 * 1).sum(-1)
            h3 = h1.reshape(-1, 1)
            view1 = h1.reshape(1, 1).transpose(0, -1)
            view1 *= 2.0
            return h1 + 0, h3

    block = Block()
    x = torch.randn(7, requires_grad=True)
    for got, want in zip(fuse(block)(x), block(x), strict=True):
        _same(got, want)


def test_a_written_back_base_keeps_its_layout_for_view():
    """fuzz case 7000272: a write through a transpose, then .view() of the base."""
    class Block(nn.Module):
        def forward(self, x):
            h = x.sqrt()
            h.transpose(0, -1).zero_()
            return h.view(-1) + 1

    block = Block()
    x = torch.rand(4, 2)
    _same(fuse(block)(x), block(x))


def test_forward_that_modifies_a_saved_tensor_raises_at_backward_like_eager():
    """fuzz cases 7000022 and friends: eager's backward refuses, so fused must too."""
    class Block(nn.Module):
        def forward(self, x):
            h = x.exp()
            y = h * 2
            h += 1            # exp's gradient reads its output: now modified
            return y + h

    block = Block()
    with pytest.warns(FusionFallbackWarning, match="its own backward needs"):
        got = fuse(block)(torch.ones(3, requires_grad=True))
    want = block(torch.ones(3, requires_grad=True))
    for out in (got, want):
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()
    with torch.no_grad():  # without grad there is no backward to refuse: it compiles
        _same(fuse(block)(torch.ones(3)), block(torch.ones(3)))


@pytest.mark.parametrize("fn", [lambda t: t.sigmoid(), lambda t: t.exp(), lambda t: t.tanh(),
                                lambda t: t.sqrt(), lambda t: t / t.logical_not()])
def test_float_math_on_bools_compiles_and_matches_eager(fn):
    """fuzz case 7000720: sigmoid of a bool reduction failed numba typing (fallback)."""
    class Block(nn.Module):
        def forward(self, x):
            return fn(x.any(1))

    block = Block()
    x = torch.tensor([[True, False], [False, False]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 1 / False
        _same(fuse(block, fallback=False)(x), block(x))


def test_lazy_layers_materialise_as_eagers_first_call_would():
    """fuzz case 8001738: materialising lazy layers ran forward on the caller's inputs (a
    forward writing into its input did so twice) and succeeded where eager's call raised
    (so the lazy weights were drawn at a different point of the random stream)."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.lazy = nn.LazyLinear(3)

        def forward(self, x, y):
            x.sub_(y)
            return self.lazy(x)

    torch.manual_seed(0)
    eager, fused_block = Block(), Block()
    fused = fuse(fused_block)
    x, y = torch.rand(4, 2, requires_grad=True), torch.rand(4, 2)
    for block in (eager, fused):
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            block(x, y)
    torch.manual_seed(1)
    xe = torch.rand(4, 2)
    xf = xe.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FusionFallbackWarning)
        torch.manual_seed(2)
        want = eager(xe, y)
        torch.manual_seed(2)
        got = fused(xf, y)
    _same(got, want)
    np.testing.assert_array_equal(xf.numpy(), xe.numpy())  # written once, as in eager


def test_inplace_through_a_view_of_an_input_that_requires_grad_raises_like_eager():
    """fuzz cases 8000869, 8001055: the tracer crashed instead of eager's error."""
    class Block(nn.Module):
        def forward(self, x):
            h = x.data
            v = x.reshape(1, -1).swapaxes(-2, 1).reshape(-1)
            v -= -1.0
            return h + 0, x * 2

    x = torch.rand(4, requires_grad=True)
    for block in (Block(), fuse(Block())):
        with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
            block(x)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_an_unused_out_of_range_index_still_raises(requires_grad):
    """fuzz case 8000903: dead code elimination dropped an indexing that eager fails on;
    fuzz case 1212001309: so did splitting the joint forward+backward graph (an input
    that requires grad), which kept only what the output and the backward read."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.idx = torch.tensor([-1])

        def forward(self, x):
            unused = x.reshape(1, 2, -1)[self.idx, 0:2]
            return x * 2

    block = Block()
    fused = fuse(block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FusionFallbackWarning)
        fused(torch.rand(4, 4, requires_grad=requires_grad))
        block.idx.fill_(-2)
        for b in (block, fused):
            with pytest.raises(IndexError):
                b(torch.rand(4, 4, requires_grad=requires_grad))


# ---- random numbers: compiling must not move the stream ------------------------------------

class LazyDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.lazy = nn.LazyLinear(3)

    def forward(self, x):
        return F.dropout(self.lazy(x), 0.25, training=self.training)


def test_first_call_of_a_lazy_block_draws_as_eager_does():
    # Found by the fuzzer (seed 1202, case 1202000150): building the lazy layer ran the
    # whole forward once, dropout included, so the eager fallback drew another mask.
    torch.manual_seed(1)
    eager = LazyDropout()
    torch.manual_seed(1)
    fused = fuse(LazyDropout())
    x = torch.randn(6, 4)
    for call in range(3):
        torch.manual_seed(10 + call)
        want = eager(x)
        torch.manual_seed(10 + call)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FusionFallbackWarning)
            got = fused(x)
        _same(got, want)


def test_tracing_and_explain_leave_the_random_stream_alone():
    block = LazyDropout()
    x = torch.randn(6, 4)
    block(x)
    torch.manual_seed(3)
    state = torch.random.default_generator.get_state()
    torch.trace(block, x, on_break="record")   # carries on past the dropout draw
    str(torch.explain(block, x))
    assert torch.random.default_generator.get_state() == state


# ---- writing into a compiled output before backward ------------------------------------------

def test_writing_into_an_output_the_backward_reads_fails_as_in_eager():
    # Found by the fuzzer (seed 1202, case 1202000428): relu saves its result; a fused
    # relu's output written in place then back-propagated gave gradients where eager raises.
    block = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    fused = fuse(block)
    x = torch.randn(5, 3)
    for f in (block, fused, fused):           # the second fused call takes the fast path
        y = f(x)
        y.mul_(2)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


def test_writing_into_an_output_the_backward_does_not_read_still_trains():
    block = nn.Linear(3, 4)
    fused = fuse(block)
    x = torch.randn(5, 3)
    grads = []
    for f in (block, fused, fused):
        block.zero_grad()
        y = f(x)
        y.relu_()                              # linear's backward reads x and W, not y
        y.sum().backward()
        grads.append(block.weight.grad.numpy().copy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-6)
    np.testing.assert_allclose(grads[2], grads[0], rtol=1e-6)


def test_a_fused_child_may_write_in_place_into_a_non_leaf_input():
    # Found by the fuzzer (seed 1204, cases 1204000375 and 1204000423): ReLU(inplace=True)
    # as a fused child, called on an intermediate that requires grad, raised "a leaf
    # Variable that requires grad"; the tensor has history, so eager writes into it.
    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            h = self.lin(x)
            scale = float(h.abs().max().item())   # the parent runs its own forward
            self.act(h)
            return h / scale

    block = Parent()
    fused = fuse(block)
    x = torch.randn(4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FusionFallbackWarning)
        got = fused(x)
    _same(got, block(x))


def test_the_example_module_is_user_code_also_when_installed_in_site_packages():
    # `pip install .` (README's first command) puts fusionnet.zoo in site-packages,
    # whose code is trusted library code: the chimera's while loop was then not converted
    # and the main benchmark's Chimera row fell back to eager. The module's own
    # declaration wins over where its file is.
    import sys
    import sysconfig

    from fusionnet.pystate import is_user_frame

    fake = sysconfig.get_paths()["purelib"] + "/fusionnet/zoo.py"
    for declared in (True, False):
        ns = {"__name__": "fusionnet.zoo", "sys": sys, "__fusionnet_user_code__": declared}
        exec(compile("def here():\n    return sys._getframe()\n", fake, "exec"), ns)  # noqa: S102
        assert is_user_frame(ns["here"]()) is declared


# ---- seed-1206 fuzz findings -----------------------------------------------------------------

def test_a_size_read_as_python_keeps_the_compiled_backward_exact():
    # Cases 1206000649/673/686: `if x.shape[0] > 50:` under grad mode; the compiled
    # forward-with-saves was made batch-generic and reused the other branch's code.
    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2 if x.shape[0] > 50 else x + 1

    block = Branchy()
    fused = fuse(block)
    for batch in (97, 5, 120, 3):
        x = torch.randn(batch, 3, requires_grad=True)
        _same(fused(x), block(x))


def test_a_data_alias_sees_a_later_in_place_write_of_its_source():
    # Case 1206000342: `h5 = h2.data; h2.clamp_(...); return h5` returned the unclamped
    # values: the alias was only recorded at its first use, after the write.
    class Alias(nn.Module):
        def forward(self, x):
            h = x * 2
            d, e = h.data, h.detach()
            h.clamp_(min=-1.0)
            return d + e

    block = Alias()
    fused = fuse(block)
    x = torch.randn(6, 3)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            _same(fused(x), block(x))


def test_zeroing_an_output_whose_backward_needs_nothing_of_it_still_trains():
    # Case 1206000312: the compiled backward's "freed after backward" marker was the
    # output itself, so writing into it raised at backward().
    block = nn.Sequential(nn.GELU(), nn.Linear(1, 2))
    fused = fuse(block)
    x = 10.0 - torch.randn(7, 1)
    for f in (block, fused, fused):
        block.zero_grad()
        y = f(x)
        y.zero_()
        y.sum().backward()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pow_by_a_single_element_half_is_a_square_root_as_in_eager(dtype):
    """fuzz case 1212000825: NumPy takes sqrt for a single-element exponent of 0.5
    (sqrt(-inf) is nan); the kernel's C pow gave inf, so a later ``>=`` chose the other
    branch of a ``where``. A full exponent array keeps C's pow in both."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.half = torch.tensor([[0.5]], dtype=dtype)
            self.full = torch.full((3, 6), 0.5, dtype=dtype)

        def forward(self, x):
            return (x.pow(0.5) + x ** self.half, x ** self.full, x.pow(1.5), x.pow(-1.0),
                    x.pow(0.5).sum(0) >= 0.5)

    x = torch.tensor([[-np.inf, -0.0, 0.0, 4.0, np.nan, np.inf]] * 3, dtype=dtype)
    block = Block()
    with np.errstate(all="ignore"):
        want = block(x)
        got = fuse(block, fallback=False)(x)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w.numpy())


# ---- outputs that are views of an input share its storage, as in eager ---------------------

def test_a_block_returning_a_view_of_its_input_shares_storage_like_eager():
    # Fuzz case 1215000669: nn.Flatten compiled on its own returned a copy, so the
    # parent's later `h1.mul_(w)` no longer changed the flattened value.
    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.flat = nn.Flatten()
            self.w = nn.Parameter(torch.randn(1, 5))

        def forward(self, x):
            h1 = x * 2
            if x.shape[0] > 50:  # a shape-dependent Python branch
                h1 = h1 + 1
            h2 = self.flat(h1)
            h1.mul_(self.w)
            return h2

    torch.manual_seed(0)
    block = Parent()
    x = torch.randn(8, 1, 5, requires_grad=True)
    want = block(x)
    want.sum().backward()
    want_grad = (x.grad.clone(), block.w.grad.clone())
    x.grad, block.w.grad = None, None
    fused = fuse(block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FusionFallbackWarning)
        got = fused(x)
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-6)
    got.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), want_grad[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(block.w.grad.numpy(), want_grad[1].numpy(), rtol=1e-6)
    flat = fuse(nn.Flatten())
    with pytest.warns(FusionFallbackWarning, match="output 0 is a view of input 0"):
        out = flat(x)
    assert np.shares_memory(out.detach().numpy(), x.detach().numpy())


class _WriteWhatReluSaved(nn.Module):
    """Fuzz case 1222000032: ``relu_`` (ReLU(inplace=True)) saves its own result, which
    is then written in place; eager's backward raises, so must fused's."""

    def __init__(self, several: bool):
        super().__init__()
        self.act = nn.ReLU(inplace=True)
        self.lin = nn.Linear(5, 5)
        self.several = several

    def forward(self, x):
        h = torch.clamp(x, min=0.0)
        self.act(h)
        h.sub_(h * 0.5)
        return (h, self.lin(x)) if self.several else h * 2


@pytest.mark.parametrize("several", [False, True])
def test_writing_into_what_an_in_place_relu_saved_raises_in_backward_as_eager(several):
    block = _WriteWhatReluSaved(several)
    fused = fuse(block)
    for run in (block, fused, fused):
        x = torch.randn(4, 5, requires_grad=True)
        out = run(x)
        loss = sum(o.sum() for o in out) if several else out.sum()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


class _WriteWhatMseSaved(nn.Module):
    """Fuzz case 1224000381: eager's mse_loss row saves its inputs; a trace records the
    row's decomposition, whose pieces save other values. A later write into an input
    must still fail the backward, as in eager, in the module and in a compiled child."""

    def __init__(self):
        super().__init__()
        self.loss = nn.MSELoss()

    def forward(self, x):
        h = torch.pow(x, -0.5)
        out = self.loss(h, x)
        h.unsqueeze(0).mul_(2.0)
        return out * 1


def test_writing_into_an_input_of_mse_loss_raises_in_backward_as_eager():
    block = _WriteWhatMseSaved()
    fused = fuse(block)
    for run in (block, fused, fused):
        x = (torch.rand(6, dtype=torch.float64) + 0.5).requires_grad_()
        out = run(x)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.backward()
