"""Layers and containers: Linear (init, forward, grads), LazyLinear, activations, Sequential."""
import math
from collections import OrderedDict

import numpy as np
import pytest

import fusionnet as torch
from fusionnet import nn


def _np(t):
    return t.detach().numpy()


def test_linear_forward_and_shapes():
    lin = nn.Linear(5, 3)
    assert lin.weight.shape == torch.Size([3, 5]) and lin.bias.shape == torch.Size([3])
    x = torch.rand(4, 5)
    np.testing.assert_allclose(_np(lin(x)), _np(x) @ _np(lin.weight).T + _np(lin.bias),
                               rtol=1e-5, atol=1e-6)
    nobias = nn.Linear(5, 3, bias=False)
    assert nobias.bias is None and [n for n, _ in nobias.named_parameters()] == ["weight"]
    x3 = torch.rand(2, 4, 5)  # leading batch dims
    np.testing.assert_allclose(_np(nobias(x3)), _np(x3) @ _np(nobias.weight).T, rtol=1e-5)


def test_linear_default_init_bounds():
    torch.manual_seed(0)
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)  # kaiming_uniform_(a=sqrt(5)) gives exactly this bound
    w, b = _np(lin.weight), _np(lin.bias)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.95 * bound  # the whole range is used
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound


def test_linear_gradients_match_numpy():
    lin = nn.Linear(3, 2).double()
    x = torch.rand(4, 3, dtype=torch.float64)
    (lin(x) ** 2).sum().backward()
    y = _np(x) @ _np(lin.weight).T + _np(lin.bias)
    np.testing.assert_allclose(_np(lin.weight.grad), 2 * y.T @ _np(x), rtol=1e-10)
    np.testing.assert_allclose(_np(lin.bias.grad), 2 * y.sum(0), rtol=1e-10)


def test_lazy_linear_infers_shape():
    lazy = nn.LazyLinear(7)
    assert repr(lazy) == "LazyLinear(in_features=0, out_features=7, bias=True)"
    assert repr(lazy.weight) == "<UninitializedParameter>"
    with pytest.raises(RuntimeError, match="UninitializedParameter"):
        lazy.weight + 1
    w = lazy.weight
    out = lazy(torch.rand(3, 11))
    assert out.shape == torch.Size([3, 7])
    assert lazy.weight is w and type(w) is nn.Parameter and w.requires_grad
    assert lazy.weight.shape == torch.Size([7, 11]) and lazy.in_features == 11
    assert type(lazy) is nn.Linear
    assert repr(lazy) == "Linear(in_features=11, out_features=7, bias=True)"
    assert np.abs(_np(lazy.weight)).max() <= 1 / math.sqrt(11)
    assert np.abs(_np(lazy.weight)).max() > 0  # initialised, not left at zero


def test_lazy_net_and_optimizer_after_first_call():
    net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1, bias=False))
    net(torch.rand(2, 4))
    assert [(n, tuple(p.shape)) for n, p in net.named_parameters()] == [
        ("0.weight", (8, 4)), ("0.bias", (8,)), ("2.weight", (1, 8))]


def test_tied_layer_gradient_is_sum_of_both_uses():
    torch.manual_seed(1)
    shared = nn.Linear(3, 3).double()
    net = nn.Sequential(shared, nn.Tanh(), shared)
    x = torch.rand(5, 3, dtype=torch.float64)
    net(x).sum().backward()
    W, b, X = _np(shared.weight), _np(shared.bias), _np(x)
    h = X @ W.T + b
    a = np.tanh(h)
    # d/dW of sum(a @ W.T + b) = second use (1^T a) + first use via tanh
    g_out = np.ones((5, 3))
    g_W2, g_b2 = g_out.T @ a, g_out.sum(0)
    g_h = (g_out @ W) * (1 - a ** 2)
    g_W1, g_b1 = g_h.T @ X, g_h.sum(0)
    np.testing.assert_allclose(_np(shared.weight.grad), g_W1 + g_W2, rtol=1e-10)
    np.testing.assert_allclose(_np(shared.bias.grad), g_b1 + g_b2, rtol=1e-10)


@pytest.mark.parametrize("module, ref", [
    (nn.ReLU(), lambda x: np.maximum(x, 0)),
    (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (nn.Tanh(), np.tanh),
    (nn.GELU(), lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    (nn.GELU("tanh"), lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi)
                                                       * (x + 0.044715 * x ** 3)))),
    (nn.Softmax(dim=1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    (nn.LogSoftmax(dim=1), lambda x: x - np.log(np.exp(x).sum(1, keepdims=True))),
    (nn.Identity(3, unused=True), lambda x: x),
])
def test_activations_match_numpy(module, ref):
    x = torch.randn(4, 6, dtype=torch.float64)
    np.testing.assert_allclose(_np(module(x)), ref(_np(x)), rtol=1e-10, atol=1e-12)


def test_relu_inplace():
    x = torch.tensor([-1.0, 2.0])
    assert nn.ReLU(inplace=True)(x) is x and x.tolist() == [0.0, 2.0]
    assert repr(nn.ReLU(inplace=True)) == "ReLU(inplace=True)"


def test_flatten():
    x = torch.rand(2, 3, 4, 5)
    assert nn.Flatten()(x).shape == torch.Size([2, 60])
    assert nn.Flatten(0, 2)(x).shape == torch.Size([24, 5])
    np.testing.assert_array_equal(_np(nn.Flatten()(x)), _np(x).reshape(2, -1))


def test_dropout_train_and_eval():
    torch.manual_seed(0)
    drop = nn.Dropout(0.3)
    x = torch.ones(200, 500)
    y = _np(drop(x))
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    drop.eval()
    assert drop(x) is x
    assert (_np(nn.Dropout(1.0)(x)) == 0).all()
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


def test_dropout_gradient_uses_same_mask():
    torch.manual_seed(3)
    x = torch.ones(50, 50, requires_grad=True)
    y = nn.Dropout(0.5)(x)
    y.sum().backward()
    np.testing.assert_array_equal(_np(x.grad), _np(y))  # d(sum)/dx = mask / (1-p) = y


def test_sequential_indexing_slicing_and_growth():
    layers = [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)]
    net = nn.Sequential(*layers)
    assert len(net) == 3 and list(net) == layers
    assert net[0] is layers[0] and net[-1] is layers[2] and net[-3] is layers[0]
    with pytest.raises(IndexError):
        net[3]  # noqa: B018
    head = net[:2]
    assert isinstance(head, nn.Sequential) and list(head) == layers[:2]
    assert list(head._modules) == ["0", "1"]
    assert list(net[::-1]) == layers[::-1]
    net.append(nn.Sigmoid())
    assert len(net) == 4 and list(net._modules) == ["0", "1", "2", "3"]
    x = torch.rand(5, 2)
    ref = 1 / (1 + np.exp(-(np.maximum(_np(x) @ _np(net[0].weight).T + _np(net[0].bias), 0)
                           @ _np(net[2].weight).T + _np(net[2].bias))))
    np.testing.assert_allclose(_np(net(x)), ref, rtol=1e-5)
    del net[1]
    assert list(net._modules) == ["0", "1", "2"] and isinstance(net[1], nn.Linear)


def test_sequential_from_ordered_dict_and_names():
    net = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert list(net._modules) == ["fc", "act"] and net.fc is net[0]
    net.add_module("my block", nn.Tanh())
    assert net[2] is net._modules["my block"]
    assert "(my block): Tanh()" in repr(net)


def test_module_list_and_dict():
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    ml.append(nn.ReLU())
    assert len(ml) == 4 and isinstance(ml[-1], nn.ReLU)
    assert len(list(ml.parameters())) == 6
    assert isinstance(ml[1:], nn.ModuleList) and len(ml[1:]) == 3
    assert repr(ml) == ("ModuleList(\n"
                        "  (0-2): 3 x Linear(in_features=2, out_features=2, bias=True)\n"
                        "  (3): ReLU()\n"
                        ")")
    md = nn.ModuleDict({"a": nn.Linear(1, 1), "b": nn.ReLU()})
    md["c"] = nn.Tanh()
    assert list(md.keys()) == ["a", "b", "c"] and "b" in md and len(md) == 3
    assert [n for n, _ in md.named_parameters()] == ["a.weight", "a.bias"]
