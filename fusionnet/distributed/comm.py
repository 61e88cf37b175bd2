"""Collectives over MPI (``mpi4py``): the process group of ``fusionnet.distributed``.

One process group: ``MPI.COMM_WORLD`` (every process ``mpiexec`` started). mpi4py is
imported on first use only, so ``import fusionnet.distributed`` works without the
``dist`` extra and the sampler needs no MPI at all. The collectives work in place on
a tensor's array (NumPy buffers straight to MPI, no pickling); CuPy tensors go through
host memory, since the MPI of the ``mpich`` wheel is not CUDA-aware.
"""
from __future__ import annotations

import numpy as np

from .. import dispatch

__all__ = ["ReduceOp", "init", "is_available", "is_initialized", "get_rank",
           "get_world_size", "all_reduce", "broadcast", "barrier", "world"]

_INSTALL_HINT = ("fusionnet.distributed needs the `dist` extra (mpi4py and an MPI): "
                 "pip install 'fusionnet[dist]'  (or: pip install mpi4py mpich)")

_COMM = None  # the world communicator once init() ran


class ReduceOp:
    """Reduction operations of :func:`all_reduce` (PyTorch's ``dist.ReduceOp`` names)."""

    SUM = "sum"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    AVG = "avg"  # SUM, then divided by the world size


def _mpi():
    try:
        from mpi4py import MPI  # noqa: PLC0415 - optional dependency, loaded on use
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return MPI


def is_available() -> bool:
    """True when mpi4py (the ``dist`` extra) can be imported; loads no MPI library."""
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec("mpi4py") is not None


def init() -> tuple[int, int]:
    """Join the process group (MPI's world) and return ``(rank, world_size)``.

    Under ``mpiexec -n N`` the ranks are ``0..N-1``; a plain ``python`` run is a
    world of one. Calling it again returns the same pair."""
    global _COMM
    if _COMM is None:
        _COMM = _mpi().COMM_WORLD
    return _COMM.Get_rank(), _COMM.Get_size()


def is_initialized() -> bool:
    """True once :func:`init` has run in this process."""
    return _COMM is not None


def world():
    """The world communicator (an ``mpi4py`` ``Comm``); initialises on first use."""
    if _COMM is None:
        init()
    return _COMM


def get_rank() -> int:
    """This process's rank (0 for the process that broadcasts the initial weights)."""
    return world().Get_rank()


def get_world_size() -> int:
    """The number of processes in the group."""
    return world().Get_size()


def barrier() -> None:
    """Wait until every process has reached this call."""
    world().Barrier()


def _host_array(tensor):
    """``(array MPI can read and write, write-back function or None)`` for a tensor."""
    if hasattr(tensor, "_data"):  # a trace must stop, not freeze what MPI reads
        dispatch.note_python_value(tensor, "an MPI collective")
    data = getattr(tensor, "_data", tensor)
    if type(data) is np.ndarray and data.flags.c_contiguous and data.flags.writeable:
        return data, None
    host = np.ascontiguousarray(data.get() if hasattr(data, "get") else data)
    if type(data) is np.ndarray:
        return host, lambda: np.copyto(data, host)
    return host, lambda: data.set(host)  # a CuPy array: copy the result back to the device


def all_reduce(tensor, op: str = ReduceOp.SUM):
    """Reduce ``tensor`` over all processes in place: afterwards every process holds the
    same combined value (sum by default). Returns ``tensor``.

    ``tensor`` is a fusionnet ``Tensor`` (or a NumPy array); the call is one MPI
    ``Allreduce`` on its buffer."""
    MPI = _mpi()
    mpi_op = {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD,
              ReduceOp.MIN: MPI.MIN, ReduceOp.MAX: MPI.MAX}.get(op)
    if mpi_op is None:
        raise ValueError(f"unknown reduce op {op!r}; use one of ReduceOp's")
    arr, write_back = _host_array(tensor)
    if op == ReduceOp.AVG and arr.dtype.kind != "f":  # refuse before any rank changes it
        raise TypeError(f"ReduceOp.AVG needs a floating point tensor, got {arr.dtype}")
    world().Allreduce(MPI.IN_PLACE, arr, op=mpi_op)
    if op == ReduceOp.AVG:
        arr /= get_world_size()
    if write_back is not None:
        write_back()
    return tensor


def broadcast(tensor, src: int = 0):
    """Overwrite ``tensor`` in place on every process with rank ``src``'s value;
    returns ``tensor``. Shapes and dtypes must agree on all processes."""
    arr, write_back = _host_array(tensor)
    world().Bcast(arr, root=src)
    if write_back is not None:
        write_back()
    return tensor
