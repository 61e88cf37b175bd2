"""``fuse``: fused equals eager, guards, recompiles, fallbacks, gradients, cache, threads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest
from test_op_table import SAMPLES
from test_tracer import OneOp, _fresh_like

import fusionnet as torch
from fusionnet import nn, zoo
from fusionnet.graph import GraphBreak
from fusionnet.ops import OPS
from fusionnet.runtime import FuseInputError, FusionFallbackWarning, fuse

RTOL = 1e-5  # float32; kernels may accumulate in float64 where NumPy sums pairwise
ATOL = 1e-6  # values near 0 after cancellation: float32 rounding, not a relative error


def _np(t):
    return t.detach().numpy()


def _compiles(fused):
    return fused._fusion_runner.compiles


def _entries(fused):
    return list(dict.fromkeys(fused._fusion_runner.exact.values()))


# ---- fused equals eager ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_fused_equals_eager(name):
    arrays, attrs, _ = SAMPLES[name]
    block = OneOp(name, attrs)
    fused = fuse(block)
    inputs = [torch.from_numpy(a.copy()) for a in arrays]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = fused(*inputs)
    fresh = [torch.from_numpy(_fresh_like(a)) for a in arrays]
    for xs in (inputs, fresh):
        np.testing.assert_allclose(_np(fused(*xs)).astype(np.float64),
                                   _np(block(*xs)).astype(np.float64), rtol=RTOL, atol=1e-6)
    entry = _entries(fused)[0]
    if entry.fn is None:  # not compiled: it must have said so, once, with a reason
        assert entry.reason
        assert [w for w in caught if issubclass(w.category, FusionFallbackWarning)]
    assert got.shape == block(*inputs).shape


COMPILED_BLOCKS = ["MLP", "SequentialMLP", "MySequential", "NestMLP", "TiedMLP",
                   "CenteredLayer", "MyLinear", "LazyMLP"]


@pytest.mark.parametrize("name", COMPILED_BLOCKS)
def test_chapter_blocks_compile_once_for_every_batch_size(name):
    cls, features = zoo.CHAPTER_BLOCKS[name]
    block = cls()
    fused = fuse(block)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusionFallbackWarning)  # these must really compile
        for batch in (2, 7, 64, 3, 1000):
            X = torch.randn(batch, features)
            np.testing.assert_allclose(_np(fused(X)), _np(block(X)), rtol=RTOL, atol=1e-6)
        assert len(_compiles(fused)) == 1, _compiles(fused)
        assert _entries(fused)[0].fn is not None and _entries(fused)[0].generic
        # Batch size 1 always gets its own exact compile (size-1 dims change what ops do).
        X = torch.randn(1, features)
        np.testing.assert_allclose(_np(fused(X)), _np(block(X)), rtol=RTOL, atol=1e-6)
    assert len(_compiles(fused)) == 2 and "batch size 1" in _compiles(fused)[1]


def test_mlp_is_two_kernels_and_nestmlp_three():
    for cls, kernels in ((zoo.MLP, 2), (zoo.NestMLP, 3)):
        fused = fuse(cls())
        fused(torch.rand(2, 20))
        entry = _entries(fused)[0]
        assert len(entry.optimized.nodes_of("group")) == kernels
        assert sum(1 for s in entry.compiled.kernel_sources if s.startswith("k_")) == kernels


# ---- weights, state and signatures ---------------------------------------------------------


def test_weight_updates_are_seen_without_recompiling():
    net = zoo.MLP()
    fused = fuse(net)
    X = torch.rand(4, 20)
    fused(X)
    net.out.weight.data[:] = 0.0                      # in-place write
    net.out.bias.data[:] = 2.0
    np.testing.assert_allclose(_np(fused(X)), np.full((4, 10), 2.0), rtol=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)  # an optimiser step
    net(X).sum().backward()
    opt.step()
    np.testing.assert_allclose(_np(fused(X)), _np(net(X)), rtol=RTOL, atol=1e-6)
    other = zoo.MLP()
    other(X)
    net.load_state_dict(other.state_dict())           # load_state_dict
    np.testing.assert_allclose(_np(fused(X)), _np(other(X)), rtol=RTOL, atol=1e-6)
    net.hidden.bias.data = torch.ones(256)            # array replaced, same shape
    np.testing.assert_allclose(_np(fused(X)), _np(net(X)), rtol=RTOL, atol=1e-6)
    assert len(_compiles(fused)) == 1


def test_parameter_of_another_shape_recompiles_with_a_reason():
    net = MyLinearNoData()
    fused = fuse(net)
    fused(torch.rand(2, 5))
    net.weight = nn.Parameter(torch.rand(5, 4))
    net.bias = nn.Parameter(torch.rand(4))
    out = fused(torch.rand(2, 5))
    assert out.shape == (2, 4)
    assert any("module state changed" in c for c in _compiles(fused))


class MyLinearNoData(nn.Module):
    """Like the chapter's MyLinear but reading the parameters themselves."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(5, 3))
        self.bias = nn.Parameter(torch.randn(3))

    def forward(self, X):
        return torch.relu(X @ self.weight + self.bias)


def test_new_feature_size_or_dtype_recompiles_or_raises():
    net = zoo.CenteredLayer()
    fused = fuse(net)
    fused(torch.rand(2, 20))
    fused(torch.rand(2, 30))                          # a new static size: recompile
    fused(torch.rand(2, 30, dtype=torch.float64))     # a new dtype: recompile
    assert len(_compiles(fused)) == 3
    assert all("new input signature" in c for c in _compiles(fused)[1:])

    mlp = fuse(zoo.MLP())
    mlp(torch.rand(2, 20))
    # Eager's own exception, with a note naming what the block was compiled for.
    with pytest.raises(RuntimeError, match=r"cannot be multiplied") as info:
        mlp(torch.rand(2, 7))
    assert type(info.value) is type(_eager_error(zoo.MLP(), torch.rand(2, 20),
                                                 torch.rand(2, 7)))
    assert any("MLP was called with ((2, 7) float32); compiled for: (B, 20) float32" in n
               for n in info.value.__notes__)
    with pytest.raises(FuseInputError, match="argument 0 must be a Tensor"):
        mlp(np.zeros((2, 20), np.float32))


def _eager_error(block, good, bad):
    block(good)
    try:
        block(bad)
    except Exception as err:  # noqa: BLE001 - returned for comparison
        return err
    raise AssertionError("eager accepted the bad input")


def test_bounded_cache_evicts():
    fused = fuse(zoo.CenteredLayer(), cache_size=2)
    for n in (3, 4, 5):
        fused(torch.rand(2, n))
    runner = fused._fusion_runner
    assert len(runner.exact) == 2 and runner.evictions == 1


def test_bad_inputs_never_crash_the_process(tmp_path):
    script = textwrap.dedent("""
        import numpy as np
        import fusionnet as torch
        from fusionnet import zoo
        fused = torch.fuse(zoo.MLP())
        fused(torch.rand(2, 20))
        bad = [torch.rand(2, 7), torch.rand(2, 20, 3), torch.rand(20), torch.tensor([[1, 2]]),
               torch.rand(2, 20, dtype=torch.float64)]
        outcomes = []
        for x in bad:
            try:
                out = fused(x)
                outcomes.append("ok " + str(tuple(out.shape)))
            except Exception as err:
                noted = any("compiled for" in n for n in getattr(err, "__notes__", []))
                outcomes.append(type(err).__name__ + ("+note" if noted else ""))
        print("|".join(outcomes))
    """)
    path = tmp_path / "bad.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    outcomes = proc.stdout.strip().split("|")
    # Eager's own exception types, with a note saying what the block was compiled for.
    assert outcomes[0] == outcomes[1] == "ShapeError+note", outcomes
    assert outcomes[2] == "ok (10,)"            # one sample without a batch dim, as in eager
    assert outcomes[3] == "ShapeError+note"  # int64 (1, 2): the eager module rejects it too
    assert outcomes[4] == "ok (2, 10)"          # float64 is a new signature, not an error


def test_second_process_loads_kernels_from_disk_cache(tmp_path):
    script = textwrap.dedent("""
        import json
        import fusionnet as torch
        from fusionnet import zoo
        torch.manual_seed(0)
        fused = torch.fuse(zoo.NestMLP())
        fused(torch.rand(3, 20))
        entry = next(iter(fused._fusion_runner.exact.values()))
        print(json.dumps(entry.compiled.compile_stats()))
    """)
    path = tmp_path / "cache.py"
    path.write_text(script)
    env = dict(os.environ, FUSIONNET_CACHE_DIR=str(tmp_path / "cache"))
    runs = [json.loads(subprocess.run([sys.executable, str(path)], capture_output=True,
                                      text=True, timeout=300, env=env, check=True
                                      ).stdout.strip().splitlines()[-1]) for _ in range(2)]
    assert runs[0] == {"cache_hits": 0, "cache_misses": 1}
    assert runs[1] == {"cache_hits": 1, "cache_misses": 0}


# ---- fallbacks --------------------------------------------------------------------------------


class FloatLoop(nn.Module):
    """FixedHiddenMLP's loop with a Python float in its test: not compilable."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(20, 20)

    def forward(self, X):
        X = self.linear(X)
        while float(X.abs().sum()) > 1:
            X /= 2
        return X.sum()


def test_a_python_value_in_a_loop_test_falls_back_with_one_warning():
    block = FloatLoop()
    fused = fuse(block)
    with pytest.warns(FusionFallbackWarning, match=r"while float\(X.abs\(\).sum\(\)\) > 1:"):
        fused(torch.rand(2, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        for scale in (0.001, 1.0, 1000.0):  # different numbers of loop iterations
            X = torch.rand(2, 20) * scale
            np.testing.assert_allclose(_np(fused(X)), _np(block(X)), rtol=RTOL, atol=ATOL)
    assert _entries(fused)[0].fn is None


def test_the_chapters_tensor_loop_compiles_without_a_warning():
    block = zoo.FixedHiddenMLP()
    fused = fuse(block)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusionFallbackWarning)
        for scale in (0.001, 1.0, 1000.0):
            X = torch.rand(2, 20) * scale
            np.testing.assert_allclose(_np(fused(X)), _np(block(X)), rtol=RTOL, atol=ATOL)
    assert _entries(fused)[0].fn is not None


def test_fallback_false_raises():
    with pytest.raises(GraphBreak, match="float"):
        fuse(FloatLoop(), fallback=False)(torch.rand(2, 20))


def test_random_ops_in_training_mode_compile_and_eval_compiles():
    # Dropout's draws are random inputs of the compiled code (tests/test_training_random.py).
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    fused = fuse(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.manual_seed(3)
        got = _np(fused(torch.ones(2, 4)))
    torch.manual_seed(3)
    np.testing.assert_allclose(got, _np(net(torch.ones(2, 4))), rtol=RTOL, atol=ATOL)
    net.eval()
    X = torch.rand(3, 4)
    np.testing.assert_allclose(_np(fused(X)), _np(net(X)), rtol=RTOL, atol=ATOL)
    assert any(e.fn is not None for e in _entries(fused))


def test_eager_backend_never_compiles():
    fused = fuse(zoo.MLP(), backend="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused(torch.rand(2, 20))
    assert _entries(fused)[0].fn is None


# ---- gradients --------------------------------------------------------------------------------


def test_gradients_match_eager():
    net = zoo.NestMLP()
    fused = fuse(net)
    X = torch.rand(5, 20, requires_grad=True)
    fused(X).pow(2).sum().backward()
    fused_grads = {n: _np(p.grad).copy() for n, p in net.named_parameters()}
    fused_x = _np(X.grad).copy()
    net.zero_grad()
    X.grad = None
    net(X).pow(2).sum().backward()
    for n, p in net.named_parameters():
        np.testing.assert_allclose(fused_grads[n], _np(p.grad), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fused_x, _np(X.grad), rtol=1e-5, atol=1e-7)


def test_no_grad_saves_nothing():
    fused = fuse(zoo.MLP())
    with torch.no_grad():
        out = fused(torch.rand(2, 20))
    assert out.grad_fn is None and not out.requires_grad
    assert fused(torch.rand(2, 20)).grad_fn is not None


def test_training_loop_with_fused_forward_learns():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 1))
    fused = fuse(net)
    X = torch.randn(64, 3)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5]])
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = ((fused(X) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


# ---- decorator, nesting, state, threads, explain --------------------------------------------


@fuse
class FusedMLP(nn.Module):
    """A class decorated with @fuse: every instance runs fused."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(20, 32)
        self.out = nn.Linear(32, 4)

    def forward(self, X):
        return self.out(torch.relu(self.hidden(X)))


def test_class_decorator_and_nesting():
    a, b = FusedMLP(), FusedMLP()
    X = torch.rand(3, 20)
    with torch.no_grad():
        ya = a(X)
        want = a.out(torch.relu(a.hidden(X)))
    np.testing.assert_allclose(_np(ya), _np(want), rtol=RTOL, atol=ATOL)
    assert a._fusion_runner is not b.__dict__.get("_fusion_runner", None)
    outer = nn.Sequential(FusedMLP(), nn.ReLU())  # a fused block inside a plain one
    fused_outer = fuse(outer)
    with torch.no_grad():
        np.testing.assert_allclose(_np(fused_outer(X)),
                                   _np(torch.relu(outer[0].out(torch.relu(
                                       outer[0].hidden(X))))), rtol=RTOL, atol=ATOL)
    assert _entries(fused_outer)[0].fn is not None  # the inner block was traced inline


def test_fused_module_shares_state():
    net = zoo.MLP()
    fused = fuse(net)
    fused(torch.rand(2, 20))
    assert list(fused.state_dict()) == list(net.state_dict())
    assert [id(p) for p in fused.parameters()] == [id(p) for p in net.parameters()]
    fused.eval()
    assert not net.training
    assert fused.hidden is net.hidden


def test_threads_share_one_fused_module():
    net = zoo.NestMLP()
    fused = fuse(net)
    errors = []

    def work(batch):
        try:
            for _ in range(20):
                X = torch.rand(batch, 20)
                with torch.no_grad():
                    got, want = fused(X), net(X)
                np.testing.assert_allclose(_np(got), _np(want), rtol=RTOL, atol=1e-6)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(b,)) for b in (1, 2, 16, 33)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # One batch-generic compile, and batch size 1's own exact one.
    assert len(_compiles(fused)) == 2, _compiles(fused)


def test_explain_shows_kernels_compiles_and_source():
    fused = fuse(zoo.MLP())
    report = torch.explain(fused, torch.rand(2, 20))
    text = str(report)
    assert [k["ops"] for k in report.kernels] == [["permute", "matmul", "add", "relu"],
                                                  ["permute", "matmul", "add"]]
    assert "compile 1: first call" in text and "symbolic batch size" in text
    assert "def forward(" in text and "dot_nt(" in text
    assert "epilogue stops before matmul" in text
    broken = str(torch.explain(fuse(FloatLoop()), torch.rand(2, 20)))
    assert "its own forward runs eagerly, its children compiled" in broken
    assert "while float(X.abs().sum()) > 1:" in broken and "child FloatLoop.linear: compiled" in broken


def test_outputs_never_alias_inputs_or_parameters():
    class Identityish(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * 1, self.w + 0

    X = torch.rand(3)
    before = X.numpy().copy()
    block = Identityish()
    with torch.no_grad():
        outs = fuse(block)(X)
        for out in outs:
            out += 1  # writing to what a fused call returned must not touch X or w
    np.testing.assert_array_equal(X.numpy(), before)
    np.testing.assert_array_equal(block.w.detach().numpy(), np.ones(3))


def test_recompile_reasons_are_counted_once_and_say_why():
    net = MyLinearNoData()
    fused = fuse(net)
    fused(torch.rand(2, 5))
    net.weight = nn.Parameter(torch.rand(5, 3))
    fused(torch.rand(2, 5))
    net.eval()
    fused(torch.rand(2, 5))
    compiles = _compiles(fused)
    assert len(compiles) == 3, compiles
    assert compiles[1].startswith("module state changed: param 'weight' was replaced")
    assert compiles[2] == "training mode changed to False"


def test_keyword_calls_run_eagerly_with_a_warning():
    fused = fuse(zoo.MLP())
    X = torch.rand(2, 20)
    with pytest.warns(FusionFallbackWarning, match="keyword arguments"):
        out = fused(X=X)
    np.testing.assert_allclose(_np(out), _np(fused.original(X)), rtol=0)


class Scaled(nn.Module):
    """Reads a plain Python setting in forward: the trace bakes it in as a constant."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.scale = 2.0

    def forward(self, x):
        return self.lin(x) * self.scale


def test_changed_python_settings_and_hooks_recompile():
    net = Scaled()
    fused = fuse(net)
    X = torch.rand(2, 4)
    with torch.no_grad():
        fused(X)
        net.scale = 0.5
        np.testing.assert_allclose(_np(fused(X)), _np(net(X)), rtol=RTOL, atol=ATOL)
        handle = net.lin.register_forward_hook(lambda m, args, out: out * 10)
        np.testing.assert_allclose(_np(fused(X)), _np(net(X)), rtol=RTOL, atol=ATOL)
        handle.remove()
        np.testing.assert_allclose(_np(fused(X)), _np(net(X)), rtol=RTOL, atol=ATOL)
    compiles = _compiles(fused)
    assert "attribute 'scale' of Scaled changed" in compiles[1]
    assert "forward hooks of 'lin' changed" in compiles[2]
    assert len(compiles) == 4


class BigElementwise(nn.Module):
    """An elementwise chain and a row-wise reduction over inputs large enough for prange."""

    def forward(self, x, b):
        y = ((x * b).tanh() + 1) * 0.5
        return y - y.mean(dim=1, keepdim=True)


def test_large_kernels_run_parallel_loops_from_the_main_thread_only():
    from fusionnet.codegen.numba import PARALLEL_MIN_ELEMENTS

    block = BigElementwise()
    fused = fuse(block)
    rows = PARALLEL_MIN_ELEMENTS // 512 + 1
    X, b = torch.randn(rows, 512), torch.randn(512)
    with torch.no_grad():
        np.testing.assert_allclose(_np(fused(X, b)), _np(block(X, b)), rtol=1e-5, atol=1e-6)
    sources = _entries(fused)[0].compiled.kernel_sources
    assert any(name.endswith("_par") for name in sources)
    assert "numba.prange" in "".join(sources.values())
    assert "if par and" in sources["forward"]
    results = {}

    def work():  # a second thread runs the same kernels serially: no crash, same numbers
        with torch.no_grad():
            results["thread"] = _np(fused(X, b))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    np.testing.assert_allclose(results["thread"], _np(block(X, b)), rtol=1e-5, atol=1e-6)


# ---- edge cases found by adversarial review ---------------------------------------------------


class NanOps(nn.Module):
    def forward(self, x):
        return (x.relu(), x.sign(), x.amax(dim=1), x.amin(dim=1), torch.maximum(x, x * 0),
                torch.minimum(x * 0, x), x.clamp(-0.5, 0.5))


def test_nan_propagates_like_eager():
    block = NanOps()
    fused = fuse(block)
    x = torch.tensor([[float("nan"), -1.0, 2.0], [0.5, float("nan"), -3.0]])
    with torch.no_grad():
        for got, want in zip(fused(x), block(x), strict=True):
            np.testing.assert_array_equal(_np(got), _np(want))  # NaN == NaN here


def test_division_by_zero_gives_inf_and_empty_max_raises_as_eager():
    class Div(nn.Module):
        def forward(self, x):
            return 1.0 / x, x.amax(dim=1)

    fused = fuse(Div())
    with torch.no_grad():
        fused(torch.rand(3, 2) + 1)
        inv, _ = fused(torch.tensor([[1.0, 0.0]]))
        assert inv.tolist() == [[1.0, float("inf")]]
        with pytest.raises(ValueError, match="empty tensor"):
            fused(torch.zeros(2, 0))  # nothing to reduce along dim 1
        # An empty batch over a non-empty dim is an empty result, as in PyTorch.
        assert tuple(fused(torch.zeros(0, 2))[1].shape) == (0,)


def test_a_size_threshold_below_the_probe_sizes_is_not_compiled_in_probe_form():
    class Small(nn.Module):
        def forward(self, x):
            return x * 2 if x.numel() > 1000 else x * 3

    block = Small()
    fused = fuse(block)
    for batch in (2, 200, 3):
        x = torch.ones(batch, 20)
        np.testing.assert_array_equal(_np(fused(x)), _np(block(x)))


def test_writing_into_the_input_falls_back_and_mutates_like_eager():
    class Doubler(nn.Module):
        def forward(self, x):
            x.mul_(2)
            return x + 1

    fused = fuse(Doubler())
    x = torch.ones(3)
    with torch.no_grad(), pytest.warns(FusionFallbackWarning, match="writes into its input"):
        out = fused(x)
    assert x.tolist() == [2.0, 2.0, 2.0] and out.tolist() == [3.0, 3.0, 3.0]


def test_forward_that_assigns_attributes_falls_back_without_recursing():
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            self.calls += 1
            self.last = x
            return self.lin(x)

    block = Counter()
    fused = fuse(block)
    x = torch.rand(2, 3)
    with torch.no_grad(), pytest.warns(FusionFallbackWarning, match="assigns module attributes"):
        out = fused(x)
    np.testing.assert_allclose(_np(out), _np(block.lin(x)), rtol=RTOL, atol=ATOL)
    assert len(_compiles(fused)) == 1


def test_odd_calls_run_eagerly_with_a_warning():
    class Flag(nn.Module):
        def forward(self, x, k):
            return x * k

    class Set(nn.Module):
        def forward(self, x):
            return {x + 1}

    fused = fuse(Flag())
    with pytest.warns(FusionFallbackWarning, match="argument 1 is a int"):
        assert fused(torch.ones(2), 3).tolist() == [3.0, 3.0]
    with pytest.warns(FusionFallbackWarning, match="returned set"):
        assert fuse(Set())(torch.ones(2)).pop().tolist() == [2.0, 2.0]
    assert bool(fuse(nn.Linear(2, 2)))


def test_kernels_promote_and_round_like_eager():
    class Mixed(nn.Module):
        def forward(self, xi, xf):
            return xi == 16777216.0, (xi + xf) - 16777216.0, (xf * 3).sum(dim=0)

    block = Mixed()
    fused = fuse(block)
    xi, xf = torch.tensor([16777217, 3]), torch.tensor([1.0, 0.1])
    with torch.no_grad():
        for got, want in zip(fused(xi, xf), block(xi, xf), strict=True):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(_np(got), _np(want))


def test_transposed_left_matmul_operand_compiles():
    class Gram(nn.Module):
        def __init__(self):
            super().__init__()
            self.W = nn.Parameter(torch.randn(5, 3))

        def forward(self, x):
            return (x.T @ self.W).relu() + 1  # x: (5, k) -> x.T: (k, 5)

    block = Gram()
    fused = fuse(block)
    x = torch.randn(5, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusionFallbackWarning)
        with torch.no_grad():
            got = fused(x)
    np.testing.assert_allclose(_np(got), _np(block(x)), rtol=1e-5, atol=1e-6)
    assert _entries(fused)[0].fn is not None


def test_integer_clamp_and_pow_stay_exact():
    class IntOps(nn.Module):
        def forward(self, a, b):
            return a.clamp(min=0), a ** b

    block = IntOps()
    fused = fuse(block)
    a = torch.tensor([2**60 + 1, -3, 2**53 + 1])
    b = torch.tensor([1, 2, 1])
    for got, want in zip(fused(a, b), block(a, b), strict=True):
        np.testing.assert_array_equal(_np(got), _np(want))
    with pytest.raises(ValueError, match="negative integer powers"):
        fused(a, torch.tensor([1, -1, 1]))


def test_second_review_edge_cases():
    class IntLinear(nn.Module):
        def __init__(self, W):
            super().__init__()
            self.W = W

        def forward(self, x):
            return x @ self.W.t() + 1

    x = torch.from_numpy(np.array([[2**31, 3], [1, 2**40]]))
    W = torch.from_numpy(np.array([[2**31 + 1, 5], [7, 2**20 + 1]]))
    block = IntLinear(W)
    np.testing.assert_array_equal(_np(fuse(block)(x)), _np(block(x)))

    class Smooth(nn.Module):
        def forward(self, a, b):
            return a.sigmoid(), b.exp(), b.tanh()

    smooth = Smooth()
    a, b = torch.tensor([-10.0, -16.0, -20.0, 0.0, 30.0]), torch.tensor([True, False])
    for got, want in zip(fuse(smooth)(a, b), smooth(a, b), strict=True):
        np.testing.assert_allclose(_np(got), _np(want), rtol=2e-7, atol=0)
    np.testing.assert_allclose(_np(smooth(a, b)[1]), [np.e, 1.0], rtol=1e-7)

    class Sub(nn.Module):
        def forward(self, t):
            return t - True

    with pytest.raises(TypeError):  # eager's exception type, also a FuseInputError
        fuse(Sub())(torch.tensor([True, False]))
