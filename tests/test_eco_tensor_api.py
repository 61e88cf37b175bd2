"""The tensor API training code uses (d2l's linear/softmax regression, MLP, weight decay,
dropout chapters): NumPy keyword aliases, normal, type, norm, square, sin, cos, bmm,
repeat, meshgrid, lazy-parameter initialisers, and ``fusionnet.utils.data``.
Differential against PyTorch where it is installed, NumPy otherwise."""
from __future__ import annotations

import numpy as np
import pytest

import fusionnet as fn
from fusionnet import nn
from fusionnet.utils import data

torch = pytest.importorskip("torch")


def _pair(*shape, seed=0):
    a = np.random.default_rng(seed).standard_normal(shape)
    return (fn.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True))


def _close(ours, theirs, tol=1e-10):
    np.testing.assert_allclose(np.asarray(ours.detach().numpy(), dtype=np.float64),
                               theirs.detach().numpy().astype(np.float64), rtol=tol, atol=tol)


@pytest.mark.parametrize("call", [
    lambda m, x: x.argmax(axis=1),
    lambda m, x: x.sum(axis=0, keepdims=True),
    lambda m, x: m.sum(x, axis=1, keepdims=True),
    lambda m, x: m.mean(x, axis=1),
    lambda m, x: x.max(axis=1).values,
    lambda m, x: m.min(x, axis=0, keepdims=True).indices,
    lambda m, x: m.cat([x, x], axis=1),
    lambda m, x: m.stack([x, x], axis=1),
])
def test_numpy_keyword_aliases_match_torch(call):
    x, tx = _pair(3, 4)
    _close(call(fn, x), call(torch, tx))


@pytest.mark.parametrize("call", [
    lambda m, x: m.square(x), lambda m, x: x.square(),
    lambda m, x: m.sin(x), lambda m, x: x.cos(),
    lambda m, x: m.norm(x), lambda m, x: x.norm(p=1, dim=1),
    lambda m, x: x.norm(2, dim=0, keepdim=True), lambda m, x: x.norm(p=3),
    lambda m, x: x.norm(p=float("inf"), dim=1), lambda m, x: x.norm(p=0),
    lambda m, x: x.repeat(2, 3), lambda m, x: x.repeat(2, 1, 2),
    lambda m, x: m.bmm(x.reshape(1, 3, 4), x.t().reshape(1, 4, 3)),
])
def test_math_matches_torch_forward_and_gradient(call):
    x, tx = _pair(3, 4, seed=1)
    out, tout = call(fn, x), call(torch, tx)
    _close(out, tout)
    g = np.random.default_rng(2).standard_normal(tuple(tout.shape))
    if out.requires_grad:  # norm(p=0) counts: not differentiable here (zeros in PyTorch)
        out.backward(fn.tensor(g))
        tout.backward(torch.tensor(g))
        _close(x.grad, tx.grad)


def test_type_converts_and_names():
    x = fn.ones(2)
    assert x.type() == "fusionnet.FloatTensor"
    assert x.type(fn.float64).dtype == fn.float64
    assert x.type("torch.LongTensor").dtype == fn.int64
    assert fn.tensor([1, 2]).type(fn.float32).dtype == fn.float32


@pytest.mark.parametrize("indexing", ["ij", "xy"])
def test_meshgrid_matches_torch(indexing):
    a, b, c = fn.arange(3), fn.arange(2) * 10, fn.arange(4) * 100
    ta, tb, tc = torch.arange(3), torch.arange(2) * 10, torch.arange(4) * 100
    for ours, theirs in zip(fn.meshgrid(a, b, c, indexing=indexing),
                            torch.meshgrid(ta, tb, tc, indexing=indexing)):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_normal_forms():
    fn.manual_seed(0)
    a = fn.normal(0, 1, (1000, 10))
    assert a.shape == (1000, 10) and abs(a.mean().item()) < 0.05
    assert abs((a * a).mean().item() - 1) < 0.05
    b = fn.normal(3.0, 0.01, size=(4,))
    assert np.all(np.abs(b.numpy() - 3) < 0.1)
    m = fn.tensor([0.0, 100.0])
    c = fn.normal(m, 0.001)
    assert c.shape == (2,) and abs(c[1].item() - 100) < 0.1
    d = fn.normal(m, fn.tensor([1e-4, 1e-4]))
    assert abs(d[0].item()) < 0.01
    fn.manual_seed(0)
    np.testing.assert_array_equal(fn.normal(0, 1, (1000, 10)).numpy(), a.numpy())


def test_lazy_parameter_data_initialisers_are_no_ops_before_the_first_call():
    # d2l's LinearRegression: self.net = nn.LazyLinear(1); then initialises through .data.
    net = nn.LazyLinear(1)
    net.weight.data.normal_(0, 0.01)
    net.bias.data.fill_(0)
    assert net.weight.data.shape == (0,)
    y = net(fn.ones(2, 3))
    assert y.shape == (2, 1) and net.weight.shape == (1, 3)


def test_tensor_dataset_and_loader_batches():
    X, y = fn.arange(20.0).reshape(10, 2), fn.arange(10)
    ds = data.TensorDataset(X, y)
    assert len(ds) == 10 and ds[3][1].item() == 3
    loader = data.DataLoader(ds, batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [b[0].shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(fn.cat([b[1] for b in batches]).numpy(), np.arange(10))
    assert len(data.DataLoader(ds, batch_size=4, drop_last=True)) == 2
    assert [b[0].shape[0] for b in data.DataLoader(ds, batch_size=4, drop_last=True)] == [4, 4]


def test_shuffle_is_a_permutation_and_reproducible_under_manual_seed():
    ds = data.TensorDataset(fn.arange(50))
    loader = data.DataLoader(ds, batch_size=7, shuffle=True)
    fn.manual_seed(3)
    epoch1 = fn.cat([b[0] for b in loader]).tolist()
    epoch2 = fn.cat([b[0] for b in loader]).tolist()
    assert sorted(epoch1) == list(range(50)) and epoch1 != epoch2 and epoch1 != sorted(epoch1)
    fn.manual_seed(3)
    assert fn.cat([b[0] for b in loader]).tolist() == epoch1
    g = fn.Generator().manual_seed(5)
    seeded = data.DataLoader(ds, batch_size=7, shuffle=True, generator=g)
    first = fn.cat([b[0] for b in seeded]).tolist()
    g.manual_seed(5)
    assert fn.cat([b[0] for b in seeded]).tolist() == first


class _Pairs(data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"x": fn.full((2,), float(i)), "y": i, "name": f"s{i}"}, (float(i), np.ones(3))


def test_default_collate_of_dicts_tuples_numbers_and_arrays_matches_torch():
    from torch.utils.data import default_collate as torch_collate
    batch = [_Pairs(5)[i] for i in range(3)]
    ours = data.default_collate(batch)
    theirs = torch_collate([({"x": torch.full((2,), float(i)), "y": i, "name": f"s{i}"},
                             (float(i), np.ones(3))) for i in range(3)])
    assert type(ours) is type(theirs) is list
    np.testing.assert_array_equal(ours[0]["x"].numpy(), theirs[0]["x"].numpy())
    assert ours[0]["y"].tolist() == theirs[0]["y"].tolist()
    assert ours[0]["y"].dtype == fn.int64 and ours[0]["name"] == theirs[0]["name"]
    assert ours[1][0].tolist() == theirs[1][0].tolist()
    assert str(ours[1][0].dtype).split(".")[-1] == str(theirs[1][0].dtype).split(".")[-1]
    assert tuple(ours[1][1].shape) == tuple(theirs[1][1].shape)
    loader = data.DataLoader(_Pairs(5), batch_size=2, shuffle=False)
    assert [b[0]["y"].tolist() for b in loader] == [[0, 1], [2, 3], [4]]


def test_random_split_lengths_and_fractions():
    ds = data.TensorDataset(fn.arange(10))
    a, b = data.random_split(ds, [7, 3], generator=fn.Generator().manual_seed(0))
    got = sorted([a[i][0].item() for i in range(7)] + [b[i][0].item() for i in range(3)])
    assert got == list(range(10))
    parts = data.random_split(ds, [0.5, 0.3, 0.2])
    assert [len(p) for p in parts] == [5, 3, 2]
    with pytest.raises(ValueError):
        data.random_split(ds, [3, 3])


def test_num_workers_warns_and_loads_in_process():
    ds = data.TensorDataset(fn.arange(4))
    data._warned_workers[0] = False
    with pytest.warns(UserWarning, match="num_workers=2"):
        loader = data.DataLoader(ds, batch_size=2, num_workers=2)
    assert [b[0].tolist() for b in loader] == [[0, 1], [2, 3]]


def test_reachable_as_torch_utils_data():
    assert fn.utils.data.DataLoader is data.DataLoader
