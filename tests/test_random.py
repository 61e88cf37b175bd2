"""The counter-based random stream: reproducible, position-determined, well distributed."""
from __future__ import annotations

import numpy as np
import pytest

import fusionnet as torch
from fusionnet.random import Generator, uniform_bits


def test_manual_seed_reproduces_every_kind_of_draw():
    def draws():
        torch.manual_seed(123)
        return [torch.rand(5).numpy(), torch.randn(2, 3).numpy(),
                torch.randint(0, 10, (7,)).numpy(), torch.rand(3, dtype=torch.float64).numpy()]

    for a, b in zip(draws(), draws(), strict=True):
        np.testing.assert_array_equal(a, b)
    torch.manual_seed(124)
    assert not np.array_equal(torch.rand(5).numpy(), draws()[0])


def test_values_depend_only_on_position_in_the_stream():
    torch.manual_seed(7)
    whole = torch.rand(20).numpy()
    torch.manual_seed(7)
    parts = np.concatenate([torch.rand(3).numpy(), torch.rand(5, 2).numpy().ravel(),
                            torch.rand(7).numpy()])
    np.testing.assert_array_equal(whole, parts)
    gen = Generator().manual_seed(7)
    start = gen.reserve(20)  # compiled code reserves a range and computes the same words
    bits = uniform_bits(np, gen.key, start, 20)
    np.testing.assert_array_equal(whole, (bits >> np.uint64(40)).astype(np.float32) * 2.0 ** -24)


def test_uniform_is_in_range_and_uniform():
    gen = Generator().manual_seed(0)
    u32 = gen.random((200_000,), np.float32)
    u64 = gen.random((200_000,), np.float64)
    for u in (u32, u64):
        assert u.min() >= 0.0 and u.max() < 1.0
        counts, _ = np.histogram(u, bins=50, range=(0, 1))
        expected = len(u) / 50
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 100, chi2  # 49 degrees of freedom: p < 1e-5 above ~100
    assert len(np.unique(u32[:1000])) > 990


def test_normal_and_integers_have_the_right_moments_and_bounds():
    gen = Generator().manual_seed(1)
    z = gen.standard_normal((400_000,))
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs((z ** 3).mean()) < 0.03 and abs((z ** 4).mean() - 3) < 0.05
    k = gen.integers(-3, 4, (70_000,))
    assert k.min() == -3 and k.max() == 3 and k.dtype == np.int64
    counts = np.bincount(k + 3)
    assert np.all(np.abs(counts - 10_000) < 500)


def test_generators_are_independent_and_their_state_replays():
    a, b = Generator().manual_seed(5), Generator().manual_seed(5)
    x = torch.rand(4, generator=a).numpy()
    torch.manual_seed(0)
    torch.rand(100)  # the default stream moving does not touch a or b
    np.testing.assert_array_equal(x, torch.rand(4, generator=b).numpy())
    state = a.get_state()
    first = torch.randn(3, generator=a).numpy()
    a.set_state(state)
    np.testing.assert_array_equal(first, torch.randn(3, generator=a).numpy())


@pytest.mark.parametrize("factory", [torch.rand, torch.randn])
def test_float32_draws_keep_their_dtype(factory):
    torch.manual_seed(3)
    assert factory(4).dtype == torch.float32
    assert factory(4, dtype=torch.float64).dtype == torch.float64
