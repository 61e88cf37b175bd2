"""Losses and functional ops against NumPy references; gradients against finite differences."""
import numpy as np
import pytest

import fusionnet as torch
from fusionnet import nn
from fusionnet.nn import functional as F


def _np(t):
    return t.detach().numpy()


def _log_softmax_np(x):
    m = x.max(1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(1, keepdims=True))


def _ce_np(logits, target, reduction="mean"):
    per = -_log_softmax_np(logits)[np.arange(len(target)), target]
    return {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]


def _numeric_grad(f, x, eps=1e-6):
    """Central differences of scalar function ``f`` (NumPy in, float out) at ``x``."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        g[i] = (f(up) - f(down)) / (2 * eps)
    return g


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_numpy(reduction):
    logits = torch.randn(6, 5, dtype=torch.float64)
    target = torch.randint(0, 5, (6,))
    got = nn.CrossEntropyLoss(reduction=reduction)(logits, target)
    np.testing.assert_allclose(_np(got), _ce_np(_np(logits), _np(target), reduction),
                               rtol=1e-12)


def test_cross_entropy_gradient_finite_differences():
    x0 = np.random.default_rng(0).normal(size=(4, 3)) * 3
    target = np.array([2, 0, 1, 2])
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    F.cross_entropy(x, torch.tensor(target)).backward()
    num = _numeric_grad(lambda a: _ce_np(a, target), x0)
    np.testing.assert_allclose(_np(x.grad), num, rtol=1e-6, atol=1e-9)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = torch.tensor([[1000.0, 0.0], [0.0, -1000.0]])
    loss = F.cross_entropy(logits, torch.tensor([1, 1]), reduction="none")
    np.testing.assert_allclose(_np(loss), [1000.0, 1000.0], rtol=1e-6)


def test_cross_entropy_probability_targets_and_unbatched():
    logits = torch.randn(3, 4, dtype=torch.float64)
    probs = F.softmax(torch.randn(3, 4, dtype=torch.float64), 1)
    got = F.cross_entropy(logits, probs)
    ref = -(_np(probs) * _log_softmax_np(_np(logits))).sum(1).mean()
    np.testing.assert_allclose(_np(got), ref, rtol=1e-12)
    one = F.cross_entropy(logits[0], torch.tensor(2))
    np.testing.assert_allclose(_np(one), _ce_np(_np(logits)[:1], np.array([2])), rtol=1e-12)


def test_cross_entropy_rejects_bad_input():
    with pytest.raises(ValueError):
        F.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        nn.CrossEntropyLoss(reduction="avg")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_matches_numpy_and_gradient(reduction):
    a0 = np.random.default_rng(1).normal(size=(3, 4))
    b0 = np.random.default_rng(2).normal(size=(3, 4))
    a = torch.tensor(a0, requires_grad=True)
    loss = nn.MSELoss(reduction=reduction)(a, torch.tensor(b0))
    ref = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction]((a0 - b0) ** 2)
    np.testing.assert_allclose(_np(loss), ref, rtol=1e-12)
    loss.sum().backward()
    num = _numeric_grad(lambda v: np.sum(
        {"mean": np.mean, "sum": np.sum, "none": lambda w: w}[reduction]((v - b0) ** 2)), a0)
    np.testing.assert_allclose(_np(a.grad), num, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("needs", [(True, False), (True, True), (False, True)])
def test_mse_loss_is_one_op_that_rounds_as_its_decomposition(reduction, needs):
    # One row (one dispatch, one MseLossBackward0 node) in eager; the same bits as the
    # subtraction, product and mean a trace records instead (ops/loss.py).
    rng = np.random.default_rng(3)
    a0, b0 = rng.standard_normal((2, 5, 7)).astype(np.float32)
    a, b = torch.tensor(a0).requires_grad_(needs[0]), torch.tensor(b0).requires_grad_(needs[1])
    one = F.mse_loss(a, b, reduction=reduction)
    assert one.grad_fn.name() == "MseLossBackward0" and one.grad_fn.next_functions
    one.backward()
    a2, b2 = torch.tensor(a0).requires_grad_(needs[0]), torch.tensor(b0).requires_grad_(needs[1])
    d = a2 - b2
    parts = (d * d).mean() if reduction == "mean" else (d * d).sum()
    parts.backward()
    assert np.array_equal(_np(one), _np(parts))
    for x, y in ((a, a2), (b, b2)):
        assert (x.grad is None) == (y.grad is None)
        if x.grad is not None:
            assert np.array_equal(_np(x.grad), _np(y.grad))


def test_a_traced_mse_loss_records_its_decomposition():
    from fusionnet.tracer import trace

    class Loss(nn.Module):
        def forward(self, a, b):
            return F.mse_loss(a, b)

    g = trace(Loss(), torch.randn(3, 4), torch.randn(3, 4))
    assert sorted(g.node(n)["op"] for n in g.nodes_of("op")) == ["mean", "mul", "sub"]


def test_mse_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        F.mse_loss(torch.zeros(3, 1), torch.zeros(3))


def test_log_softmax_and_softmax_gradients():
    x0 = np.random.default_rng(3).normal(size=(2, 5))
    w = np.random.default_rng(4).normal(size=(2, 5))
    for fn, ref in [(F.log_softmax, _log_softmax_np),
                    (F.softmax, lambda a: np.exp(_log_softmax_np(a)))]:
        x = torch.tensor(x0, requires_grad=True)
        (fn(x, 1) * torch.tensor(w)).sum().backward()
        np.testing.assert_allclose(_np(fn(x, 1)), ref(x0), rtol=1e-12)
        num = _numeric_grad(lambda a, ref=ref: float((ref(a) * w).sum()), x0)
        np.testing.assert_allclose(_np(x.grad), num, rtol=1e-6, atol=1e-9)


def test_softmax_other_dim_and_tensor_method():
    x = torch.randn(3, 4, dtype=torch.float64)
    e = np.exp(_np(x))
    np.testing.assert_allclose(_np(F.softmax(x, 0)), e / e.sum(0), rtol=1e-12)
    np.testing.assert_allclose(_np(x.softmax(-1)), e / e.sum(1, keepdims=True), rtol=1e-12)


def test_gelu_gradient_finite_differences():
    from math import erf, sqrt
    x0 = np.linspace(-3, 3, 7)
    x = torch.tensor(x0, requires_grad=True)
    F.gelu(x).sum().backward()
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / sqrt(2))))
    np.testing.assert_allclose(_np(x.grad), _numeric_grad(lambda a: gelu(a).sum(), x0),
                               rtol=1e-6, atol=1e-9)


def test_linear_functional():
    x, w, b = torch.rand(2, 3), torch.rand(4, 3), torch.rand(4)
    np.testing.assert_allclose(_np(F.linear(x, w, b)), _np(x) @ _np(w).T + _np(b), rtol=1e-6)
    np.testing.assert_allclose(_np(F.linear(x, w)), _np(x) @ _np(w).T, rtol=1e-6)


def test_dropout_functional_eval_is_identity():
    x = torch.rand(3, 3)
    assert F.dropout(x, 0.5, training=False) is x
    with pytest.raises(ValueError):
        F.dropout(x, -0.1)
