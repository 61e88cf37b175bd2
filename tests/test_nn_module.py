"""nn.Module: registration, traversal, state_dict round trips, repr, modes and devices."""
from collections import OrderedDict

import numpy as np
import pytest

import fusionnet as torch
from fusionnet import nn


class Two(nn.Module):
    """A small module with a parameter, a buffer, a non-persistent buffer and a child."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 2))
        self.register_buffer("running", torch.zeros(2))
        self.register_buffer("scratch", torch.ones(1), persistent=False)
        self.lin = nn.Linear(2, 4)
        self.plain = torch.rand(2)  # a plain tensor attribute: not registered

    def forward(self, x):
        return self.lin(x @ self.w + self.running)


def test_attribute_assignment_registers():
    m = Two()
    assert list(m._parameters) == ["w"]
    assert list(m._buffers) == ["running", "scratch"]
    assert list(m._modules) == ["lin"]
    assert "plain" not in m._parameters and "plain" not in m._buffers
    assert m.w is m._parameters["w"] and m.lin is m._modules["lin"]
    assert [n for n, _ in m.named_parameters()] == ["w", "lin.weight", "lin.bias"]
    assert [n for n, _ in m.named_buffers()] == ["running", "scratch"]
    assert [n for n, _ in m.named_modules()] == ["", "lin"]
    assert list(m.children()) == [m.lin]


def test_reassign_and_delete():
    m = Two()
    with pytest.raises(TypeError, match="parameter 'w'"):
        m.w = torch.zeros(3, 2)  # a plain tensor where a Parameter lives
    m.w = None
    assert m._parameters["w"] is None and m.w is None
    assert [n for n, _ in m.named_parameters()] == ["lin.weight", "lin.bias"]
    m.lin = nn.ReLU()
    assert isinstance(m.lin, nn.ReLU)
    del m.lin
    assert "lin" not in m._modules
    with pytest.raises(AttributeError, match="no attribute 'lin'"):
        m.lin  # noqa: B018
    m.running = torch.ones(2)  # buffers accept plain tensors
    assert m._buffers["running"].sum().item() == 2


def test_assign_before_init_fails():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(torch.zeros(1))
            super().__init__()

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Bad()


def test_forward_missing_and_call():
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(torch.zeros(1))
    m = Two()
    x = torch.rand(5, 3)
    expect = x.numpy() @ m.w.detach().numpy() @ m.lin.weight.detach().numpy().T \
        + m.lin.bias.detach().numpy()
    np.testing.assert_allclose(m(x).detach().numpy(), expect, rtol=1e-5, atol=1e-6)


def test_hooks():
    m = nn.ReLU()
    seen = []
    h = m.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    m(torch.zeros(2, 3))
    h.remove()
    m(torch.zeros(4))
    assert seen == [torch.Size([2, 3])]


def test_tied_parameters_listed_once():
    shared = nn.Linear(4, 4)
    net = nn.Sequential(nn.Linear(3, 4), shared, nn.ReLU(), shared)
    names = [n for n, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert len(list(net.parameters())) == 4
    assert [n for n, _ in net.named_modules()] == ["", "0", "1", "2"]
    # state_dict lists a tied parameter under each of its names, as PyTorch does
    assert list(net.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias",
                                      "3.weight", "3.bias"]


def test_state_dict_shares_storage_and_skips_non_persistent():
    m = Two()
    sd = m.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == ["w", "running", "lin.weight", "lin.bias"]
    assert not sd["w"].requires_grad and type(sd["w"]) is torch.Tensor
    sd["w"][0, 0] = 123.0  # shares storage with the parameter
    assert m.w[0, 0].item() == 123.0
    assert repr(sd).startswith("OrderedDict([('w', tensor(")


def test_load_state_dict_round_trip_in_place():
    a, b = Two(), Two()
    w_obj = b.w
    result = b.load_state_dict(a.state_dict())
    assert result == ([], [])
    assert b.w is w_obj  # same Parameter object, new values
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb
        np.testing.assert_array_equal(ta.numpy(), tb.numpy())
    a.w.data[0, 0] = -7.0  # b holds copies, not aliases
    assert b.w[0, 0].item() != -7.0


def test_load_state_dict_errors_name_keys():
    m = Two()
    sd = m.state_dict()
    del sd["lin.bias"]
    sd["extra.thing"] = torch.zeros(1)
    sd["w"] = torch.zeros(2, 2)
    with pytest.raises(RuntimeError) as err:
        m.load_state_dict(sd)
    msg = str(err.value)
    assert "Two" in msg
    assert 'Missing key(s) in state_dict: "lin.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "extra.thing"' in msg
    assert "size mismatch for w" in msg and "[2, 2]" in msg and "[3, 2]" in msg
    # shape mismatches are errors even when not strict; missing/unexpected are reported
    with pytest.raises(RuntimeError, match="size mismatch for w"):
        m.load_state_dict(sd, strict=False)
    sd["w"] = torch.zeros(3, 2)
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert missing == ["lin.bias"] and unexpected == ["extra.thing"]
    assert m.w.abs().sum().item() == 0


def test_load_state_dict_materialises_lazy():
    src = nn.Sequential(nn.Linear(3, 5))
    dst = nn.Sequential(nn.LazyLinear(5))
    dst.load_state_dict(src.state_dict())
    np.testing.assert_array_equal(dst[0].weight.detach().numpy(),
                                  src[0].weight.detach().numpy())
    x = torch.rand(2, 3)
    np.testing.assert_allclose(dst(x).detach().numpy(), src(x).detach().numpy(), rtol=1e-6)


def test_repr_exact_sequential():
    net = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10))
    assert repr(net) == ("Sequential(\n"
                         "  (0): Linear(in_features=20, out_features=256, bias=True)\n"
                         "  (1): ReLU()\n"
                         "  (2): Linear(in_features=256, out_features=10, bias=True)\n"
                         ")")


def test_repr_exact_nested_named_blocks():
    def block1():
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU())

    inner = nn.Sequential()
    for i in range(2):
        inner.add_module(f"block {i}", block1())
    rgnet = nn.Sequential(inner, nn.Linear(8, 1, bias=False))
    assert repr(rgnet) == (
        "Sequential(\n"
        "  (0): Sequential(\n"
        "    (block 0): Sequential(\n"
        "      (0): Linear(in_features=4, out_features=8, bias=True)\n"
        "      (1): ReLU()\n"
        "    )\n"
        "    (block 1): Sequential(\n"
        "      (0): Linear(in_features=4, out_features=8, bias=True)\n"
        "      (1): ReLU()\n"
        "    )\n"
        "  )\n"
        "  (1): Linear(in_features=8, out_features=1, bias=False)\n"
        ")")
    assert rgnet[0][1][0] is inner._modules["block 1"][0]


def test_repr_custom_extra_repr_and_empty():
    class Scale(nn.Module):
        def extra_repr(self):
            return "factor=2"

    assert repr(Scale()) == "Scale(factor=2)"
    assert repr(nn.Sequential()) == "Sequential()"
    assert repr(nn.Dropout(0.1)) == "Dropout(p=0.1, inplace=False)"
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    assert repr(nn.GELU()) == "GELU(approximate='none')"
    assert repr(nn.Softmax(dim=1)) == "Softmax(dim=1)"


def test_apply_visits_children_first():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
    order = []
    net.apply(lambda m: order.append(type(m).__name__))
    assert order == ["Linear", "ReLU", "Sequential", "Sequential"]


def test_train_eval():
    net = nn.Sequential(nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.5)))
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_and_requires_grad():
    net = nn.Linear(3, 2)
    net(torch.rand(4, 3)).sum().backward()
    assert net.weight.grad is not None
    net.zero_grad(set_to_none=False)
    assert net.weight.grad.abs().sum().item() == 0
    net.zero_grad()
    assert net.weight.grad is None and net.bias.grad is None
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())


def test_to_dtype_in_place_keeps_objects():
    m = Two()
    m(torch.rand(2, 3)).sum().backward()
    w, before = m.w, m.w.detach().numpy().copy()
    assert m.double() is m
    assert m.w is w and m.w.dtype == torch.float64 and m.w.grad.dtype == torch.float64
    assert m.running.dtype == torch.float64
    np.testing.assert_array_equal(m.w.detach().numpy(), before.astype(np.float64))
    assert m.lin(torch.rand(1, 2, dtype=torch.float64)).dtype == torch.float64
    m.to(torch.float32)
    assert m.w.dtype == torch.float32 and m.w.requires_grad
    assert m.cpu() is m and m.w.device.type == "cpu"
    with pytest.raises(TypeError, match="floating point"):
        m.to(torch.int64)


def test_lazy_to_dtype_before_materialisation():
    lazy = nn.LazyLinear(3).double()
    out = lazy(torch.rand(2, 4, dtype=torch.float64))
    assert lazy.weight.dtype == torch.float64 and out.dtype == torch.float64


def test_get_submodule_and_parameter():
    net = nn.Sequential(nn.Sequential(nn.Linear(2, 3)))
    assert net.get_submodule("0.0") is net[0][0]
    assert net.get_parameter("0.0.bias") is net[0][0].bias
    with pytest.raises(AttributeError):
        net.get_submodule("0.5")


@pytest.mark.gpu
def test_cuda_round_trip_and_training_step():
    from fusionnet import optim
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))
    w = net[0].weight
    cpu_copy = {k: v.clone() for k, v in net.state_dict().items()}
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    assert net.cuda() is net and net[0].weight is w and w.is_cuda
    x, y = torch.rand(5, 4).cuda(), torch.tensor([0, 1, 2, 0, 1]).cuda()
    nn.CrossEntropyLoss()(net(x), y).backward()
    assert w.grad.is_cuda
    opt.step()
    net.cpu()
    assert not w.is_cuda and not w.grad.is_cuda
    assert not np.allclose(w.detach().numpy(), cpu_copy["0.weight"].numpy())
    lazy = nn.LazyLinear(2).cuda()
    assert lazy(torch.rand(3, 5).cuda()).is_cuda and lazy.weight.is_cuda


def test_state_dict_of_an_unmaterialised_lazy_module_lists_uninitialised_parameters():
    from fusionnet import nn as _nn

    net = _nn.Sequential(_nn.LazyLinear(4), _nn.ReLU(), _nn.LazyLinear(2))
    sd = net.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(isinstance(v, _nn.UninitializedParameter) for v in sd.values())
