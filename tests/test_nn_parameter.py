"""nn.Parameter and nn.UninitializedParameter."""
import copy

import numpy as np
import pytest

import fusionnet as torch
from fusionnet import nn


def test_parameter_shares_storage_and_requires_grad():
    t = torch.randn(2, 3)
    p = nn.Parameter(t)
    assert isinstance(p, torch.Tensor) and type(p) is nn.Parameter
    assert p.requires_grad and p.is_leaf
    t[0, 0] = 5.0
    assert p[0, 0].item() == 5.0
    assert not nn.Parameter(t, requires_grad=False).requires_grad
    assert nn.Parameter().shape == torch.Size([0])
    with pytest.raises(TypeError):
        nn.Parameter([1.0, 2.0])


def test_parameter_repr_and_data():
    p = nn.Parameter(torch.tensor([[1.0, 2.0]]))
    assert repr(p) == "Parameter containing:\ntensor([[1., 2.]], requires_grad=True)"
    assert str(p) == repr(p)
    assert type(p.data) is torch.Tensor and repr(p.data) == "tensor([[1., 2.]])"
    assert type(p * 2) is torch.Tensor  # results of ops are plain tensors
    assert type(p.detach()) is torch.Tensor


def test_parameter_gradient_accumulates():
    p = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    (p * p).sum().backward()
    (p * 3).sum().backward()
    np.testing.assert_allclose(p.grad.numpy(), 2 * np.array([1.0, -2.0]) + 3)


def test_parameter_deepcopy_is_independent():
    p = nn.Parameter(torch.ones(2))
    q = copy.deepcopy(p)
    assert type(q) is nn.Parameter and q.requires_grad
    q.data[0] = 7.0
    assert p[0].item() == 1.0
    net = nn.Sequential(nn.Linear(2, 2))
    net2 = copy.deepcopy(net)
    assert net2[0].weight is not net[0].weight
    np.testing.assert_array_equal(net2[0].weight.detach().numpy(), net[0].weight.detach().numpy())


def test_uninitialized_parameter():
    u = nn.UninitializedParameter()
    assert repr(u) == "<UninitializedParameter>" and isinstance(u, nn.Parameter)
    for use in (lambda: u + 1, lambda: u.shape, lambda: u.detach(), lambda: u.sum()):
        with pytest.raises(RuntimeError, match="UninitializedParameter.*first"):
            use()
    same = u.materialize((2, 3))
    assert same is u and type(u) is nn.Parameter and u.shape == torch.Size([2, 3])
    assert u.requires_grad and u.dtype == torch.float32
