"""Convolution, pooling, normalisation, embedding and parameter containers against
PyTorch: forward and gradients at several shapes, strides, paddings, dilations and groups;
batch norm's running statistics over several steps in train() and eval(); state_dict keys
as PyTorch names them; fused conv + bias + ReLU compiled without fallback."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import fusionnet as fn
from fusionnet import nn
from fusionnet.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

_rng = np.random.default_rng(5)


def _both(a, grad=True):
    return fn.tensor(a, requires_grad=grad), torch.tensor(a, requires_grad=grad)


def _close(ours, theirs, tol=1e-9):
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=tol,
                               atol=tol)


def _check(ours_fn, theirs_fn, arrays, tol=1e-9):
    """Forward and the gradient of every input against PyTorch (float64)."""
    pairs = [_both(a) for a in arrays]
    out, tout = ours_fn(*[p[0] for p in pairs]), theirs_fn(*[p[1] for p in pairs])
    _close(out, tout, tol)
    g = _rng.standard_normal(tuple(tout.shape))
    out.backward(fn.tensor(g))
    tout.backward(torch.tensor(g))
    for ours, theirs in pairs:
        _close(ours.grad, theirs.grad, tol)


CONV_CASES = [  # input shape, weight shape, attributes
    ((2, 3, 8, 8), (4, 3, 3, 3), {}),
    ((1, 2, 7, 9), (5, 2, 3, 2), {"stride": 2, "padding": 1}),
    ((2, 4, 9, 7), (6, 2, 3, 3), {"groups": 2, "dilation": 2, "padding": (2, 1)}),
    ((3, 6, 6, 6), (6, 1, 3, 3), {"groups": 6, "padding": "same"}),
    ((2, 1, 5, 5), (2, 1, 5, 5), {"padding": "valid"}),
    ((2, 3, 4, 5), (2, 3, 1, 1), {"stride": (2, 3)}),
]


@pytest.mark.parametrize("xs, ws, attrs", CONV_CASES)
def test_conv2d_matches_torch_forward_and_gradients(xs, ws, attrs):
    x, w, b = _rng.standard_normal(xs), _rng.standard_normal(ws), _rng.standard_normal(ws[0])
    _check(lambda x, w, b: F.conv2d(x, w, b, **attrs), lambda x, w, b: TF.conv2d(x, w, b, **attrs),
           [x, w, b])


def test_conv2d_takes_an_unbatched_input():
    x, w = _rng.standard_normal((3, 6, 6)), _rng.standard_normal((2, 3, 3, 3))
    _check(lambda x, w: F.conv2d(x, w, padding=1), lambda x, w: TF.conv2d(x, w, padding=1),
           [x, w])


POOL_CASES = [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": 3, "stride": 2, "ceil_mode": True},
    {"kernel_size": (2, 3), "stride": 1, "dilation": (2, 1)},
    {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True},
]


@pytest.mark.parametrize("attrs", POOL_CASES)
def test_max_pool2d_matches_torch(attrs):
    x = _rng.standard_normal((2, 3, 7, 6))
    _check(lambda x: F.max_pool2d(x, **attrs), lambda x: TF.max_pool2d(x, **attrs), [x])


def test_max_pool2d_gives_a_tied_window_gradient_to_one_element_as_torch():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = 1.0
    _check(lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), [x])


@pytest.mark.parametrize("attrs", [
    {"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": 3, "stride": 1, "padding": 1, "count_include_pad": False},
    {"kernel_size": (2, 3), "divisor_override": 4},
])
def test_avg_pool2d_matches_torch(attrs):
    x = _rng.standard_normal((2, 3, 7, 6))
    _check(lambda x: F.avg_pool2d(x, **attrs), lambda x: TF.avg_pool2d(x, **attrs), [x])


@pytest.mark.parametrize("size", [1, (7, 3), (3, 4), (5, 5), (None, 2)])
def test_adaptive_avg_pool2d_matches_torch(size):
    x = _rng.standard_normal((2, 3, 7, 6))
    _check(lambda x: F.adaptive_avg_pool2d(x, size), lambda x: TF.adaptive_avg_pool2d(x, size),
           [x])


def _copy_params(ours, theirs):
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            dict(ours.named_parameters())[name].data = fn.tensor(p.detach().numpy().copy())


@pytest.mark.parametrize("cls, shape", [("BatchNorm2d", (4, 3, 5, 5)), ("BatchNorm1d", (8, 3)),
                                        ("BatchNorm1d", (4, 3, 6))])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_training_eval_and_running_stats_match_torch(cls, shape, momentum):
    ours = getattr(nn, cls)(3, momentum=momentum).double()
    theirs = getattr(torch.nn, cls)(3, momentum=momentum).double()
    _copy_params(ours, theirs)
    ours.weight.data = fn.tensor(_rng.standard_normal(3))
    theirs.weight.data = torch.tensor(ours.weight.data.numpy().copy())
    assert list(ours.state_dict()) == list(theirs.state_dict()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    for step in range(4):
        x = _rng.standard_normal(shape) * (step + 1) + step
        _check(ours, theirs, [x])
        for key, value in theirs.state_dict().items():
            np.testing.assert_allclose(ours.state_dict()[key].numpy(), value.numpy(),
                                       rtol=1e-12, atol=1e-12)
    ours.eval(), theirs.eval()
    x = _rng.standard_normal(shape)
    _check(ours, theirs, [x])
    assert ours.num_batches_tracked.item() == 4


def test_lazy_batch_norm_infers_features_and_becomes_the_plain_class():
    bn = nn.LazyBatchNorm2d()
    x = fn.randn(4, 5, 3, 3)
    y = bn(x)
    assert type(bn) is nn.BatchNorm2d and bn.num_features == 5 and y.shape == x.shape
    assert tuple(bn.running_mean.shape) == (5,) and bn.num_batches_tracked.item() == 1
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]
    bn1 = nn.LazyBatchNorm1d()
    bn1(fn.randn(4, 7))
    assert type(bn1) is nn.BatchNorm1d and bn1.weight.shape == (7,)


def test_batch_norm_refuses_the_wrong_rank_and_a_single_value_per_channel():
    with pytest.raises(ValueError, match="expected 4D input"):
        nn.BatchNorm2d(3)(fn.randn(2, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(fn.randn(1, 3))


@pytest.mark.parametrize("shape, normalized", [((4, 6), 6), ((2, 3, 4, 5), (4, 5))])
def test_layer_norm_matches_torch(shape, normalized):
    ours, theirs = nn.LayerNorm(normalized).double(), torch.nn.LayerNorm(normalized).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(_rng.standard_normal(theirs.weight.shape)))
        theirs.bias.copy_(torch.tensor(_rng.standard_normal(theirs.bias.shape)))
    _copy_params(ours, theirs)
    _check(ours, theirs, [_rng.standard_normal(shape)])
    assert list(ours.state_dict()) == list(theirs.state_dict())


@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_matches_torch(padding_idx):
    ours = nn.Embedding(6, 4, padding_idx=padding_idx).double()
    theirs = torch.nn.Embedding(6, 4, padding_idx=padding_idx).double()
    theirs.weight.data = torch.tensor(ours.weight.data.numpy().copy())
    if padding_idx is not None:
        assert np.all(ours.weight.data.numpy()[padding_idx] == 0)
    idx = np.array([[0, 2, 5], [2, 2, 1]])
    out, tout = ours(fn.tensor(idx)), theirs(torch.tensor(idx))
    _close(out, tout)
    g = _rng.standard_normal(tuple(tout.shape))
    out.backward(fn.tensor(g))
    tout.backward(torch.tensor(g))
    _close(ours.weight.grad, theirs.weight.grad)


def test_conv2d_module_init_repr_state_dict_and_lazy_form():
    fn.manual_seed(0)
    conv = nn.Conv2d(3, 6, kernel_size=5, padding=2)
    t = torch.nn.Conv2d(3, 6, kernel_size=5, padding=2)
    assert repr(conv) == repr(t)
    assert list(conv.state_dict()) == list(t.state_dict()) == ["weight", "bias"]
    bound = 1 / np.sqrt(3 * 25)
    assert np.abs(conv.bias.detach().numpy()).max() <= bound
    assert np.abs(conv.weight.detach().numpy()).max() <= bound
    lazy = nn.LazyConv2d(6, kernel_size=5, padding=2)
    lazy.weight.data.normal_(0, 0.01)  # a no-op before the first call, as in PyTorch
    y = lazy(fn.randn(2, 3, 28, 28))
    assert type(lazy) is nn.Conv2d and y.shape == (2, 6, 28, 28)
    assert lazy.weight.shape == (6, 3, 5, 5) and lazy.in_channels == 3
    assert repr(nn.MaxPool2d(2)) == repr(torch.nn.MaxPool2d(2))


def test_parameter_list_and_dict_register_their_parameters():
    pl = nn.ParameterList([nn.Parameter(fn.ones(2)), fn.zeros(3)])
    pl.append(fn.ones(1))
    assert len(pl) == 3 and isinstance(pl[1], nn.Parameter)
    assert [n for n, _ in pl.named_parameters()] == ["0", "1", "2"]
    pd = nn.ParameterDict({"a": fn.ones(2)})
    pd["b"] = nn.Parameter(fn.zeros(1))
    assert list(pd.keys()) == ["a", "b"] and "a" in pd
    assert [n for n, _ in pd.named_parameters()] == ["a", "b"]
    holder = nn.Module()
    holder.ps = pl
    assert list(holder.state_dict()) == ["ps.0", "ps.1", "ps.2"]


def test_fuse_compiles_conv_bias_relu_and_pooling_without_fallback():
    fn.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 3, 3, stride=2, groups=1), nn.ReLU(), nn.Flatten(),
                        nn.LazyLinear(5))
    x = fn.randn(3, 2, 10, 10)
    ref = net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused = fn.fuse(net, fallback=False)
        out = fused(x)
        _close(out, torch.tensor(ref.detach().numpy()), 1e-5)
        x2 = fn.randn(5, 2, 10, 10)  # another batch size: the same compiled code
        _close(fused(x2), torch.tensor(net(x2).detach().numpy()), 1e-5)
    kernels = str(fn.explain(net, x)).split("-- kernels --")[1].split("--")[0]
    assert "gemm_epilogue: conv2d + add + relu" in kernels and "max_pool2d" in kernels
    # Gradients through the compiled forward equal eager's.
    out = fused(x)
    out.sum().backward()
    fused_grad = net[0].weight.grad.numpy().copy()
    net.zero_grad()
    net(x).sum().backward()
    np.testing.assert_allclose(fused_grad, net[0].weight.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_fused_conv_in_float64_with_groups_and_dilation_matches_eager():
    net = nn.Sequential(nn.Conv2d(4, 6, 3, dilation=2, groups=2, padding=2), nn.Tanh(),
                        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)).double()
    x = fn.randn(2, 4, 9, 8, dtype=fn.float64)
    fused = fn.fuse(net, fallback=False)
    _close(fused(x), torch.tensor(net(x).detach().numpy()), 1e-12)


def test_fused_batch_norm_in_train_mode_runs_eagerly_and_updates_the_stats_once_per_call():
    fn.manual_seed(0)
    plain, inner = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    fused = fn.fuse(inner)
    x = fn.randn(4, 3, 5, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            _close(fused(x), torch.tensor(plain(x).detach().numpy()), 1e-6)
    assert any("in-place update of a module parameter/buffer" in str(w.message) for w in caught)
    assert inner.num_batches_tracked.item() == plain.num_batches_tracked.item() == 3
    _close(inner.running_var, torch.tensor(plain.running_var.numpy()), 1e-7)
    inner.eval(), plain.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # eval mode compiles
        _close(fused(x), torch.tensor(plain(x).detach().numpy()), 1e-5)


@pytest.mark.parametrize("make", [
    lambda m: m.BatchNorm2d(3), lambda m: m.BatchNorm2d(3, bias=False),
    lambda m: m.BatchNorm1d(4, affine=False, momentum=None), lambda m: m.LayerNorm((2, 5)),
    lambda m: m.LayerNorm(5, bias=False), lambda m: m.Conv2d(1, 2, 3, padding="same"),
    lambda m: m.Conv2d(4, 8, (3, 1), stride=2, dilation=(1, 2), groups=4, bias=False),
    lambda m: m.Embedding(5, 3, padding_idx=1), lambda m: m.MaxPool2d(3, 2, 1),
    lambda m: m.AvgPool2d(2), lambda m: m.AdaptiveAvgPool2d((1, 1)),
])
def test_layer_repr_and_state_dict_keys_match_torch(make):
    ours, theirs = make(nn), make(torch.nn)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [tuple(v.shape) for v in ours.state_dict().values()] == \
        [tuple(v.shape) for v in theirs.state_dict().values()]
