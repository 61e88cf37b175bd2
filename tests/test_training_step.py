"""``fuse(step)``: a whole training step compiled as one call, checked against eager.

Every test runs the same step twice from the same initial weights: once through
``fuse`` and once eagerly, and compares the losses, the weights, the gradients and the
optimiser state after each step (batch sizes change between steps).
"""
import warnings

import numpy as np
import pytest

import fusionnet as torch
from fusionnet import fuse, nn, optim
from fusionnet.runtime.runner import FusionFallbackWarning

BATCHES = [4, 7, 2, 16, 5, 4, 9, 3]


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10))


def _pair(make_opt, make_net=_mlp, loss_fn=None):
    """Two identical (net, optimiser, step) triples: one to fuse, one to run eagerly."""
    out = []
    for _ in range(2):
        net = make_net()
        opt = make_opt(net.parameters())
        lf = loss_fn or nn.MSELoss()

        def step(X, Y, net=net, opt=opt, lf=lf):
            opt.zero_grad()
            loss = lf(net(X), Y)
            loss.backward()
            opt.step()
            return loss
        out.append((net, opt, step))
    return out


def _data(i, batch, classes=None):
    rng = np.random.default_rng(100 + i)
    X = torch.tensor(rng.standard_normal((batch, 20)).astype(np.float32))
    if classes:
        Y = torch.tensor(rng.integers(0, classes, batch))
    else:
        Y = torch.tensor(rng.standard_normal((batch, 10)).astype(np.float32))
    return X, Y


def _close(a, b, what, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=what)


def _train(make_opt, steps=60, loss_fn=None, classes=None, make_net=_mlp, check_state=True):
    (fnet, fopt, fstep), (enet, eopt, estep) = _pair(make_opt, make_net, loss_fn)
    fused = fuse(fstep)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusionFallbackWarning)
        for i in range(steps):
            X, Y = _data(i, BATCHES[i % len(BATCHES)], classes)
            lf, le = fused(X, Y), estep(X, Y)
            _close(lf.item(), le.item(), f"loss at step {i}")
    for (name, p), q in zip(fnet.named_parameters(), enet.parameters()):
        _close(p.detach().numpy(), q.detach().numpy(), f"{name} after {steps} steps")
        assert (p.grad is None) == (q.grad is None), name
        if q.grad is not None:
            _close(p.grad.numpy(), q.grad.numpy(), f"grad of {name}")
    if check_state:
        for p, q in zip(fnet.parameters(), enet.parameters()):
            fs, es = fopt.state.get(p, {}), eopt.state.get(q, {})
            assert sorted(fs) == sorted(es)
            for k in es:
                if isinstance(es[k], torch.Tensor):
                    _close(fs[k].numpy(), es[k].numpy(), f"optimizer state {k}")
                else:
                    assert fs[k] == es[k], k
    return fused


@pytest.mark.parametrize("make_opt", [
    lambda ps: optim.SGD(ps, lr=0.05),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.8, dampening=0.1, maximize=False),
    lambda ps: optim.Adam(ps, lr=1e-2),
    lambda ps: optim.Adam(ps, lr=1e-2, amsgrad=True, weight_decay=1e-2),
    lambda ps: optim.AdamW(ps, lr=1e-2),
], ids=["sgd", "momentum", "nesterov-wd", "dampening", "adam", "amsgrad-wd", "adamw"])
def test_sixty_steps_match_eager(make_opt):
    fused = _train(make_opt)
    # Batch sizes change, but one batch-generic compile serves them (plus the first
    # steps of optimisers that create state, and the batch sizes below 2... none here).
    assert len(fused.compiles) <= 3, fused.compiles


def test_cross_entropy_step_matches_eager():
    _train(lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), steps=30,
           loss_fn=nn.CrossEntropyLoss(), classes=10)


def test_lr_change_is_seen_without_compiling():
    (fnet, fopt, fstep), (enet, eopt, estep) = _pair(lambda ps: optim.SGD(ps, lr=0.1))
    fused = fuse(fstep)
    for i in range(6):
        for opt in (fopt, eopt):
            opt.param_groups[0]["lr"] = 0.1 / (i + 1)
        X, Y = _data(i, 4)
        _close(fused(X, Y).item(), estep(X, Y).item(), f"loss {i}")
    for p, q in zip(fnet.parameters(), enet.parameters()):
        _close(p.detach().numpy(), q.detach().numpy(), "weights")
    assert fused.compiles == ["first call"]


def test_step_updates_in_place_and_keeps_identity():
    (net, opt, step), _ = _pair(lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9))
    arrays = [p._data for p in net.parameters()]
    fused = fuse(step)
    for i in range(3):
        fused(*_data(i, 4))
    assert all(p._data is a for p, a in zip(net.parameters(), arrays))
    bufs = [opt.state[p]["momentum_buffer"]._data for p in net.parameters()]
    fused(*_data(3, 4))
    assert all(opt.state[p]["momentum_buffer"]._data is b
               for p, b in zip(net.parameters(), bufs))


def test_bad_input_raises_eagers_error():
    (_, _, step), _ = _pair(lambda ps: optim.SGD(ps, lr=0.1))
    fused = fuse(step)
    X, Y = _data(0, 4)
    fused(X, Y)
    with pytest.raises(Exception, match="cannot be multiplied|shape"):
        fused(torch.randn(4, 21), Y)


def test_uncompilable_step_falls_back_with_reason():
    (net, opt, step), (enet, eopt, estep) = _pair(lambda ps: optim.SGD(ps, lr=0.1))

    def step_item(X, Y):  # .item() inside the step needs a Python value
        return step(X, Y).item()

    def estep_item(X, Y):
        return estep(X, Y).item()
    fused = fuse(step_item)
    with pytest.warns(FusionFallbackWarning, match="runs eagerly"):
        a = fused(*_data(0, 4))
    assert a == pytest.approx(estep_item(*_data(0, 4)))


def test_rebinding_a_global_is_seen():
    (net, opt, step), _ = _pair(lambda ps: optim.SGD(ps, lr=0.1))
    holder = {"scale": 1.0}

    def scaled(X, Y):
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(X), Y) * holder["scale"]
        loss.backward()
        opt.step()
        return loss
    fused = fuse(scaled)
    X, Y = _data(0, 4)
    a = fused(X, Y).item()
    holder["scale"] = 2.0
    b = fused(X, Y).item()
    assert len(fused.compiles) == 2
    assert b == pytest.approx(2 * a, rel=0.2)


def test_explain_shows_phases_and_saved_bytes():
    (net, opt, step), _ = _pair(lambda ps: optim.Adam(ps, lr=1e-2))
    fused = fuse(step)
    X, Y = _data(0, 8)
    text = str(torch.explain(fused, X, Y))
    for part in ("forward kernels:", "backward kernels:", "update kernels:",
                 "saved between forward and backward:", "bytes at batch 8",
                 "written in place: 12 arrays"):
        assert part in text, part
    assert not any(opt.state[p] for p in net.parameters() if p in opt.state) or all(
        opt.state[p]["step"] == 0 for p in net.parameters())  # explain ran no step


def test_explain_of_a_fused_module_shows_its_compiled_backward():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10))
    text = str(torch.explain(fuse(net), torch.randn(4, 20)))
    assert "compiled backward" in text and "backward kernels:" in text
    assert "saved by the forward for the backward: 1 values, 512 bytes" in text
    assert "matmul + le + logical_not + where" in text  # the ReLU mask in the epilogue


class _Halving(nn.Module):
    """FixedHiddenMLP's pattern: layers, then a data-dependent ``while`` on the result."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(20, 16)
        self.out = nn.Linear(16, 10)

    def forward(self, X):
        X = self.out(nn.functional.relu(self.fc(X)))
        while X.abs().sum() > 4:
            X = X / 2
        return X


def test_step_through_a_data_dependent_while_matches_eager():
    def make():
        torch.manual_seed(0)
        return _Halving()
    fused = _train(lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9), steps=30, make_net=make)
    entry = next(e for e in fused.exact.values() if not isinstance(e, str))
    assert entry.graph.nodes_of("while")  # the loops are in the compiled code


def test_fixed_hidden_mlp_step_matches_eager():
    from fusionnet import zoo

    def make():
        torch.manual_seed(0)
        net = zoo.FixedHiddenMLP()
        net(torch.rand(2, 20))
        return net
    _train(lambda ps: optim.SGD(ps, lr=0.05), steps=20, make_net=make,
           loss_fn=lambda out, Y: (out - Y.sum()) ** 2)


def test_eager_backend_and_decorator_forms():
    (net, opt, step), (enet, eopt, estep) = _pair(lambda ps: optim.SGD(ps, lr=0.1))
    eager = fuse(step, backend="eager")
    X, Y = _data(0, 4)
    assert eager(X, Y).item() == pytest.approx(estep(X, Y).item(), rel=1e-6)
    assert eager.exact == {}
    decorated = fuse(fallback=False)(step)
    decorated(X, Y)
    assert decorated.compiles == ["first call"]


def test_step_naming_optimisers_in_a_list_with_groups_and_frozen_parameters():
    def make():
        torch.manual_seed(0)
        net = _mlp()
        net[0].bias.requires_grad_(False)
        return net
    nets = [make(), make()]
    opts = [optim.SGD([{"params": [n[0].weight], "lr": 0.1},
                       {"params": [n[2].weight, n[2].bias], "lr": 0.01, "momentum": 0.5}])
            for n in nets]
    inner = fuse(nets[0])   # a fused module inside a fused step runs its forward inline

    def fstep(X, Y):
        opts[0].zero_grad()
        loss = nn.functional.mse_loss(inner(X), Y)
        loss.backward()
        opts[0].step()
        return loss

    def estep(X, Y):
        opts[1].zero_grad()
        loss = nn.functional.mse_loss(nets[1](X), Y)
        loss.backward()
        opts[1].step()
        return loss
    fused = fuse(fstep)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusionFallbackWarning)
        for i in range(12):
            if i == 6:
                for o in opts:
                    o.param_groups[1]["lr"] = 0.05
            X, Y = _data(i, BATCHES[i % len(BATCHES)])
            _close(fused(X, Y).item(), estep(X, Y).item(), f"loss {i}")
    for p, q in zip(nets[0].parameters(), nets[1].parameters()):
        _close(p.detach().numpy(), q.detach().numpy(), "weights")
    assert nets[0][0].bias.grad is None
    assert len(fused.compiles) == 2, fused.compiles  # the first step creates the buffers


def test_replaced_parameter_storage_is_seen():
    (net, opt, step), (enet, eopt, estep) = _pair(lambda ps: optim.Adam(ps, lr=1e-2))
    fused = fuse(step)
    X, Y = _data(0, 4)
    fused(X, Y), estep(X, Y)
    for m in (net, enet):   # same shapes: reused without compiling
        m[2].bias.data = torch.zeros(10)
    _close(fused(X, Y).item(), estep(X, Y).item(), "after .data =")
    assert len(fused.compiles) == 1
    for p, q in zip(net.parameters(), enet.parameters()):
        _close(p.detach().numpy(), q.detach().numpy(), "weights")
    assert opt.state[net[0].weight]["step"] == eopt.state[enet[0].weight]["step"] == 2


def test_numpy_argument_is_refused():
    from fusionnet.runtime.runner import FuseInputError
    (_, _, step), _ = _pair(lambda ps: optim.SGD(ps, lr=0.1))
    X, Y = _data(0, 4)
    with pytest.raises(FuseInputError, match="NumPy array"):
        fuse(step)(X.numpy(), Y)


class _Stopped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(20, 16)
        self.b = nn.Linear(16, 10)
        self.c = nn.Linear(16, 10)

    def forward(self, x):
        h = self.a(x).relu()
        with torch.no_grad():
            k = self.c(h)             # c gets no gradient, nor does anything through k
        return self.b(h) + k * self.b(h.detach())


def test_step_respects_no_grad_and_detach_inside_forward():
    def make():
        torch.manual_seed(0)
        return _Stopped()
    fused = _train(lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9), steps=12, make_net=make,
                   check_state=False)
    (net,) = [m for m in fused.found[0] if isinstance(m, _Stopped)]
    assert net.c.weight.grad is None and net.a.weight.grad is not None
