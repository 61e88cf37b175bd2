"""What the numba code generator computes: fused results equal eager for the cases that
went wrong before (sigmoid far below zero, integer overflow, literals such as inf) and for
ops defined outside the package as rows only (a ``prod`` reduction, a ``movedim`` view op,
a two-step view op), with ``fallback=False`` so a block that falls back to eager fails
the test instead of passing by running eagerly.

References: PyTorch where it defines the semantics (sigmoid), NumPy's wrapping integer
arithmetic otherwise (written here independently of the op table).
"""
from __future__ import annotations

import math
import pathlib
import re
import warnings

import numpy as np
import pytest

import fusionnet as fn
from fusionnet import nn
from fusionnet.codegen import BACKENDS, get_backend
from fusionnet.dispatch import apply
from fusionnet.ops import OPS, Kind, Op
from fusionnet.ops.registry import SAVES_NONE, register
from fusionnet.ops.rules import same_dtype
from fusionnet.runtime import FusionFallbackWarning, fuse

I64 = np.iinfo(np.int64)
I32 = np.iinfo(np.int32)
DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "adding-an-op.md"


class Fn(nn.Module):
    """A block whose forward is ``f``."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, *xs):
        return self.f(*xs)


def _compiled(f, *inputs):
    """(fused outputs, eager outputs) as lists of NumPy arrays; the block must compile."""
    block = Fn(f)
    fused = fuse(block, fallback=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusionFallbackWarning)
        with fn.no_grad():
            got, want = fused(*inputs), block(*inputs)
    entries = list(fused._fusion_runner.exact.values())
    assert entries and all(e.fn is not None for e in entries)
    got = list(got) if isinstance(got, tuple) else [got]
    want = list(want) if isinstance(want, tuple) else [want]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
    return [g.numpy() for g in got], [w.numpy() for w in want]


def _same(got, want):
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


# ---- sigmoid (the stable form) --------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_sigmoid_far_below_zero_matches_eager(dtype):
    torch = pytest.importorskip("torch")
    x = np.array([-40, -100, -1e4, -745, 40, 100, 1e4, 0.0, np.nan], dtype=dtype)
    wide = np.concatenate([np.linspace(-120, 120, 4001), np.linspace(-750, 750, 3001),
                           np.random.default_rng(0).standard_normal(500) * 30]).astype(dtype)
    (log_sig, sig_wide), (want_log, want_wide) = _compiled(
        lambda a, b: (a.sigmoid().log(), b.sigmoid()), fn.from_numpy(x), fn.from_numpy(wide))
    np.testing.assert_allclose(log_sig, want_log, rtol=1e-6)
    assert np.isfinite(log_sig[:2]).all() and log_sig[0] == pytest.approx(-40, rel=1e-6)
    # Over a wide range: within a few units in the last place of eager's result and of
    # PyTorch's (the fused form rounds once from float64; subnormals compared absolutely).
    tiny = np.finfo(dtype).tiny
    rtol = 4e-7 if dtype == np.float32 else 2e-15
    np.testing.assert_allclose(sig_wide, want_wide, rtol=rtol, atol=tiny)
    ref = torch.sigmoid(torch.from_numpy(wide)).numpy()
    np.testing.assert_allclose(sig_wide, ref, rtol=rtol, atol=tiny)


# ---- integer overflow wraps around, as in NumPy ------------------------------------------


def test_int64_arithmetic_wraps_like_eager_and_numpy():
    x = np.array([I64.max, I64.min, -3, 7, 0])
    outs = lambda t: ((t + 1) > t, (t - 1) < t, (t * 2) > t, -t, (-t) < 0, t.abs(),  # noqa: E731
                      t.abs() >= 0, t * 3, t ** 3, t ** 63)
    got, want = _compiled(outs, fn.from_numpy(x))
    _same(got, want)
    with np.errstate(over="ignore"):
        ref = [(x + 1) > x, (x - 1) < x, (x * 2) > x, -x, (-x) < 0, np.abs(x), np.abs(x) >= 0,
               x * 3, x ** 3, x ** 63]
    _same(got, ref)
    assert not got[0][0] and not got[1][1] and not got[2][0]  # the cases LLVM folded


def test_int32_arithmetic_and_overflowing_sums_wrap_like_eager():
    x32 = np.array([I32.max, I32.min, 5], dtype=np.int32)
    big = np.array([[I64.max, 1, 2], [I64.min, -1, -5]])
    got, want = _compiled(lambda a, b: ((a + 1) > a, a * a, -a, b.sum(), b.sum(dim=1),
                                        (b + b).sum(dim=0), b.sum(dim=1, keepdim=True) > 0,
                                        a.sum(), (b > 0).sum(dim=1)),
                          fn.from_numpy(x32), fn.from_numpy(big))
    _same(got, want)
    with np.errstate(over="ignore"):
        ref = [(x32 + np.int32(1)) > x32, x32 * x32, -x32, big.sum(), big.sum(axis=1),
               (big + big).sum(axis=0), big.sum(axis=1, keepdims=True) > 0,
               x32.sum(dtype=np.int64), (big > 0).sum(axis=1)]
    _same(got, ref)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_integer_and_bool_matmul_wraps_like_eager(dtype):
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if dtype != np.bool_ else None
    if info is None:
        a, b = rng.random((3, 4)) > 0.5, rng.random((4, 2)) > 0.5
    else:
        a = rng.integers(info.min, info.max, (3, 4), dtype=dtype, endpoint=True)
        b = rng.integers(info.min, info.max, (4, 2), dtype=dtype, endpoint=True)
    got, want = _compiled(lambda p, q, r: (p @ q, p @ r.t() + 1), fn.from_numpy(a),
                          fn.from_numpy(b), fn.from_numpy(np.ascontiguousarray(b.T)))
    _same(got, want)
    with np.errstate(over="ignore"):
        _same(got[:1], [a @ b])


# ---- a reduction row defined outside the package (docs/adding-an-op.md) -------------------


def _docs_block(marker: str) -> str:
    text = DOCS.read_text()
    block = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", text, re.S)
    assert block, f"docs/adding-an-op.md lost its {marker} example"
    return block.group(1)


@pytest.fixture
def prod_row():
    """The ``prod`` row registered exactly as docs/adding-an-op.md writes it, then removed."""
    assert "prod" not in OPS
    exec(compile(_docs_block("prod-row"), str(DOCS), "exec"), {})  # noqa: S102 - our docs
    try:
        yield OPS["prod"]
    finally:
        OPS.pop("prod", None)


def test_user_defined_prod_is_a_row_only_and_every_backend_supports_it(prod_row):
    for backend in BACKENDS:
        b = get_backend(backend)
        assert "prod" not in b.elementwise and "prod" not in b.unsupported
        assert b.supports(prod_row)


def _prods(t):
    prod = lambda *a, **k: apply("prod", *a, **k)  # noqa: E731
    return (prod(t), prod(t, dim=1), prod(t, dim=1, keepdim=True),
            prod(t, dim=(0, 2), keepdim=True), prod(t, dim=-1), prod(t, keepdim=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
def test_user_defined_prod_reduction_fused_equals_eager(prod_row, dtype):
    rng = np.random.default_rng(5)
    if dtype == np.bool_:
        x = rng.random((2, 3, 4)) > 0.2
    elif dtype == np.int64:
        x = rng.integers(-6, 7, (2, 3, 4))
    else:
        x = rng.uniform(0.5, 1.5, (2, 3, 4)).astype(dtype)
    got, want = _compiled(_prods, fn.from_numpy(x))
    refs = [np.prod(x, axis=ax, keepdims=k) for ax, k in
            [(None, False), (1, False), (1, True), ((0, 2), True), (-1, False), (None, True)]]
    for g, w, r in zip(got, want, refs, strict=True):
        assert g.shape == w.shape == r.shape
        if dtype in (np.float32, np.float64):
            np.testing.assert_allclose(g, w, rtol=1e-6)
            np.testing.assert_allclose(g, r, rtol=1e-6)
        else:
            np.testing.assert_array_equal(g, w)
            np.testing.assert_array_equal(g, r)


def test_user_defined_prod_starts_at_one_and_wraps_like_eager(prod_row):
    x = np.array([[3] * 41, [-6, -5, -4, -3, -2, -1, *[1] * 35]])  # 3**41 overflows int64
    empty = np.zeros((2, 0), dtype=np.int64)
    got, want = _compiled(lambda t, e: (apply("prod", t, dim=1), apply("prod", e, dim=1)),
                          fn.from_numpy(x), fn.from_numpy(empty))
    _same(got, want)
    with np.errstate(over="ignore"):
        _same(got, [np.prod(x, axis=1), np.ones(2, dtype=np.int64)])
    assert got[0][1] == 720  # -6 * -5 * ... * -1, not the negated value


def test_reduction_row_without_its_facts_runs_eagerly_and_says_why(prod_row):
    OPS["prod"] = OPS.pop("prod").__class__(**{**prod_row.__dict__, "reduction": None})
    block = Fn(lambda t: apply("prod", t, dim=1))
    x = fn.from_numpy(np.arange(1, 7).reshape(2, 3))
    with pytest.warns(FusionFallbackWarning, match="Op.reduction"):
        got = fuse(block)(x)
    np.testing.assert_array_equal(got.numpy(), [6, 120])


# ---- view ops defined outside the package (docs/adding-an-op.md) -----------------------------


def _repeat_shape(shape, dim, size):
    return tuple(shape[:dim]) + (size,) + tuple(shape[dim:])


def _repeat_row() -> Op:
    """``repeat_new_dim(x, dim, size)``: x with a new dimension of ``size`` copies at ``dim``,
    as a read-only view made of two layout steps (insert a size-1 dim, then expand it)."""
    return Op("repeat_new_dim", Kind.INJECTIVE, 1,
              lambda xp, a, dim, size: xp.broadcast_to(xp.expand_dims(a, dim),
                                                       _repeat_shape(a.shape, dim, size)),
              _repeat_shape, same_dtype, lambda g, x, dim, size, **_: (g.sum(dim=dim),),
              "size copies of x along a new dim", saves=SAVES_NONE, view=True,
              layout=lambda src, out, dim, size: (("reshape", _repeat_shape(src, dim, 1)),
                                                  ("expand", out)))


@pytest.fixture
def view_rows():
    """``movedim`` exactly as docs/adding-an-op.md writes it, and ``repeat_new_dim``; both
    removed afterwards."""
    assert "movedim" not in OPS and "repeat_new_dim" not in OPS
    exec(compile(_docs_block("view-row"), str(DOCS), "exec"), {})  # noqa: S102 - our docs
    register(_repeat_row())
    try:
        yield OPS["movedim"], OPS["repeat_new_dim"]
    finally:
        OPS.pop("movedim", None)
        OPS.pop("repeat_new_dim", None)


class ViewOps(nn.Module):
    """The new view ops between kernels, as a GEMM operand (a transpose of the weight) and
    as a no-op that simplification removes."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(fn.randn(5, 4))

    def forward(self, x, v):  # x: (B, 3, 4), v: (B, 4)
        moved = apply("movedim", x.exp(), source=1, destination=2)              # (B, 4, 3)
        same = apply("movedim", moved, source=0, destination=0)                # no-op
        copies = apply("repeat_new_dim", same.sum(dim=2), dim=1, size=2)        # (B, 2, 4)
        wt = apply("movedim", self.w, source=1, destination=0)                 # (4, 5) = w.T
        return moved.tanh(), copies * 2 + 1, (v @ wt).relu()


def _view_ops_run(block, x, v, fused=None):
    """Outputs and the gradients of x, v and w for sum(out_i * weights_i)."""
    for t in (x, v, block.w):
        t.grad = None
    outs = (fused or block)(x, v)
    rng = np.random.default_rng(11)
    loss = sum((o * fn.from_numpy(rng.standard_normal(tuple(o.shape)).astype(np.float32))).sum()
               for o in outs)
    loss.backward()
    return [o.detach().numpy() for o in outs], [t.grad.numpy() for t in (x, v, block.w)]


def test_user_defined_view_ops_fused_equal_eager_forward_and_gradient(view_rows):
    block = ViewOps()
    fused = fuse(block, fallback=False)
    rng = np.random.default_rng(7)
    for batch in (3, 5):  # the second batch size reuses the batch-generic compile
        x = fn.from_numpy(rng.standard_normal((batch, 3, 4)).astype(np.float32))
        v = fn.from_numpy(rng.standard_normal((batch, 4)).astype(np.float32))
        x.requires_grad_(True)
        v.requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FusionFallbackWarning)
            got, got_grads = _view_ops_run(block, x, v, fused)
        want, want_grads = _view_ops_run(block, x, v)
        for g, w in zip(got + got_grads, want + want_grads, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    runner = fused._fusion_runner
    assert len(runner.compiles) == 1 and all(e.fn is not None for e in runner.exact.values())
    (entry,) = set(runner.exact.values())
    source = entry.compiled.source
    assert "dot_nt(" in source                     # movedim(w) read in place as w.T
    assert "np.broadcast_to(" in source and ".transpose(" in source  # lowered steps
    assert not any(
        entry.optimized.node(n).get("op") == "movedim" and
        entry.optimized.node(n)["attrs"] == (("destination", 0), ("source", 0))
        for n in entry.optimized.order())      # the no-op movedim was simplified away


def test_user_defined_view_ops_match_pytorch(view_rows):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal((2, 3, 4))
    ours = fn.from_numpy(x.copy()).requires_grad_(True)
    theirs = torch.from_numpy(x.copy()).requires_grad_(True)
    a = apply("repeat_new_dim", apply("movedim", ours, source=-1, destination=0), dim=2, size=3)
    b = theirs.movedim(-1, 0).unsqueeze(2).expand(4, 2, 3, 3)
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    weights = np.random.default_rng(3).standard_normal(tuple(b.shape))
    (a * fn.from_numpy(weights)).sum().backward()
    (b * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)
    # an in-place write through the movedim view reaches its input, as in PyTorch
    h, th = fn.from_numpy(x.copy()) * 1, torch.from_numpy(x.copy()) * 1
    apply("movedim", h, source=0, destination=2).mul_(3)
    th.movedim(0, 2).mul_(3)
    np.testing.assert_array_equal(h.numpy(), th.numpy())


# ---- reductions combine like NumPy's ---------------------------------------------------------


def test_max_and_min_keep_the_last_of_tied_signed_zeros_like_eager():
    # acc = maximum(acc, x): on a tie NumPy's maximum keeps its second argument, the later
    # element (np.max([0.0, -0.0]) is -0.0); the old combine kept the earlier one.
    x = np.array([[0.0, -0.0], [-0.0, 0.0], [0.0, -0.0]], dtype=np.float32)
    got, want = _compiled(lambda t: (t.amax(dim=1), t.amin(dim=1), t.amax(), t.amin()),
                          fn.from_numpy(x))
    refs = [x.max(axis=1), x.min(axis=1), x.max(), x.min()]
    for g, w, r in zip(got, want, refs, strict=True):
        np.testing.assert_array_equal(np.signbit(g), np.signbit(w))
        np.testing.assert_array_equal(np.signbit(g), np.signbit(r))


# ---- literals -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_infinite_nan_and_signed_zero_literals_compile_and_match_eager(dtype):
    x = np.array([1.5, -2.0, 0.0, -0.0, np.inf, -np.inf, np.nan], dtype=dtype)
    inf, nan = float("inf"), float("nan")
    got, want = _compiled(
        lambda t: (t.clamp(min=-inf), t.clamp(max=inf), t.clamp(min=-inf, max=inf), t + inf,
                   t - inf, fn.where(t > 0, t, float("-inf")), fn.where(t > 0, t, -0.0),
                   t.clamp(min=nan), t.clamp(min=0.0), t.clamp(max=-0.0), t * nan,
                   t.clamp(min=-1e300, max=1e300), t + 1e-45),
        fn.from_numpy(x))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)  # NaN equals NaN here
        np.testing.assert_array_equal(np.signbit(g), np.signbit(w))  # -0.0 stays -0.0


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_huge_integer_literals_compile_and_match_eager(dtype):
    info = np.iinfo(dtype)
    x = np.array([info.max, info.min, -3, 0, 9], dtype=dtype)
    lo, hi = int(info.min), int(info.max)
    got, want = _compiled(
        lambda t: (t.clamp(min=lo), t.clamp(max=hi), t.clamp(min=lo + 1, max=hi - 1),
                   t + (hi - 5), fn.where(t > 0, t, lo), t.clamp(min=2.5), t.clamp(max=-2.5),
                   t == hi),
        fn.from_numpy(x))
    _same(got, want)


def test_bool_literals_compile_and_match_eager():
    b = np.array([True, False, True])
    got, want = _compiled(lambda t: (fn.where(t, False, True), t.logical_and(True),
                                     t.clamp(min=False), t.clamp(max=True)), fn.from_numpy(b))
    _same(got, want)


def test_unrepresentable_literal_raises_as_eager_does():
    x = fn.tensor([1, 2, 3])
    block = Fn(lambda t: t.clamp(min=-math.inf))  # -inf is no int64
    with pytest.raises(RuntimeError, match="cannot convert float infinity") as eager:
        block(x)
    with pytest.raises(type(eager.value), match="cannot convert float infinity"):
        fuse(block)(x)


@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sigmoid", "erf", "sin", "cos"])
def test_transcendental_rows_are_correctly_rounded_and_within_ulps_of_eager(name):
    # Generated code computes these in double and rounds once; numba would otherwise call
    # the float32 libm functions (tanhf...), a second approximation beside NumPy's SIMD
    # loops. Eager keeps NumPy's float32 loops (10-30x faster than going through double).
    class Unary(nn.Module):
        def forward(self, t):
            return getattr(t.abs() + 0.01 if name == "log" else t, name)()

    x = (np.random.default_rng(1).standard_normal((256, 32)) * 4).astype(np.float32)
    block = Unary()
    fused = fn.fuse(block, fallback=False)
    with fn.no_grad():
        got, want = fused(fn.from_numpy(x)).numpy(), block(fn.from_numpy(x)).numpy()
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulps.max() <= 4  # NumPy documents its float32 SIMD loops within 4 ulp
    inner = np.abs(x) + np.float32(0.01) if name == "log" else x   # rounded in float32
    ref = {"sigmoid": lambda v: 1 / (1 + np.exp(-v)),
           "erf": lambda v: np.vectorize(math.erf)(v)}.get(name, getattr(np, name, None))
    close = ref(inner.astype(np.float64)).astype(np.float32)
    assert np.mean(got == close) > 0.999


# ---- the hand-written GEMM kernels ----------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mkn", [(1, 1, 1), (2, 16, 16), (2, 20, 64), (2, 64, 32), (4, 32, 64),
                                 (2, 64, 65), (3, 0, 5), (17, 33, 19)])
def test_gemm_kernels_equal_numpy_on_both_sides_of_the_blas_crossover(dtype, mkn):
    from fusionnet._kernels import kernel_module

    k = kernel_module("numba_kernels")
    m, kk, n = mkn
    rng = np.random.default_rng(m * 1000 + kk * 10 + n)
    a = rng.standard_normal((m, kk)).astype(dtype)
    w = rng.standard_normal((n, kk)).astype(dtype)
    if a.size and w.size:   # non-finite values must survive the reassociated sums
        a[0, 0], w[-1, -1] = np.inf, np.nan
    b = np.ascontiguousarray(w.T)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    with np.errstate(invalid="ignore"):
        want = a @ w.T
    for fn, rhs in ((k.dot_nt, w), (k.dot_nt_loop, w), (k.dot_nn, b), (k.dot_nn_loop, b)):
        out = np.full((m, n), 7, dtype)
        fn(a, rhs, out)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, want, rtol=rtol, atol=rtol * np.sqrt(max(kk, 1)),
                                   err_msg=fn.__name__)


# ---- the address table: parameters and constants as one argument ----------------------------

def test_parameters_reach_the_driver_through_the_address_table_and_new_storage_is_seen():
    import gc

    import fusionnet
    from fusionnet import nn as fnn

    torch_net = fnn.Sequential(fnn.Linear(6, 5), fnn.ReLU(), fnn.Linear(5, 3))
    fused = fusionnet.fuse(torch_net)
    x = fusionnet.randn(4, 6)
    with fusionnet.no_grad():
        np.testing.assert_allclose(fused(x).numpy(), torch_net(x).numpy(), rtol=1e-5,
                                   atol=1e-5)
        entry = fused._fusion_runner.last[5]
        assert entry.compiled.table and "table" in entry.compiled.kernel_sources["forward"]
        assert len(entry.tail) == 1 and entry.tail[0].dtype == np.int64  # one argument
        # New storage of the same layout: the table is rebuilt, the old array may go.
        w = torch_net[0].weight
        w.data = fusionnet.from_numpy(np.ascontiguousarray(w.detach().numpy() * -2))
        gc.collect()
        np.testing.assert_allclose(fused(x).numpy(), torch_net(x).numpy(), rtol=1e-5,
                                   atol=1e-5)
        # A Fortran-ordered array of the same shape cannot travel in the table: the
        # signature compiles again (the new driver takes it as an argument) and says why.
        w.data = fusionnet.from_numpy(np.asfortranarray(w.detach().numpy() + 1))
        np.testing.assert_allclose(fused(x).numpy(), torch_net(x).numpy(), rtol=1e-5,
                                   atol=1e-5)
        assert "no longer C-contiguous" in fused._fusion_runner.compiles[-1]
        # In-place updates of a parameter in the table are seen with no recompile.
        n = len(fused._fusion_runner.compiles)
        torch_net[2].bias.data.add_(fusionnet.ones(3))
        np.testing.assert_allclose(fused(x).numpy(), torch_net(x).numpy(), rtol=1e-5,
                                   atol=1e-5)
        assert len(fused._fusion_runner.compiles) == n


# ---- cat and stack: Join steps in the driver ----------------------------------------------

def _assert_same_outputs(got, want, exact=False, rtol=1e-6, atol=1e-6):
    """Fused outputs against eager's: shapes and dtypes equal, values close (or equal)."""
    for g, w in zip(got, want, strict=True):
        assert tuple(g.shape) == tuple(w.shape) and g.dtype == w.dtype
        if exact:
            np.testing.assert_array_equal(g.numpy(), w.numpy())
        else:
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=rtol, atol=atol)


def _assert_same_gradients(block, fused, inputs, loss, atol=1e-6):
    """``loss(run(*inputs))`` back-propagated through eager ``block`` and ``fused``: the
    same gradients for every input and parameter."""
    grads = []
    for run in (block, fused):
        leaves = [x.clone().requires_grad_() for x in inputs]
        loss(run(*leaves)).backward()
        grads.append([None if t.grad is None else t.grad.numpy().copy()
                      for t in leaves + list(block.parameters())])
        block.zero_grad()
    for a, b in zip(*grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol)


class _Joins(nn.Module):
    """cat along the batch axis and a feature axis, stack at both ends, a promoted int
    input, inside a fused chain (the join's sources are kernel results and inputs)."""

    def __init__(self, dim: int, stack_dim: int):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.dim, self.stack_dim = dim, stack_dim

    def forward(self, x, y):
        h = fn.relu(self.lin(x))
        joined = fn.cat([h, y * 2, h - 1], dim=self.dim) * 3
        flags = (x > 0).to(fn.int64)
        mixed = fn.cat([x, flags], dim=-1)          # int64 promoted to float32
        stacked = fn.stack([h, h * h], dim=self.stack_dim)
        return joined.sum(-1), mixed, stacked


@pytest.mark.parametrize("dim,stack_dim", [(0, 0), (1, -1), (-1, 1)])
def test_cat_and_stack_compile_and_equal_eager_at_every_batch(dim, stack_dim):
    block = _Joins(dim, stack_dim)
    fused = fuse(block, fallback=False)
    with fn.no_grad():
        for batch in (5, 1, 2, 17):
            x, y = fn.randn(batch, 3), fn.randn(batch, 4)
            # (the sum accumulates in float64 in the kernel, pairwise in NumPy)
            _assert_same_outputs(fused(x, y), block(x, y))
    entry = next(iter(fused._fusion_runner.generic.values()))
    assert entry.fn is not None and "] = " in entry.compiled.source  # slice assignments


class _JoinInALoop(nn.Module):
    def forward(self, x):
        while x.abs().sum() > 4.0:
            x = fn.stack([x, x * 0.5], 0).sum(0) * 0.25
        return fn.cat([x, x], 1)


def test_a_join_inside_a_loop_body_equals_eager():
    block = _JoinInALoop()
    fused = fuse(block, fallback=False)
    for scale in (0.01, 3.0, 1e4):
        x = fn.randn(6, 3) * scale
        np.testing.assert_allclose(fused(x).numpy(), block(x).numpy(), rtol=1e-6, atol=1e-7)


def test_gradients_through_a_compiled_cat_equal_eager():
    block = _Joins(1, 0)
    fused = fuse(block)
    x, y = fn.randn(4, 3), fn.randn(4, 4)
    _assert_same_gradients(block, fused, [x, y], lambda out: out[0].sum() + out[1].sum() +
                           (out[2] * out[2]).sum())


def test_a_backend_without_joins_says_so():
    cuda = get_backend("cuda")
    assert cuda.why_unsupported(OPS["cat"]) and cuda.why_unsupported(OPS["stack"])
    assert not get_backend("numba").why_unsupported(OPS["cat"])


# ---- basic indexing: Index steps (views) and its gradient (zeros, then a slice) -----------

class _Slices(nn.Module):
    """Slices with steps and negative bounds, None, ..., ints into fixed-size dims, a
    0-d pick, each read by a kernel or returned (a view of a kernel result)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 5)

    def forward(self, x):
        h = fn.tanh(self.lin(x))
        return (h[:, 1:4] * 2, h[:, None, -1], h[..., ::2].sum(1), x[:, 2] + 1,
                h[:, 3, None] * h[:, :1], h[:, -2:-5:-1], x[0:100, ...] * 1, h[..., 0:0])


@pytest.mark.parametrize("batch", [5, 1, 2, 33])
def test_basic_indexing_compiles_and_equals_eager(batch):
    block = _Slices()
    fused = fuse(block, fallback=False)
    x = fn.randn(batch, 6)
    with fn.no_grad():
        _assert_same_outputs(fused(x), block(x))


class _PickOne(nn.Module):
    def forward(self, x):
        return x[:, 1, 2] * 1.5 + x[0, -1, 0]   # ints into fixed dims; a 0-d pick of x[0]


def test_an_integer_into_the_batch_dimension_is_guarded_by_the_traced_size():
    # x[0, -1, 0] reads the batch dim with an int: the code is compiled for exactly the
    # traced batch (never generic), so no batch size reads outside the array.
    block = _PickOne()
    fused = fuse(block, fallback=False)
    for batch in (4, 1, 3):
        x = fn.randn(batch, 3, 4)
        np.testing.assert_allclose(fused(x).numpy(), block(x).numpy(), rtol=1e-6)
    entries = list(fused._fusion_runner.exact.values())
    assert len(entries) == 3 and all(e.fn is not None and not e.generic for e in entries)
    assert "integer index into dimension 0" in entries[0].batch_note


def test_integer_indexes_into_a_symbolic_dimension_are_refused_at_lowering():
    from fusionnet.codegen.lower import Unsupported, _check_ints
    _check_ints((slice(1, None), 2), ("B", 4), {"op": "getitem"})  # slices and fixed: fine
    with pytest.raises(Unsupported, match="varies with the batch size"):
        _check_ints((0, Ellipsis), ("B", 4), {"op": "getitem"})
    with pytest.raises(Unsupported, match="dimension 1"):
        _check_ints((None, Ellipsis, -1), (3, "B"), {"op": "getitem"})


class _SliceTraining(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.out = nn.Linear(6, 5), nn.Linear(3, 2)

    def forward(self, x):
        h = fn.tanh(self.lin(x))
        a = fn.cat([h[:, 1:4] * 2, x[:, :3]], 0)
        return (self.out(a) ** 2).sum() + h[:, -1].sum() + fn.stack([h[:, 0], x[:, 5]], 1).sum()


def test_the_backward_of_slices_and_joins_compiles_and_equals_eager():
    block = _SliceTraining()
    fused = fuse(block)
    for batch in (4, 7, 2):
        x = fn.randn(batch, 6)
        _assert_same_gradients(block, fused, [x], lambda out: out)
    runner = fused._fusion_runner
    entry = next(iter((runner.generic or runner.exact).values()))
    assert entry.joint is not None, entry.joint_reason  # getitem_grad compiled too


def test_advanced_indexing_still_runs_eagerly_with_a_reason():
    class Gather(nn.Module):
        def forward(self, x, i):
            return x[i] * 2

    block = Gather()
    x, i = fn.randn(5, 3), fn.tensor([0, 4, 4])
    with pytest.warns(FusionFallbackWarning, match="advanced indexing is not generated"):
        got = fuse(block)(x, i)
    np.testing.assert_array_equal(got.numpy(), block(x, i).numpy())


# ---- matmul beyond 2-D: reshaped and per-matrix products ------------------------------------

class _Products(nn.Module):
    """A Linear on 3-D input (stacked rows, transposed weight), a 3-D times a matrix, a
    stack times a vector, a vector times a matrix, batch times batch (a batch of one
    broadcast), a vector dot product; each with an epilogue or returned."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.w = nn.Parameter(fn.randn(3, 5))
        self.v = nn.Parameter(fn.randn(5))

    def forward(self, x, y, z):
        h = fn.relu(self.lin(x))
        a = h @ self.w
        return (a * 2 + 1, a @ self.v, self.v @ self.w.t(), fn.matmul(a, y), z @ a,
                self.v @ self.v)


@pytest.mark.parametrize("batch", [3, 1, 2, 8])
def test_matmul_of_every_generated_rank_equals_eager(batch):
    block = _Products()
    fused = fuse(block, fallback=False)
    x, y, z = fn.randn(batch, 6, 4), fn.randn(batch, 5, 2), fn.randn(1, 2, 6)
    with fn.no_grad():
        _assert_same_outputs(fused(x, y, z), block(x, y, z), rtol=1e-5, atol=1e-5)


def test_integer_batched_matmul_wraps_as_eager():
    class Ints(nn.Module):
        def forward(self, a, b):
            return (a @ b) * 3

    block = Ints()
    a = fn.tensor(np.full((2, 3, 4), 2 ** 40, dtype=np.int64))
    b = fn.tensor(np.full((2, 4, 2), 2 ** 30, dtype=np.int64))
    got = fuse(block, fallback=False)(a, b)
    np.testing.assert_array_equal(got.numpy(), block(a, b).numpy())


def test_gradients_through_3d_products_equal_eager():
    block = _Products()
    fused = fuse(block)
    x, y, z = fn.randn(4, 6, 4), fn.randn(4, 5, 2), fn.randn(1, 2, 6)
    _assert_same_gradients(block, fused, [x, y, z], lambda out: (out[0] * out[0]).sum(),
                           atol=1e-5)


# ---- indexed writes: setitem as a copy with a slice assignment -----------------------------

class _Writes(nn.Module):
    """Constants, a computed row and a broadcast column written at basic keys, a
    float written into an int tensor (NumPy's assignment truncates), a key with None."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 5)

    def forward(self, x):
        h = self.lin(x) + 0.5
        h[:, 1:3] = 0.5
        h[:, -1] = x[:, 0] * 2
        g = h * 1
        g[..., None, 0] = g[:, None, 4]
        q = (x > 0).to(fn.int64)
        q[:, 1] = 7.9
        c = fn.tensor(3.0)[None] * g[:, :1]   # a 0-d constant read by an Index step
        return h + 1, g, q, c


@pytest.mark.parametrize("batch", [3, 1, 6])
def test_indexed_writes_compile_and_equal_eager(batch):
    block = _Writes()
    fused = fuse(block, fallback=False)
    x = fn.randn(batch, 4)
    with fn.no_grad():
        _assert_same_outputs(fused(x), block(x))


def test_gradients_through_indexed_writes_equal_eager():
    block = _Writes()
    fused = fuse(block)
    x = fn.randn(3, 4)
    _assert_same_gradients(block, fused, [x], lambda out: out[0].sum() +
                           (out[1] * out[1]).sum() + out[3].sum())


# ---- argmax / argmin: ArgIndex steps ----------------------------------------------------------

class _Extremes(nn.Module):
    def forward(self, x):
        h = x * 2
        return (h.argmax(1), h.argmin(dim=0, keepdim=True), h.argmax(), h.t().argmin(1),
                fn.argmax(h, dim=-1, keepdim=True) + 1, h[:, 0].argmax(0),
                h[:, 1].argmin(0, keepdim=True))


@pytest.mark.parametrize("batch", [3, 1, 7])
def test_argmax_and_argmin_compile_and_pick_eagers_index(batch):
    # Ties go to the first index, a NaN is the extreme (NumPy's rule, which eager uses).
    block = _Extremes()
    fused = fuse(block, fallback=False)
    x = fn.randn(batch, 5)
    x[0, 2] = float("nan")
    x[-1, :] = 1.0
    _assert_same_outputs(fused(x), block(x), exact=True)
    entry = next(iter((fused._fusion_runner.generic or fused._fusion_runner.exact).values()))
    assert "np.argmax" in entry.compiled.source and "np.argmin" in entry.compiled.source


def test_an_empty_argmax_raises_eagers_error_from_compiled_code():
    # Unreachable through fuse today (a trace of an empty reduction raises first), so
    # the step's own check is read: numba's argmax would raise ZeroDivisionError.
    from fusionnet.codegen.lower import ArgIndex
    from fusionnet.codegen.numba.driver import _arg_index
    step = ArgIndex("out", "x0", "max", 1, 2, "argmax", ("B",), "int64")
    text = "\n".join(_arg_index(step, "    ", None))
    assert "x0.shape[1] == 0" in text and "argmax() of an empty tensor" in text


# ---- training-step updates computed straight into their targets ----------------------------

def _update_kernel(name, target, index=("i0",)):
    from fusionnet.codegen.lower import Kernel
    return Kernel(f"k_{name}", "elementwise", name, (4,), "float32", [target, "g"],
                  [("load", "a0", target, index), ("load", "a1", "g", ("i0",)),
                   ("op", "v2", "sub", {}, ["a0", "a1"], "float32")], result="v2")


def test_an_update_is_computed_in_place_only_when_nothing_reads_the_old_value():
    from fusionnet.codegen.lower import Program
    from fusionnet.codegen.numba.driver import _computed_in_place

    def prog(*steps, outputs=("n0",), writes=None):
        p = Program("step", inputs=["p0", "g"], steps=list(steps), outputs=list(outputs),
                    structure="tuple")
        p.writes = writes if writes is not None else {0: "p0"}
        p.shapes.update({"p0": (4,), "g": (4,), "n0": (4,), "n1": (4,)})
        p.dtypes.update({k: "float32" for k in p.shapes})
        return p

    assert _computed_in_place(prog(_update_kernel("n0", "p0"))) == {"n0": "p0"}
    # A later kernel reads the old p0: the update must wait.
    later = _update_kernel("n1", "p0")
    assert _computed_in_place(prog(_update_kernel("n0", "p0"), later,
                                   outputs=("n0", "n1"), writes={0: "p0"})) == {}
    # A read of p0 at another index than the one written (a broadcast): not in place.
    assert _computed_in_place(prog(_update_kernel("n0", "p0", index=("0",)))) == {}
