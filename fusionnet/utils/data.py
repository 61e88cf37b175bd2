"""``torch.utils.data`` for fusionnet: datasets, samplers, ``DataLoader``, ``random_split``.

Loading runs in the calling process (``num_workers=0``); a larger ``num_workers`` is
accepted, warned about once and loads in the calling process too, so book code that asks
for workers still runs, with the same batches. Shuffling draws from fusionnet's random
stream: with ``manual_seed(s)`` (or a seeded ``generator=``) the order of every epoch is
reproducible, but it is not PyTorch's order for the same seed (the streams differ).

>>> X, y = fusionnet.randn(10, 3), fusionnet.arange(10)
>>> loader = DataLoader(TensorDataset(X, y), batch_size=4, shuffle=True)
>>> [tuple(b[0].shape) for b in loader]
[(4, 3), (4, 3), (2, 3)]
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from .. import random as _random
from ..dtypes import float64
from ..factories import as_tensor, randperm, tensor
from ..functions import stack
from ..tensor import Tensor

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset",
           "Sampler", "SequentialSampler", "RandomSampler", "BatchSampler", "DataLoader",
           "default_collate", "random_split"]


class Dataset:
    """A map-style dataset: subclasses define ``__getitem__(index)`` (and ``__len__``)."""

    def __getitem__(self, index):
        raise NotImplementedError("a Dataset subclass must define __getitem__")

    def __add__(self, other: "Dataset") -> "ConcatDataset":
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A dataset that is a stream: subclasses define ``__iter__``; a ``DataLoader`` batches
    what it yields (no shuffling, no sampler)."""

    def __iter__(self):
        raise NotImplementedError("an IterableDataset subclass must define __iter__")


class TensorDataset(Dataset):
    """Samples are the rows of tensors of equal first size: item i is
    ``tuple(t[i] for t in tensors)``."""

    def __init__(self, *tensors: Tensor):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ValueError("Size mismatch between tensors")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The items of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset, self.indices = dataset, [int(i) for i in indices]

    def __getitem__(self, index):
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[self.indices[index]]

    def __len__(self) -> int:
        return len(self.indices)


class ConcatDataset(Dataset):
    """Several datasets one after the other."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        self.cumulative_sizes = list(np.cumsum([len(d) for d in self.datasets]))

    def __len__(self) -> int:
        return int(self.cumulative_sizes[-1]) if self.cumulative_sizes else 0

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self)
        k = int(np.searchsorted(self.cumulative_sizes, index, side="right"))
        start = 0 if k == 0 else int(self.cumulative_sizes[k - 1])
        return self.datasets[k][index - start]


def _lengths(total: int, lengths) -> list[int]:
    """``random_split``'s lengths: integers, or fractions summing to 1 (remainders are
    given one each to the first parts, as PyTorch does)."""
    lengths = list(lengths)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1 and not all(
            isinstance(x, int) for x in lengths):
        counts = [int(math.floor(total * f)) for f in lengths]
        for i in range(total - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != total:
        raise ValueError("Sum of input lengths does not equal the length of the input dataset!")
    return [int(x) for x in lengths]


def random_split(dataset: Dataset, lengths, generator=None) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random :class:`Subset` s of the given lengths
    (integers, or fractions of the whole), drawing from ``generator`` (default stream)."""
    counts = _lengths(len(dataset), lengths)
    order = randperm(sum(counts), generator=generator).tolist()
    out, start = [], 0
    for n in counts:
        out.append(Subset(dataset, order[start:start + n]))
        start += n
    return out


class Sampler:
    """An iterable of dataset indices."""

    def __iter__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """A fresh random permutation each epoch. Without a ``generator`` each epoch seeds a
    private stream from one draw of the default stream (PyTorch's scheme), so
    ``manual_seed`` fixes every epoch's order."""

    def __init__(self, data_source, replacement: bool = False, num_samples=None,
                 generator=None):
        self.data_source, self.replacement = data_source, replacement
        self._num_samples, self.generator = num_samples, generator

    @property
    def num_samples(self) -> int:
        """How many indices one epoch yields."""
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        gen = self.generator
        if gen is None:
            seed = int(_random.generator(np).integers(0, 2**62, (1,))[0])
            gen = _random.Generator().manual_seed(seed)
        n = len(self.data_source)
        if self.replacement:
            return iter(gen.integers(0, n, (self.num_samples,)).tolist())
        order: list[int] = []
        while len(order) < self.num_samples:
            order += randperm(n, generator=gen).tolist()
        return iter(order[:self.num_samples])

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Lists of ``batch_size`` indices from ``sampler`` (the last one shorter unless
    ``drop_last``)."""

    def __init__(self, sampler, batch_size: int, drop_last: bool):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, but got "
                             f"batch_size={batch_size}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self):
        batch = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def default_collate(batch):
    """Merge a list of samples into a batch as PyTorch does: tensors are stacked, numbers
    and NumPy arrays become tensors, and tuples and lists (each giving a list, as in PyTorch)
    and dicts are collated field by field (strings stay a list)."""
    first = batch[0]
    if isinstance(first, Tensor):
        return stack(batch, 0)
    if isinstance(first, np.ndarray):
        return stack([as_tensor(b) for b in batch], 0)
    if isinstance(first, float):  # Python floats collate to float64, as in PyTorch
        return tensor(batch, dtype=float64)
    if isinstance(first, (bool, int, np.number, np.bool_)):
        return tensor(batch)
    if isinstance(first, (str, bytes)):
        return list(batch)
    if isinstance(first, Mapping):
        return {k: default_collate([b[k] for b in batch]) for k in first}
    if isinstance(first, tuple) and hasattr(first, "_fields"):  # a namedtuple
        return type(first)(*(default_collate(list(f)) for f in zip(*batch)))
    if isinstance(first, Sequence):
        if any(len(b) != len(first) for b in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        return [default_collate(list(f)) for f in zip(*batch)]  # a list, as PyTorch
    raise TypeError(f"default_collate: batch must contain tensors, NumPy arrays, numbers, "
                    f"dicts or lists; found {type(first)}")


_warned_workers = [False]


class DataLoader:
    """Batches of a dataset: ``DataLoader(dataset, batch_size=1, shuffle=False, ...)``.

    ``sampler``/``batch_sampler`` replace the index order; ``collate_fn`` merges samples
    (:func:`default_collate` by default); ``drop_last`` drops a short last batch;
    ``generator`` drives shuffling. A :class:`TensorDataset` with the default collate is
    batched by indexing each tensor once per batch (same values as collating rows one by
    one, far fewer Python calls). ``num_workers``, ``pin_memory``, ``prefetch_factor``,
    ``persistent_workers`` and ``timeout`` are accepted; loading always runs in this
    process.
    """

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
                 num_workers: int = 0, collate_fn=None, pin_memory: bool = False,
                 drop_last: bool = False, timeout: float = 0, worker_init_fn=None,
                 generator=None, prefetch_factor=None, persistent_workers: bool = False,
                 **_ignored):
        if num_workers and not _warned_workers[0]:
            _warned_workers[0] = True
            warnings.warn(f"fusionnet's DataLoader loads in the calling process: "
                          f"num_workers={num_workers} is treated as 0", stacklevel=2)
        self.dataset, self.num_workers, self.generator = dataset, num_workers, generator
        self.collate_fn = collate_fn
        self.pin_memory, self.timeout = pin_memory, timeout
        self._iterable = isinstance(dataset, IterableDataset)
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, "
                                 "shuffle, sampler, and drop_last")
            batch_size, drop_last = None, False
        elif sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if self._iterable and (shuffle or sampler is not None or batch_sampler is not None):
            raise ValueError("an IterableDataset takes no shuffle, sampler or batch_sampler")
        self.batch_size, self.drop_last = batch_size, drop_last
        if not self._iterable:
            if sampler is None:
                sampler = (RandomSampler(dataset, generator=generator) if shuffle
                           else SequentialSampler(dataset))
            if batch_sampler is None and batch_size is not None:
                batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.sampler, self.batch_sampler = sampler, batch_sampler

    def _collate(self, samples):
        return (self.collate_fn or default_collate)(samples)

    def _iter_stream(self):
        batch = []
        for item in self.dataset:
            if self.batch_size is None:
                yield item if self.collate_fn is None else self.collate_fn(item)
                continue
            batch.append(item)
            if len(batch) == self.batch_size:
                yield self._collate(batch)
                batch = []
        if batch and not self.drop_last:
            yield self._collate(batch)

    def __iter__(self):
        if self._iterable:
            yield from self._iter_stream()
            return
        if self.batch_sampler is None:  # batch_size=None: single samples, uncollated
            for i in self.sampler:
                item = self.dataset[i]
                yield item if self.collate_fn is None else self.collate_fn(item)
            return
        fast = isinstance(self.dataset, TensorDataset) and self.collate_fn is None
        for indices in self.batch_sampler:
            if fast:
                index = as_tensor(np.asarray(indices, dtype=np.int64))
                yield [t[index] for t in self.dataset.tensors]
            else:
                yield self._collate([self.dataset[i] for i in indices])

    def __len__(self) -> int:
        if self._iterable:
            raise TypeError("an IterableDataset's DataLoader has no len()")
        if self.batch_sampler is None:
            return len(self.sampler)
        return len(self.batch_sampler)
