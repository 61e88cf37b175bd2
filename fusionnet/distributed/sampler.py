"""``DistributedSampler``: each rank's share of a dataset's indices, reshuffled per epoch.

The contract of ``torch.utils.data.distributed.DistributedSampler``: an iterable of
indices with ``__len__`` and ``set_epoch``, for ``DataLoader(..., sampler=...)``. Every
rank draws the same permutation (seeded by ``seed + epoch``) and takes every
``num_replicas``-th index starting at its rank, so the shards are disjoint and together
cover the dataset; the permutation comes from NumPy's generator, so the order differs
from PyTorch's while the sharding rules (padding, ``drop_last``) are the same.
"""
from __future__ import annotations

import math
from typing import Iterator, Sized

import numpy as np

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """Indices ``rank, rank + R, rank + 2R, ...`` of a (shuffled) ``range(len(dataset))``.

    ``num_replicas`` and ``rank`` default to the process group's world size and rank
    (which starts MPI); pass both to use the sampler without MPI. Without
    ``drop_last`` the index list is padded by repeating its start so that every rank
    gets ``ceil(N / R)`` indices; with it the tail is dropped so that every rank gets
    ``floor(N / R)``. Call :meth:`set_epoch` at the start of each epoch, or every
    epoch repeats the same order.

    >>> s = DistributedSampler(range(10), num_replicas=4, rank=1, shuffle=False)
    >>> list(s), len(s)
    ([1, 5, 9], 3)
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None,
                 rank: int | None = None, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:
        if num_replicas is None or rank is None:
            from . import comm  # noqa: PLC0415 - only the defaults need MPI

            num_replicas = comm.get_world_size() if num_replicas is None else num_replicas
            rank = comm.get_rank() if rank is None else rank
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be at least 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        n = len(dataset)
        if drop_last and n % num_replicas:
            # Drop the tail so every rank gets the same number of real samples.
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            # Same seed on every rank, so the ranks agree on the permutation.
            indices = np.random.default_rng(self.seed + self.epoch).permutation(n).tolist()
        else:
            indices = list(range(n))
        if not self.drop_last:
            padding = self.total_size - len(indices)
            if padding > 0:
                repeats = math.ceil(padding / len(indices)) if indices else 0
                indices += (indices * repeats)[:padding]
        else:
            indices = indices[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` on the next iteration (same on every rank)."""
        self.epoch = epoch
