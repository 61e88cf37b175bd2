"""``DistributedSampler`` without MPI (explicit ranks), against PyTorch's where the
order is defined (no shuffle) and by its contract where it is random (shuffle)."""
from __future__ import annotations

import pytest

from fusionnet.distributed import DistributedSampler


def shards(n, world, **kw):
    return [list(DistributedSampler(range(n), num_replicas=world, rank=r, **kw))
            for r in range(world)]


@pytest.mark.parametrize("n,world", [(10, 2), (10, 3), (11, 4), (3, 5), (16, 4), (1, 2)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_unshuffled_shards_match_torch(n, world, drop_last):
    torch_sampler = pytest.importorskip("torch.utils.data.distributed").DistributedSampler
    for r in range(world):
        ours = DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=False,
                                  drop_last=drop_last)
        theirs = torch_sampler(range(n), num_replicas=world, rank=r, shuffle=False,
                               drop_last=drop_last)
        assert list(ours) == list(theirs)
        assert len(ours) == len(theirs) == len(list(ours))


@pytest.mark.parametrize("n,world", [(10, 2), (11, 3), (64, 4)])
def test_shuffled_shards_are_disjoint_cover_and_equal_sized(n, world):
    parts = shards(n, world, seed=3)
    assert len({len(p) for p in parts}) == 1
    flat = [i for p in parts for i in p]
    assert set(flat) == set(range(n))  # every sample, on some rank
    assert len(flat) - len(set(flat)) == len(flat) - n  # repeats only as padding


def test_drop_last_never_repeats():
    parts = shards(11, 3, drop_last=True)
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat)) == 9


def test_set_epoch_reshuffles_the_same_way_on_every_rank():
    a = DistributedSampler(range(100), num_replicas=2, rank=0, seed=5)
    b = DistributedSampler(range(100), num_replicas=2, rank=1, seed=5)
    first = list(a)
    assert first == list(a)  # no set_epoch: the same order again
    a.set_epoch(1)
    b.set_epoch(1)
    second_a, second_b = list(a), list(b)
    assert second_a != first
    assert sorted(second_a + second_b) == list(range(100))  # ranks agree on the permutation
    a.set_epoch(0)
    assert list(a) == first  # deterministic per (seed, epoch)
    assert list(DistributedSampler(range(100), num_replicas=2, rank=0, seed=6)) != first


def test_bad_rank_is_refused():
    with pytest.raises(ValueError, match="Invalid rank 2"):
        DistributedSampler(range(4), num_replicas=2, rank=2)
