"""``fusionnet.cuda``: is a GPU here, how many, which one is current.

Mirrors the small part of ``torch.cuda`` that block code uses. Without CuPy or
without a GPU, :func:`is_available` is False and :func:`device_count` is 0;
the functions that need a GPU raise a RuntimeError that says how to get one.
"""
from __future__ import annotations

from .device import (CUDA_INSTALL_HINT, as_device, cuda_device_count, cupy_or_none, device,
                     require_cupy)

__all__ = ["is_available", "device_count", "current_device", "set_device", "synchronize",
           "get_device_name", "CUDA_INSTALL_HINT"]


def is_available() -> bool:
    """True when CuPy imports and sees at least one NVIDIA GPU."""
    return cupy_or_none() is not None


def device_count() -> int:
    """Number of visible GPUs (0 without CuPy or a GPU)."""
    return cuda_device_count()


def current_device() -> int:
    """Index of the GPU that ``'cuda'`` (no index) means right now."""
    return int(require_cupy().cuda.runtime.getDevice())


def _index(dev: int | str | device | None) -> int:
    """The GPU index that ``dev`` names (None: the current one), checked to exist."""
    if dev is None:
        return current_device()
    d = device(dev) if not isinstance(dev, device) else dev
    if d.type != "cuda":
        raise ValueError(f"fusionnet.cuda: expected a CUDA device, got {d}")
    return as_device(d).index


def set_device(dev: int | str | device) -> None:
    """Make GPU ``dev`` the current one (where ``'cuda'`` tensors go from now on)."""
    require_cupy().cuda.Device(_index(dev)).use()


def synchronize(dev: int | str | device | None = None) -> None:
    """Wait until all queued work on GPU ``dev`` (default: the current one) has finished.

    Time GPU code only after this: CuPy launches kernels asynchronously.
    """
    require_cupy().cuda.Device(_index(dev)).synchronize()


def get_device_name(dev: int | str | device | None = None) -> str:
    """The GPU's product name, e.g. ``'NVIDIA H100 80GB HBM3'``."""
    props = require_cupy().cuda.runtime.getDeviceProperties(_index(dev))
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)
