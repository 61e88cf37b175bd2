"""Data-parallel training over MPI: collectives, ``DistributedDataParallel`` and
``DistributedSampler`` (the ``dist`` extra: ``pip install 'fusionnet[dist]'``).

Start N processes with ``mpiexec -n N python train.py``; each calls :func:`init`,
wraps its model in :class:`DistributedDataParallel` and reads its shard of the data
through :class:`DistributedSampler`. mpi4py loads on first use, so importing this
package (and using the sampler with explicit ranks) needs no MPI. See
docs/distributed.md.
"""
from __future__ import annotations

from .comm import (ReduceOp, all_reduce, barrier, broadcast, get_rank, get_world_size, init,
                   is_available, is_initialized)
from .ddp import DistributedDataParallel
from .sampler import DistributedSampler

__all__ = ["init", "is_available", "is_initialized", "get_rank", "get_world_size",
           "all_reduce", "broadcast", "barrier", "ReduceOp", "DistributedDataParallel",
           "DistributedSampler"]
