"""Devices (``cpu``, ``cuda:N``) and the array module that backs each one.

NumPy backs ``cpu``; CuPy backs ``cuda``. CuPy is imported lazily, only when
a CUDA device is actually used, so ``import fusionnet`` works on a bare CPU
machine.
"""
from __future__ import annotations

import numpy as np

__all__ = ["device", "as_device", "array_module", "device_of_array", "cupy_or_none",
           "CUDA_INSTALL_HINT"]

CUDA_INSTALL_HINT = (
    "install the GPU extra with `pip install 'fusionnet[gpu]'` (CuPy for CUDA 13; "
    "use `pip install cupy-cuda12x` for CUDA 12 drivers) on a machine with an NVIDIA GPU"
)


class device:
    """A device: ``device('cpu')``, ``device('cuda')``, ``device('cuda:1')``, ``device('cuda', 1)``."""

    __slots__ = ("type", "index")

    def __init__(self, spec="cpu", index: int | None = None):
        if isinstance(spec, device):
            spec, index = spec.type, spec.index if index is None else index
        if isinstance(spec, int):
            spec, index = "cuda", spec
        if not isinstance(spec, str):
            raise TypeError(f"fusionnet.device: expected a string like 'cpu' or 'cuda:0', got {spec!r}")
        kind, _, idx = spec.partition(":")
        if kind not in ("cpu", "cuda"):
            raise RuntimeError(f"fusionnet.device: unknown device type {kind!r} "
                               "(expected 'cpu' or 'cuda')")
        if idx:
            if index is not None:
                raise RuntimeError(f"fusionnet.device: index given twice in {spec!r}")
            if not idx.isdigit():
                raise RuntimeError(f"fusionnet.device: bad device index in {spec!r}")
            index = int(idx)
        if index is not None and index < 0:
            raise RuntimeError(f"fusionnet.device: negative device index {index}")
        if kind == "cpu" and index not in (None, 0):
            raise RuntimeError("fusionnet.device: cpu has no device index other than 0")
        object.__setattr__(self, "type", kind)
        object.__setattr__(self, "index", None if kind == "cpu" else index)

    def __setattr__(self, name, value):
        raise AttributeError("fusionnet.device is immutable")

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            other = device(other)
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type and self.index == other.index

    def __hash__(self) -> int:
        return hash((self.type, self.index))


CPU = device("cpu")


def as_device(spec) -> device:
    """Normalise ``None``/str/int/device to a concrete device (``cuda`` becomes ``cuda:<current>``)."""
    if spec is None:
        return CPU
    d = spec if isinstance(spec, device) else device(spec)
    if d.type == "cuda" and d.index is None:
        cp = require_cupy()
        d = device("cuda", cp.cuda.runtime.getDevice())
    return d


_cupy = None
_cupy_tried = False


def cupy_or_none():
    """CuPy if it imports and sees at least one GPU, else None. Imported at most once."""
    global _cupy, _cupy_tried
    if not _cupy_tried:
        _cupy_tried = True
        try:
            import cupy  # noqa: PLC0415 - optional dependency, loaded lazily
            if cupy.cuda.runtime.getDeviceCount() > 0:
                _cupy = cupy
        except Exception:  # no CuPy, no driver, no GPU: all mean "no CUDA"
            _cupy = None
    return _cupy


def require_cupy():
    """CuPy, or a clear error saying how to get it."""
    cp = cupy_or_none()
    if cp is None:
        raise RuntimeError("fusionnet: CUDA is not available; " + CUDA_INSTALL_HINT)
    return cp


def array_module(dev: device):
    """The array module (numpy or cupy) that holds arrays on ``dev``."""
    return np if dev.type == "cpu" else require_cupy()


def device_of_array(array) -> device:
    """The device an ndarray lives on."""
    if isinstance(array, np.ndarray) or np.isscalar(array):
        return CPU
    dev = getattr(array, "device", None)
    if dev is not None and hasattr(dev, "id"):
        return device("cuda", dev.id)
    return CPU
