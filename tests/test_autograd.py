"""Autograd engine: accumulation, broadcasting, reuse, no_grad, in-place checks, errors."""
from __future__ import annotations

import numpy as np
import pytest

import fusionnet as fn
from test_nn_functional import _numeric_grad


def test_mlp_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 5))
    W1, b1 = rng.standard_normal((5, 7)), rng.standard_normal(7)
    W2 = rng.standard_normal((7, 3))

    def loss(w1, b, w2, lib):
        h = lib["relu"](lib["t"](X) @ w1 + b)
        return ((h @ w2).tanh() ** 2).mean() if lib is FN else None

    FN = {"relu": fn.relu, "t": fn.tensor}
    params = [fn.tensor(a, requires_grad=True) for a in (W1, b1, W2)]
    out = loss(*params, FN)
    out.backward()

    def np_loss(w1, b, w2):
        h = np.maximum(X @ w1 + b, 0)
        return float((np.tanh(h @ w2) ** 2).mean())

    for i, (p, a) in enumerate(zip(params, (W1, b1, W2))):
        def f(v, i=i):
            args = [W1, b1, W2]
            args[i] = v
            return np_loss(*args)
        np.testing.assert_allclose(p.grad.numpy(), _numeric_grad(f, a), rtol=1e-5, atol=1e-7)


def test_broadcast_gradient_is_reduced_to_input_shape():
    a = fn.ones(3, 1, requires_grad=True)
    b = fn.ones(4, requires_grad=True)
    (a * b * 2).sum().backward()
    assert a.grad.shape == (3, 1) and a.grad.tolist() == [[8.0]] * 3
    assert b.grad.shape == (4,) and b.grad.tolist() == [6.0] * 4


def test_tensor_used_twice_gets_the_sum():
    x = fn.tensor([3.0], requires_grad=True)
    (x * x + x).backward()
    assert x.grad.item() == 7.0


def test_gradients_accumulate_across_backward_calls():
    x = fn.tensor([1.0, 2.0], requires_grad=True)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    assert x.grad.tolist() == [5.0, 5.0]


def test_backward_with_explicit_gradient():
    x = fn.tensor([1.0, 2.0], requires_grad=True)
    (x * x).backward(fn.tensor([1.0, 0.5]))
    assert x.grad.tolist() == [2.0, 2.0]


def test_backward_on_non_scalar_needs_gradient():
    x = fn.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        (x * 2).backward()


def test_backward_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        fn.ones(2).sum().backward()


def test_no_grad_context_and_decorator():
    x = fn.ones(2, requires_grad=True)
    with fn.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None

    @fn.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad
    assert fn.is_grad_enabled()
    with fn.no_grad():
        with fn.enable_grad():
            assert (x * 2).requires_grad


def test_requires_grad_only_for_floats():
    with pytest.raises(RuntimeError, match="floating point"):
        fn.tensor([1, 2]).requires_grad_()


def test_inplace_on_leaf_requiring_grad_raises():
    w = fn.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w += 1
    with fn.no_grad():
        w += 1  # allowed, as in PyTorch (that is how optimisers update)
    assert w.tolist() == [2.0, 2.0]


def test_inplace_on_saved_tensor_raises_at_backward():
    x = fn.tensor([1.0, 2.0], requires_grad=True)
    y = x * 1
    z = y.exp()  # exp saves its output
    w = (y * y)  # mul saves y
    y += 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        w.sum().backward()
    z.sum().backward()  # exp's saved output was not touched: fine
    np.testing.assert_allclose(x.grad.numpy(), np.exp([1.0, 2.0]), rtol=1e-6)


def test_inplace_division_keeps_gradient_right():
    # FixedHiddenMLP's `X /= 2` on a tensor that requires grad.
    w = fn.tensor([4.0, 8.0], requires_grad=True)
    X = w * 1
    X /= 2
    X /= 2
    X.sum().backward()
    assert w.grad.tolist() == [0.25, 0.25]


def test_setitem_with_grad():
    w = fn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    v = fn.tensor([10.0], requires_grad=True)
    x = w * 2
    x[1:2] = v * 3
    x.sum().backward()
    assert w.grad.tolist() == [2.0, 0.0, 2.0]
    assert v.grad.tolist() == [3.0]


def test_advanced_index_gradient_accumulates_repeats():
    w = fn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w[fn.tensor([0, 0, 2])].sum().backward()
    assert w.grad.tolist() == [2.0, 0.0, 1.0]


def test_grad_fn_names_and_leaves():
    x = fn.ones(2, requires_grad=True)
    y = (x + 1).relu()
    assert x.is_leaf and not y.is_leaf
    assert y.grad_fn.name() == "ReluBackward0"
    assert y.grad_fn.next_functions[0][0].name() == "AddBackward0"


def test_float32_gradients_stay_float32():
    x = fn.ones(3, requires_grad=True)
    (x * 2.5).sum().backward()
    assert x.grad.dtype == fn.float32


# ---- max / min gradients and sign, against PyTorch ----------------------------------------

_NAN = float("nan")
_EXTREMES = {
    "max(dim)": lambda x: x.max(1).values,
    "max(dim, keepdim)": lambda x: x.max(1, keepdim=True)[0],
    "min(dim)": lambda x: x.min(1)[0],
    "max(0)": lambda x: x.max(0).values,
    "amax(dim)": lambda x: x.amax(1),
    "amin(dim)": lambda x: x.amin(1),
    "amax()": lambda x: x.amax(),
    "amax(dims)": lambda x: x.amax((0, 1)),
    "max()": lambda x: x.max(),
    "min()": lambda x: x.min(),
}


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN slices
@pytest.mark.parametrize("data", [[[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]],
                                  [[1.0, _NAN, 3.0], [_NAN, 2.0, _NAN]],
                                  [[-1.0, -1.0, -1.0], [5.0, _NAN, 5.0]]],
                         ids=["ties", "nan", "ties-and-nan"])
@pytest.mark.parametrize("form", sorted(_EXTREMES))
def test_max_min_gradients_with_ties_and_nan_match_torch(form, data):
    torch = pytest.importorskip("torch")
    grads = []
    for lib in (fn, torch):
        x = lib.tensor(data, requires_grad=True)
        y = _EXTREMES[form](x)
        (y * lib.arange(1, y.numel() + 1).reshape(y.shape)).sum().backward()
        grads.append((y.detach().numpy(), x.grad.numpy()))
    (got_y, got_g), (want_y, want_g) = grads
    np.testing.assert_array_equal(got_y, want_y)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-6)  # NaN where torch has NaN


def test_sign_of_nan_is_zero_and_its_gradient_is_zero_like_torch():
    torch = pytest.importorskip("torch")
    data = [_NAN, -0.0, -2.0, 3.0, float("inf")]
    x = fn.tensor(data, requires_grad=True)
    tx = torch.tensor(data, requires_grad=True)
    np.testing.assert_array_equal(x.sign().detach().numpy(), tx.sign().detach().numpy())
    (x.sign().sum() + x.abs().sum()).backward()
    (tx.sign().sum() + tx.abs().sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())


def test_fused_sign_of_nan_matches_torch():
    torch = pytest.importorskip("torch")

    class Sign(fn.nn.Module):
        def forward(self, x):
            return x.sign() * 2 + 1

    data = [[_NAN, -1.5, 0.0], [2.0, -_NAN, -0.0]]
    with fn.no_grad():
        got = fn.fuse(Sign())(fn.tensor(data))
    np.testing.assert_array_equal(got.numpy(), (torch.tensor(data).sign() * 2 + 1).numpy())


def test_retain_graph_semantics_match_pytorch():
    torch_ = pytest.importorskip("torch")

    def run(T):
        outcomes = []
        x = T.ones(3, requires_grad=True)
        y = (x * x).sum()
        y.backward(retain_graph=True)
        y.backward()
        outcomes.append(x.grad.tolist())
        try:
            y.backward()
            outcomes.append("ok")
        except RuntimeError as err:
            outcomes.append("second time" in str(err))
        z = (x + 1).sum()          # nothing saved: a second backward is fine
        z.backward()
        z.backward()
        outcomes.append(x.grad.tolist())
        return outcomes

    assert run(fn) == run(torch_)


def test_integer_and_bool_results_never_require_grad_as_in_pytorch():
    torch_ = pytest.importorskip("torch")
    for T in (fn, torch_):
        x = T.tensor([1.5, -2.0, 3.0], requires_grad=True)
        outs = [x.int(), x.long(), x.bool(), T.maximum(x.int(), x.int()), x > 0,
                (x * 2).argmax()]
        assert [o.requires_grad for o in outs] == [False] * 6, T.__name__


def test_relu_gradient_at_nan_matches_pytorch():
    torch_ = pytest.importorskip("torch")
    grads = []
    for T in (fn, torch_):
        x = T.tensor([1.5, -2.0, float("nan"), 0.0], requires_grad=True)
        x.relu().backward(T.tensor([1.0, float("nan"), 2.0, 3.0]))
        grads.append(x.grad.numpy())
    np.testing.assert_array_equal(*grads)


def test_mean_of_integers_raises_pytorchs_error_type():
    torch_ = pytest.importorskip("torch")
    for T in (fn, torch_):
        with pytest.raises(RuntimeError, match="mean\\(\\): could not infer output dtype"):
            T.tensor([1, 2]).mean()


@pytest.mark.parametrize("how", ["min()", "min(0)", "max(0, keepdim)", "amin(0)", "amax()"])
def test_extreme_gradients_keep_exact_zeros_like_pytorch(how):
    # Found by the fuzzer's --torch run (seed 1202, case 1202000091): an inf or NaN
    # incoming gradient times the 0/1 hit mask put NaN everywhere; PyTorch's max()/min()
    # write the gradient into the hits only (amax/amin do multiply, as here).
    torch = pytest.importorskip("torch")
    x = np.array([[1.0, np.nan, -np.inf, 3.0], [2.0, -1.0, 4.0, 4.0]], np.float32)

    def run(lib, t):
        out = {"min()": lambda: t.min(), "min(0)": lambda: t.min(0)[0],
               "max(0, keepdim)": lambda: t.max(0, keepdim=True)[0],
               "amin(0)": lambda: t.amin(0), "amax()": lambda: t.amax()}[how]()
        (out * out).sum().backward()
        return t.grad.numpy()

    got = run(fn, fn.tensor(x, requires_grad=True))
    want = run(torch, torch.tensor(x, requires_grad=True))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want))


def test_abs_of_bool_raises_as_pytorch_does():
    with pytest.raises(TypeError, match="abs is not implemented for bool"):
        fn.tensor([True, False]).abs()
