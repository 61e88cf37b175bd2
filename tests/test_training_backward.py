"""The compiled backward of a fused module (``runtime/joint_module.py``) against eager.

``loss.backward()`` through a fused module's output runs one native call of a backward
built from the rows' gradient rules; these tests check it gives eager's gradients for
parameters and inputs, accumulates and frees as eager does, and stops where eager stops.
"""
import warnings

import numpy as np
import pytest

import fusionnet as torch
from fusionnet import fuse, nn, zoo
from fusionnet.nn import functional as F


def _grads(net, make_x, loss=lambda y: (y * y).sum()):
    X = make_x()
    out = net(X)
    loss(out).backward()
    grads = [None if p.grad is None else p.grad.numpy().copy() for p in net.parameters()]
    gx = None if X.grad is None else X.grad.numpy().copy()
    return out.detach().numpy().copy(), grads, gx


def _compare(make_net, shape, batches=(4, 7, 2), input_grad=True, joint=True):
    torch.manual_seed(0)
    net = make_net()
    net(torch.randn(*shape))  # materialise lazy layers
    fused = fuse(net)
    for b in batches:
        data = np.random.default_rng(b).standard_normal((b,) + shape[1:]).astype(np.float32)

        def make_x():
            return torch.tensor(data, requires_grad=input_grad)
        net.zero_grad()
        got = _grads(fused, make_x)
        net.zero_grad()
        want = _grads(net, make_x)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
        for g, w in zip(got[1], want[1]):
            assert (g is None) == (w is None)
            if w is not None:
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        if input_grad:
            np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-5)
    entries = list(fused._fusion_runner.exact.values())
    assert all((e.joint is not None) is joint for e in entries), [e.joint_reason for e in entries]
    return fused


@pytest.mark.parametrize("make_net,shape", [
    (lambda: nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10)), (2, 20)),
    (zoo.MLP, (2, 20)),
    (zoo.NestMLP, (2, 20)),
    (zoo.SequentialMLP, (2, 20)),
    (lambda: nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Sigmoid(),
                           nn.Linear(16, 3)), (3, 8)),
], ids=["mlp", "zoo-mlp", "nest", "sequential", "tanh-sigmoid"])
def test_fused_backward_equals_eager(make_net, shape):
    fused = _compare(make_net, shape)
    # One batch-generic compile (batch 2 is compiled exactly: sizes below 2... 2 is fine).
    assert len(fused._fusion_runner.compiles) <= 2


def test_parameters_only_and_frozen_parameters():
    def make():
        net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
        net[0].weight.requires_grad_(False)
        return net
    _compare(make, (4, 6), input_grad=False)


def test_matches_pytorch():
    import torch as pt
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    ref = pt.nn.Sequential(pt.nn.Linear(5, 7), pt.nn.ReLU(), pt.nn.Linear(7, 3))
    with pt.no_grad():
        for p, q in zip(net.parameters(), ref.parameters()):
            q.copy_(pt.tensor(p.detach().numpy()))
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    fused = fuse(net)
    X = torch.tensor(x, requires_grad=True)
    (fused(X) ** 2).mean().backward()
    Xr = pt.tensor(x, requires_grad=True)
    (ref(Xr) ** 2).mean().backward()
    np.testing.assert_allclose(X.grad.numpy(), Xr.grad.numpy(), rtol=1e-5, atol=1e-6)
    for p, q in zip(net.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_accumulates_and_retain_graph():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    fused = fuse(net)
    X = torch.randn(3, 4)
    out = fused(X)
    loss = out.sum()
    loss.backward(retain_graph=True)
    once = net[0].weight.grad.numpy().copy()
    loss.backward()
    np.testing.assert_allclose(net[0].weight.grad.numpy(), 2 * once, rtol=1e-6)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()
    fused(X).sum().backward()  # a new forward: accumulates a third time
    np.testing.assert_allclose(net[0].weight.grad.numpy(), 3 * once, rtol=1e-6)


def test_inplace_change_before_backward_raises_like_eager():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    fused = fuse(net)
    X = torch.randn(3, 4, requires_grad=True)
    out = fused(X)
    with torch.no_grad():
        net[2].weight.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


class _Stops(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        h = self.a(x).relu()
        with torch.no_grad():
            k = self.b(h)          # no gradient into b, nor through k
        d = self.b(h).detach()     # nor through d
        return (h * k + d * h + self.b(h)).sum(1)


def test_no_grad_and_detach_inside_forward():
    fused = _compare(_Stops, (3, 4))
    assert fused is not None


def test_backward_through_a_data_dependent_while_compiles():
    torch.manual_seed(0)
    net = zoo.FixedHiddenMLP()
    X = torch.rand(2, 20)
    net(X)
    fused = fuse(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fused(X)
    out.backward()
    got = [p.grad.numpy().copy() for p in net.parameters()]
    net.zero_grad()
    net(X).backward()
    for g, p in zip(got, net.parameters()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-6)
    entry = next(iter(fused._fusion_runner.exact.values()))
    assert entry.joint is not None, entry.joint_reason  # joint_loops.py
    assert entry.joint.graph.nodes_of("while")


def test_a_parameter_inside_a_loop_body_replays_with_a_reason():
    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(0.3))

        def forward(self, x):
            while x.abs().sum() > 1:         # shrinks every iteration: a few of them
                x = x * self.scale.sigmoid()
            return x.sum()
    torch.manual_seed(0)
    net = Loop()
    X = torch.ones(2, 4)
    fused = fuse(net)
    fused(X).backward()
    got = [p.grad.numpy().copy() for p in net.parameters()]
    net.zero_grad()
    net(X).backward()
    for g, p in zip(got, net.parameters()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-6)
    entry = next(iter(fused._fusion_runner.exact.values()))
    assert entry.joint is None and "inside a data-dependent loop" in entry.joint_reason


def test_compiled_backward_of_a_scalar_output():
    # Fuzz seed 1205, case 1205000076: the compiled backward made the 0-d incoming
    # gradient of a scalar output 1-d (np.ascontiguousarray) and numba refused it.
    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

        def forward(self, x):
            return self.w * x.unsqueeze(3).mean(dim=(0, 1, -2, -1))

    block = Scalar()
    fused = torch.fuse(block, fallback=False)
    x = torch.randn(16, 1, 3, dtype=torch.float64)
    for f in (block, fused, fused):
        block.zero_grad()
        xi = x.clone().requires_grad_(True)
        f(xi).backward()
        if f is block:
            want = (block.w.grad.numpy().copy(), xi.grad.numpy().copy())
        else:
            np.testing.assert_allclose(block.w.grad.numpy(), want[0], rtol=1e-12)
            np.testing.assert_allclose(xi.grad.numpy(), want[1], rtol=1e-12)


# ---- in-place writes into an input after forward: raise exactly where eager raises ---------

def _grads_after_writing_the_input(run, x0, make_input):
    x = x0.clone().requires_grad_()
    h = make_input(x)
    out = run(h)
    h.relu_()   # after forward, before backward
    try:
        out.sum().backward()
    except RuntimeError as err:
        return str(err)
    return x.grad.numpy()


@pytest.mark.parametrize("path", ["compiled", "replayed"])
def test_a_write_into_an_input_eager_does_not_save_keeps_the_gradient(path, monkeypatch):
    # Fuzz case 1218000666: GELU's backward in eager reads values computed from its
    # input, not the input; the compiled backward read the input itself, so the write
    # raised "modified by an inplace operation" where eager trained on.
    from fusionnet.runtime import compiler
    if path == "replayed":
        monkeypatch.setattr(compiler, "_joint", lambda runner, args, traced: (None, "test"))
    block = nn.Sequential(nn.GELU(), nn.Identity(), nn.GELU())
    fused = fuse(block)
    x0 = torch.randn(3, 4, 1)
    soft = lambda x: F.softmax(x, dim=1)  # noqa: E731
    want = _grads_after_writing_the_input(block, x0, soft)
    for _ in range(2):  # the compiling call, then the compiled path
        got = _grads_after_writing_the_input(fused, x0, soft)
        assert not isinstance(got, str), got
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    entry = next(iter(fused._fusion_runner.generic.values()))
    assert (entry.joint is not None) == (path == "compiled")


@pytest.mark.parametrize("path", ["compiled", "replayed"])
def test_a_write_into_an_input_eager_saves_still_raises(path, monkeypatch):
    from fusionnet.runtime import compiler
    if path == "replayed":
        monkeypatch.setattr(compiler, "_joint", lambda runner, args, traced: (None, "test"))
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(4, 3), nn.Tanh())   # Linear saves its input
    fused = fuse(block)
    x0 = torch.randn(5, 4)
    soft = lambda x: x * 1.0  # noqa: E731
    assert "modified by an inplace operation" in _grads_after_writing_the_input(block, x0, soft)
    for _ in range(2):
        got = _grads_after_writing_the_input(fused, x0, soft)
        assert isinstance(got, str) and "modified by an inplace operation" in got
