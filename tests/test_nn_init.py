"""nn.init: in-place fills with PyTorch's bounds and standard deviations."""
import math

import numpy as np
import pytest

import fusionnet as torch
from fusionnet import nn
from fusionnet.nn import init


def _np(t):
    return t.detach().numpy()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def test_calculate_gain():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    with pytest.raises(ValueError):
        init.calculate_gain("swish")


def test_fills_in_place_on_a_parameter_and_return_it():
    p = nn.Parameter(torch.empty(3, 4))
    data = p._data
    for fn, args in [(init.normal_, (0, 1)), (init.uniform_, (-1, 1)), (init.zeros_, ()),
                     (init.ones_, ()), (init.constant_, (42,)), (init.xavier_uniform_, ()),
                     (init.kaiming_normal_, ())]:
        assert fn(p, *args) is p
        assert p._data is data and p.requires_grad and p.grad_fn is None
    init.constant_(p, 42)
    assert (_np(p) == 42).all()
    init.zeros_(p)
    assert (_np(p) == 0).all()
    init.ones_(p)
    assert (_np(p) == 1).all()


def test_uniform_and_normal_statistics():
    t = torch.empty(500, 400)
    v = _np(init.uniform_(t, -10, 10))
    assert v.min() >= -10 and v.max() <= 10 and abs(v.mean()) < 0.1
    v = _np(init.normal_(t, mean=3, std=0.01))
    assert abs(v.mean() - 3) < 1e-3 and abs(v.std() - 0.01) < 2e-4


def test_xavier_bounds_and_std():
    t = torch.empty(300, 500)
    bound = math.sqrt(6 / (300 + 500))
    v = _np(init.xavier_uniform_(t))
    assert np.abs(v).max() <= bound and np.abs(v).max() > 0.99 * bound
    v = _np(init.xavier_uniform_(t, gain=2.0))
    assert np.abs(v).max() <= 2 * bound
    v = _np(init.xavier_normal_(t))
    assert abs(v.std() - math.sqrt(2 / 800)) < 0.01 * math.sqrt(2 / 800)


@pytest.mark.parametrize("mode, fan", [("fan_in", 500), ("fan_out", 300)])
def test_kaiming_std(mode, fan):
    t = torch.empty(300, 500)
    v = _np(init.kaiming_normal_(t, mode=mode, nonlinearity="relu"))
    expect = math.sqrt(2 / fan)
    assert abs(v.std() - expect) < 0.01 * expect and abs(v.mean()) < 0.01 * expect
    v = _np(init.kaiming_uniform_(t, a=math.sqrt(5), mode=mode))
    bound = math.sqrt(3) * math.sqrt(2 / (1 + 5)) / math.sqrt(fan)
    assert np.abs(v).max() <= bound and abs(v.std() - bound / math.sqrt(3)) < 0.01 * bound


def test_fans_use_receptive_field_and_reject_1d():
    t = torch.empty(16, 8, 3, 3)
    v = _np(init.xavier_uniform_(t))
    assert np.abs(v).max() <= math.sqrt(6 / (8 * 9 + 16 * 9))
    with pytest.raises(ValueError, match="fewer than 2"):
        init.xavier_uniform_(torch.empty(5))
    with pytest.raises(ValueError, match="Mode"):
        init.kaiming_uniform_(torch.empty(2, 2), mode="fan_avg")


def test_trunc_normal_and_eye():
    v = _np(init.trunc_normal_(torch.empty(200, 200), std=1.0, a=-0.5, b=0.5))
    assert v.min() >= -0.5 and v.max() <= 0.5 and v.std() > 0.2
    np.testing.assert_array_equal(_np(init.eye_(torch.empty(3, 4))), np.eye(3, 4))


def test_data_tricks_from_the_chapter():
    lin = nn.Linear(40, 30)
    init.uniform_(lin.weight, -10, 10)
    lin.weight.data *= lin.weight.data.abs() >= 5
    w = _np(lin.weight)
    assert ((np.abs(w) >= 5) | (w == 0)).all() and (w == 0).any()
    before = w.copy()
    lin.weight.data[:] += 1
    lin.weight.data[0, 0] = 42
    after = _np(lin.weight)
    assert after[0, 0] == 42
    np.testing.assert_allclose(after.ravel()[1:], before.ravel()[1:] + 1)
