"""SGD and Adam against hand-written NumPy references of PyTorch's update formulas."""
import numpy as np
import pytest

import fusionnet as torch
from fusionnet import nn, optim

rng = np.random.default_rng(7)
W0 = rng.normal(size=(3, 4))
TARGETS = [rng.normal(size=(3, 4)) for _ in range(3)]


def _grad(w, k):
    """Gradient of the step-k loss sum((w - T_k)**2 * k+1), in NumPy."""
    return 2 * (k + 1) * (w - TARGETS[k])


def _run(make_opt, steps=3, dtype=torch.float64):
    p = nn.Parameter(torch.tensor(W0, dtype=dtype))
    opt = make_opt([p])
    for k in range(steps):
        opt.zero_grad()
        loss = (((p - torch.tensor(TARGETS[k], dtype=dtype)) ** 2) * (k + 1)).sum()
        loss.backward()
        opt.step()
    return p


def _sgd_ref(lr, momentum=0.0, weight_decay=0.0, dampening=0.0, nesterov=False, steps=3):
    w, buf = W0.copy(), None
    for k in range(steps):
        g = _grad(w, k) + weight_decay * w
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        w = w - lr * g
    return w


def _adam_ref(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, steps=3):
    w, m, v, vmax = W0.copy(), np.zeros_like(W0), np.zeros_like(W0), np.zeros_like(W0)
    for k in range(steps):
        t = k + 1
        g = _grad(w, k) + weight_decay * w
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        if amsgrad:
            vmax = np.maximum(vmax, v)
        denom = np.sqrt((vmax if amsgrad else v) / (1 - betas[1] ** t)) + eps
        w = w - lr / (1 - betas[0] ** t) * m / denom
    return w


@pytest.mark.parametrize("kw", [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, weight_decay=0.1),
    dict(lr=0.05, momentum=0.8, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
])
def test_sgd_matches_reference(kw):
    p = _run(lambda ps: optim.SGD(ps, **kw))
    np.testing.assert_allclose(p.detach().numpy(), _sgd_ref(**kw), rtol=1e-12)


@pytest.mark.parametrize("kw", [
    dict(lr=0.01),
    dict(lr=0.1, betas=(0.8, 0.99), weight_decay=0.05),
    dict(lr=0.1, eps=1e-3, amsgrad=True),
])
def test_adam_matches_reference(kw):
    p = _run(lambda ps: optim.Adam(ps, **kw))
    np.testing.assert_allclose(p.detach().numpy(), _adam_ref(**kw), rtol=1e-10)


def test_step_keeps_parameter_object_and_grad_state():
    p = nn.Parameter(torch.ones(2))
    data = p._data
    opt = optim.SGD([p], lr=0.5, momentum=0.9)
    (p * p).sum().backward()
    opt.step()
    assert p._data is data and p.requires_grad and p.is_leaf
    assert p.tolist() == [0.0, 0.0]
    assert "momentum_buffer" in opt.state[p]
    opt.zero_grad()
    assert p.grad is None
    (p + 1).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert p.grad.tolist() == [0.0, 0.0]


def test_param_groups_and_skipped_params():
    a, b, c = (nn.Parameter(torch.ones(1)) for _ in range(3))
    opt = optim.SGD([{"params": [a]}, {"params": [b, c], "lr": 1.0}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 1.0]
    (a * 2 + b * 2).sum().backward()  # c gets no gradient and must not move
    opt.step()
    assert a.item() == pytest.approx(0.8) and b.item() == pytest.approx(-1.0)
    assert c.item() == 1.0
    with pytest.raises(ValueError, match="more than one"):
        optim.SGD([a, a], lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])


def test_optimizer_on_module_and_state_dict_round_trip():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = optim.Adam(net.parameters(), lr=0.01)
    x, y = torch.rand(8, 3), torch.rand(8, 1)
    nn.MSELoss()(net(x), y).backward()
    opt.step()
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2, 3] and sd["param_groups"][0]["lr"] == 0.01
    opt2 = optim.Adam(net.parameters(), lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.01 and opt2.state[net[0].weight]["step"] == 1
    assert "Adam (" in repr(opt)


def test_closure_returns_loss():
    p = nn.Parameter(torch.tensor([3.0]))
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 9.0
    assert p.item() == pytest.approx(1.5)


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.1, amsgrad=True),
                                  lambda ps: optim.AdamW(ps, lr=0.1)])
def test_step_moves_the_version_of_everything_it_writes(make):
    # The update writes arrays directly: a backward that saved the parameter before the
    # step must still fail as PyTorch's does, and state tensors count their writes.
    w = nn.Parameter(torch.randn(3))
    opt = make([w])
    y = (w * w).sum()  # saves w
    w.sum().backward()
    before = w._version[0]
    opt.step()
    assert w._version[0] > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
    w.grad = None
    w.sum().backward()
    states = [t for t in opt.state[w].values() if isinstance(t, torch.Tensor)]
    versions = [t._version[0] for t in states]
    opt.step()
    assert states and all(t._version[0] > v for t, v in zip(states, versions))


def test_step_inside_a_traced_forward_is_refused_with_a_reason():
    from fusionnet.runtime import FusionFallbackWarning, fuse

    class StepsInForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.opt = optim.SGD(self.lin.parameters(), lr=0.1)

        def forward(self, x):
            self.opt.step()
            return self.lin(x)

    block = StepsInForward()
    with pytest.warns(FusionFallbackWarning, match="optimizer.step"):
        fuse(block)(torch.randn(2, 3))
