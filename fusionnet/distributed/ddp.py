"""``DistributedDataParallel``: one model replica per rank, gradients averaged in buckets.

At construction every rank checks that it holds the same model (names, shapes,
dtypes) and takes rank 0's parameters and buffers. After each backward the gradients
are averaged over the ranks, so every rank applies the same update and the replicas
stay identical: N ranks on equal shards of a batch follow one process on the whole
batch (the mean of the per-shard mean-loss gradients is the full batch's gradient).

Gradients travel in **buckets**: flat NumPy buffers of about ``bucket_cap_mb`` that
each go out as one ``MPI.Allreduce``, so a step sends a few large messages instead of
one per parameter (each message pays MPI's fixed latency; see docs/distributed.md).
Parameters fill buckets in reverse registration order, the order a backward tends to
finish them. A post-accumulate-grad hook on every parameter marks it ready; a bucket
is reduced as soon as all of its parameters are ready. Code that runs backward
without those hooks (a compiled training step) constructs the wrapper with
``auto_reduce=False`` and calls :meth:`DistributedDataParallel.reduce_gradients`
between its backward and its update.
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field

import numpy as np

from .. import dispatch
from ..nn import Module
from ..nn.parameter import is_lazy
from ..tensor import Tensor
from . import comm

__all__ = ["DistributedDataParallel"]


@dataclass
class Bucket:
    """Parameters whose gradients are reduced together as one flat buffer."""

    params: list
    names: list
    offsets: list  # (start, stop, shape) of each parameter in ``buffer``
    buffer: np.ndarray
    ready: set = field(default_factory=set)  # ids of parameters whose gradient arrived
    done: bool = False  # reduced in the current backward


def _host(array) -> np.ndarray:
    return array if type(array) is np.ndarray else array.get()


def _pack(tensors, dtype) -> tuple[np.ndarray, list]:
    """One flat buffer holding ``tensors`` back to back, and each one's slot in it."""
    offsets, start = [], 0
    for t in tensors:
        stop = start + int(np.prod(t.shape, dtype=np.int64))
        offsets.append((start, stop, tuple(t.shape)))
        start = stop
    return np.empty(start, dtype=dtype), offsets


def _write(t: Tensor, value: np.ndarray) -> None:
    """Overwrite ``t``'s values in place, keeping its storage (compiled forwards hold
    their parameters' arrays); a copy only when the storage cannot take it."""
    data = t._data
    if type(data) is np.ndarray and data.flags.writeable and data.dtype == value.dtype:
        np.copyto(data, value)
    elif type(data) is np.ndarray:
        t._set_data(value.astype(data.dtype, copy=True))
    else:  # CuPy: the values go back to the device
        data.set(np.ascontiguousarray(value, dtype=data.dtype))


def _by_dtype(named) -> dict:
    """``{(NumPy dtype, device): [(name, tensor), ...]}``: what one flat buffer can hold."""
    groups: dict = {}
    for name, t in named:
        groups.setdefault((np.dtype(t._data.dtype), str(t.device)), []).append((name, t))
    return groups


class DistributedDataParallel(Module):
    """Wrap ``module`` (eager or ``fusionnet.fuse``-d) for data-parallel training.

    ``bucket_cap_mb`` bounds a gradient bucket (25 MB, as in PyTorch);
    ``broadcast_buffers`` re-sends rank 0's buffers before every forward;
    ``auto_reduce=False`` leaves the all-reduce to :meth:`reduce_gradients`.
    ``comm_stats`` counts the all-reduce messages and bytes sent so far.

    >>> ddp = DistributedDataParallel(net)        # doctest: +SKIP
    >>> loss_fn(ddp(X_shard), y_shard).backward()  # gradients now averaged over ranks
    >>> opt.step()
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25.0,
                 broadcast_buffers: bool = True, auto_reduce: bool = True) -> None:
        super().__init__()
        self.module = module
        rank, self.world_size = comm.init()
        named = [(n, p) for n, p in module.named_parameters()]
        lazy = [n for n, p in named if is_lazy(p)]
        if lazy:
            raise ValueError(f"DistributedDataParallel needs materialised parameters; "
                             f"run one forward before wrapping (lazy: {', '.join(lazy)})")
        self._check_same_model(named + list(module.named_buffers()), rank)
        self.broadcast_buffers = broadcast_buffers
        self._sync = True
        self._in_flight = False  # some bucket of this backward is still waiting
        self._auto_done = False  # hooks reduced every bucket since the last reduce call
        self.comm_stats = {"allreduce_calls": 0, "allreduce_bytes": 0, "broadcast_calls": 0}
        self._broadcast([(n, p) for n, p in named] + list(module.named_buffers()))
        trainable = [(n, p) for n, p in named if p.requires_grad]
        self._buckets = self._make_buckets(trainable[::-1], bucket_cap_mb * 2**20)
        self._bucket_of = {id(p): b for b in self._buckets for p in b.params}
        self._handles = []
        if auto_reduce:
            self._handles = [p.register_post_accumulate_grad_hook(self._on_grad)
                             for _, p in trainable]

    # ---- construction ------------------------------------------------------------------

    @staticmethod
    def _check_same_model(named, rank: int) -> None:
        """Raise on every rank (never hang) when the ranks hold different models."""
        mine = [(n, tuple(t.shape), str(t.dtype)) for n, t in named]
        everyone = comm.world().allgather(mine)
        for other_rank, theirs in enumerate(everyone):
            if theirs != everyone[0]:
                diff = next((a, b) for a, b in itertools.zip_longest(everyone[0], theirs)
                            if a != b)
                raise RuntimeError(f"DistributedDataParallel: rank {other_rank}'s model "
                                   f"differs from rank 0's (first difference: rank 0 has "
                                   f"{diff[0]}, rank {other_rank} has {diff[1]}); this is "
                                   f"rank {rank}")

    def _broadcast(self, named) -> None:
        """Give every rank rank 0's values, one ``Bcast`` per dtype group."""
        for (dtype, _), group in _by_dtype(named).items():
            tensors = [t for _, t in group]
            buf, offsets = _pack(tensors, dtype)
            for t, (start, stop, _) in zip(tensors, offsets):
                buf[start:stop] = _host(t._data).reshape(-1)
            comm.world().Bcast(buf, root=0)
            self.comm_stats["broadcast_calls"] += 1
            for t, (start, stop, shape) in zip(tensors, offsets):
                _write(t, buf[start:stop].reshape(shape))

    @staticmethod
    def _make_buckets(named, cap_bytes: float) -> list[Bucket]:
        """Fill buckets in order, a new one when the cap would be passed (a parameter
        larger than the cap gets a bucket of its own); never mix dtypes or devices."""
        buckets = []
        for (dtype, _), group in _by_dtype(named).items():
            chunks, size = [[]], 0
            for name, p in group:
                nbytes = p.numel() * dtype.itemsize
                if chunks[-1] and size + nbytes > cap_bytes:
                    chunks.append([])
                    size = 0
                chunks[-1].append((name, p))
                size += nbytes
            for chunk in chunks:
                params = [p for _, p in chunk]
                buf, offsets = _pack(params, dtype)
                buckets.append(Bucket(params, [n for n, _ in chunk], offsets, buf))
        return buckets

    # ---- training ----------------------------------------------------------------------

    @property
    def buckets(self) -> list[list[str]]:
        """The parameter names of each gradient bucket, in reduction order."""
        return [list(b.names) for b in self._buckets]

    def forward(self, *args, **kwargs):
        """Run the wrapped module (after re-sending rank 0's buffers, if asked)."""
        if self._in_flight:
            missing = [n for b in self._buckets if not b.done
                       for n, p in zip(b.names, b.params) if id(p) not in b.ready]
            raise RuntimeError("DistributedDataParallel: the previous backward left "
                               "gradients unreduced because these parameters got no "
                               f"gradient: {', '.join(missing)}. Every rank must use every "
                               "parameter, or call reduce_gradients() after backward.")
        if self.broadcast_buffers and self.training:
            buffers = list(self.module.named_buffers())
            if buffers:
                self._broadcast(buffers)
        return self.module(*args, **kwargs)

    def _on_grad(self, p: Tensor) -> None:
        """Post-accumulate-grad hook: reduce a bucket once all its gradients are in."""
        if not self._sync:
            return
        bucket = self._bucket_of[id(p)]
        if bucket.done:
            raise RuntimeError("DistributedDataParallel: a parameter received a gradient "
                               "after its bucket was reduced (used twice in one backward "
                               "across a reduction?)")
        if not self._in_flight:
            self._in_flight, self._auto_done = True, False
        bucket.ready.add(id(p))
        if len(bucket.ready) == len(bucket.params):
            self._reduce(bucket)
            if all(b.done for b in self._buckets):
                self._finish()
                self._auto_done = True

    def reduce_gradients(self) -> None:
        """Average every parameter's ``.grad`` over the ranks now (all ranks must call
        it). A compiled training step calls this between its backward and its update.
        It reduces what the hooks have not reduced since the last call: nothing after a
        backward the hooks already finished, the rest after one they left incomplete.
        A missing gradient counts as zeros."""
        if self._auto_done and not self._in_flight:
            self._auto_done = False
            return
        for bucket in self._buckets:
            if not bucket.done:
                self._reduce(bucket)
        self._finish()
        self._auto_done = False

    def _reduce(self, bucket: Bucket) -> None:
        # One pass in (copyto a bucket view: no reshape copy of a strided gradient), one
        # Allreduce, one pass out that also divides: the bucket costs ~2 memory passes.
        buf = bucket.buffer
        for p in bucket.params:
            if p.grad is not None:
                # MPI reads the arrays behind fusionnet's back: a trace (a fused step)
                # must stop here, not compile the step without its all-reduce.
                dispatch.note_python_value(p.grad, "an MPI all-reduce of the gradients")
        for p, (start, stop, shape) in zip(bucket.params, bucket.offsets):
            if p.grad is None:
                buf[start:stop] = 0
            else:
                np.copyto(buf[start:stop].reshape(shape), _host(p.grad._data))
        comm.world().Allreduce(comm._mpi().IN_PLACE, buf, op=comm._mpi().SUM)
        self.comm_stats["allreduce_calls"] += 1
        self.comm_stats["allreduce_bytes"] += buf.nbytes
        for p, (start, stop, shape) in zip(bucket.params, bucket.offsets):
            value = buf[start:stop].reshape(shape)
            g = None if p.grad is None else p.grad._data
            if (type(g) is np.ndarray and g.shape == shape and g.dtype == buf.dtype
                    and g.flags.writeable):
                np.divide(value, self.world_size, out=g)  # in place: keep grad storage
            elif type(p._data) is np.ndarray:
                p.grad = Tensor._wrap(value / self.world_size)
            else:  # CuPy
                p.grad = Tensor(value / self.world_size, device=p.device)
        bucket.done = True

    def _finish(self) -> None:
        for bucket in self._buckets:
            bucket.ready.clear()
            bucket.done = False
        self._in_flight = False

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate gradients locally (no communication) inside this block; the first
        backward after it reduces the accumulated sum (gradient accumulation)."""
        previous, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = previous
