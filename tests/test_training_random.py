"""Random numbers in compiled code: dropout and ``rand``/``randn`` inside forward.

A draw inside forward is a random input of the compiled code, drawn from the same
counter-based stream at every call (``fusionnet/random.py``), so: fresh numbers per
call, the same numbers as eager for the same seed and order of draws, the stream left
where eager leaves it, and the backward using the forward's mask.
"""
import warnings

import numpy as np
import pytest

import fusionnet as torch
from fusionnet import fuse, nn, optim
from fusionnet.nn import functional as F


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("error")
    return ctx


def _drop_net(p=0.3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(p), nn.Linear(64, 4))


def test_dropout_fresh_mask_per_call_and_keep_rate():
    ctx = _quiet()
    try:
        fused = fuse(nn.Sequential(nn.Dropout(0.3)))
        X = torch.ones(256, 64)
        a, b = fused(X).numpy(), fused(X).numpy()
    finally:
        ctx.__exit__(None, None, None)
    assert not np.array_equal(a != 0, b != 0)
    for m in (a, b):
        keep = (m != 0).mean()
        assert abs(keep - 0.7) < 0.02, keep
        np.testing.assert_allclose(m[m != 0], 1 / 0.7, rtol=1e-6)
    assert next(iter(fused._fusion_runner.exact.values())).fn is not None


@pytest.mark.parametrize("batch", [2, 8, 33])
def test_dropout_same_as_eager_for_the_same_seed_and_stream_moves_alike(batch):
    net = _drop_net()
    fused = fuse(net)
    X = torch.randn(batch, 16, requires_grad=True)
    torch.manual_seed(11)
    out = fused(X)
    after_fused = torch.random.default_generator.get_state()
    out.sum().backward()
    got = (out.detach().numpy().copy(), X.grad.numpy().copy(),
           [p.grad.numpy().copy() for p in net.parameters()])
    X.grad = None
    net.zero_grad()
    torch.manual_seed(11)
    ref = net(X)
    assert torch.random.default_generator.get_state() == after_fused
    ref.sum().backward()
    np.testing.assert_allclose(got[0], ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], X.grad.numpy(), rtol=1e-5, atol=1e-6)
    for g, p in zip(got[2], net.parameters()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-6)
    entry = next(iter(fused._fusion_runner.exact.values()))
    assert entry.joint is not None and entry.random


def test_backward_uses_the_forward_mask():
    fused = fuse(nn.Sequential(nn.Dropout(0.5)))
    X = torch.ones(64, 32, requires_grad=True)
    out = fused(X)
    out.sum().backward()
    kept = out.detach().numpy() != 0
    np.testing.assert_array_equal(X.grad.numpy() != 0, kept)
    np.testing.assert_allclose(X.grad.numpy()[kept], 2.0)


def test_manual_seed_reproduces_fused_draws():
    fused = fuse(_drop_net())
    X = torch.randn(5, 16)
    torch.manual_seed(4)
    a = fused(X).detach().numpy()
    torch.manual_seed(4)
    b = fused(X).detach().numpy()
    np.testing.assert_array_equal(a, b)


class _Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        noise = torch.randn(*x.shape) * 0.1
        gate = torch.rand(x.shape[0], 1)
        return self.fc(x + noise) * gate + F.dropout(x, 0.2, training=True)


def test_rand_and_randn_inside_forward_compile_and_match_eager():
    torch.manual_seed(0)
    net = _Noisy()
    fused = fuse(net)
    X = torch.randn(4, 6)
    ctx = _quiet()
    try:
        torch.manual_seed(9)
        a = fused(X).detach().numpy()
        c = fused(X).detach().numpy()
    finally:
        ctx.__exit__(None, None, None)
    torch.manual_seed(9)
    b = net(X).detach().numpy()
    d = net(X).detach().numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, d, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, c)


def test_training_step_with_dropout_matches_eager():
    nets = [_drop_net(), _drop_net()]
    opts = [optim.SGD(n.parameters(), lr=0.05, momentum=0.9) for n in nets]
    loss_fn = nn.MSELoss()

    def make(net, opt):
        def step(X, Y):
            opt.zero_grad()
            loss = loss_fn(net(X), Y)
            loss.backward()
            opt.step()
            return loss
        return step
    fused, eager = fuse(make(*zip(nets, opts).__next__())), make(nets[1], opts[1])
    rng = np.random.default_rng(0)
    ctx = _quiet()
    try:
        for i in range(20):
            b = [4, 9, 3][i % 3]
            X = torch.tensor(rng.standard_normal((b, 16)).astype(np.float32))
            Y = torch.tensor(rng.standard_normal((b, 4)).astype(np.float32))
            torch.manual_seed(100 + i)
            lf = fused(X, Y).item()
            torch.manual_seed(100 + i)
            le = eager(X, Y).item()
            assert lf == pytest.approx(le, rel=1e-5, abs=1e-6), i
    finally:
        ctx.__exit__(None, None, None)
    for p, q in zip(nets[0].parameters(), nets[1].parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-4,
                                   atol=1e-6)
