"""Devices (``cpu``, ``cuda:N``) and the array module that backs each one.

NumPy backs ``cpu``; CuPy backs ``cuda``. CuPy is imported lazily, only when
a CUDA device is actually used, so ``import fusionnet`` works on a bare CPU
machine. Without CuPy or without a GPU, ``device('cuda')`` objects can still
be made; only putting data there fails, with :data:`CUDA_INSTALL_HINT`.
"""
from __future__ import annotations

import contextlib

import numpy as np

__all__ = ["device", "as_device", "array_module", "device_of_array", "cupy_or_none",
           "require_cupy", "cuda_unavailable_reason", "cuda_device_count", "device_guard", "move_",
           "CUDA_INSTALL_HINT"]

CUDA_INSTALL_HINT = (
    "install the GPU extra with `pip install 'fusionnet[gpu]'` (CuPy for CUDA 13; "
    "use `pip install cupy-cuda12x` for CUDA 12 drivers) on a machine with an NVIDIA GPU"
)


class device:
    """A device: ``device('cpu')``, ``device('cuda')``, ``device('cuda:1')``, ``device('cuda', 1)``.

    Making one never touches the GPU: ``device('cuda:3')`` is fine on a CPU-only machine.
    """

    __slots__ = ("type", "index")

    def __init__(self, spec: str | int | device = "cpu", index: int | None = None, *,
                 type: str | None = None):  # noqa: A002 - PyTorch's keyword, as in repr()
        if type is not None:  # device(type='cuda', index=1), as repr() prints it
            spec = type
        if isinstance(spec, device):
            spec, index = spec.type, spec.index if index is None else index
        if isinstance(spec, int) and not isinstance(spec, bool):
            spec, index = "cuda", spec
        if not isinstance(spec, str):
            raise TypeError(f"fusionnet.device: expected a string like 'cpu' or 'cuda:0', "
                            f"got {spec!r}")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise TypeError(f"fusionnet.device: the index must be an int, got {index!r}")
        kind, _, idx = spec.strip().partition(":")
        if kind not in ("cpu", "cuda"):
            raise RuntimeError(f"fusionnet.device: unknown device type {kind!r} "
                               "(expected 'cpu' or 'cuda')")
        if idx:
            if index is not None:
                raise RuntimeError(f"fusionnet.device: index given twice in {spec!r}")
            if not (idx.isascii() and idx.isdigit()):
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
            try:
                other = device(other)
            except (RuntimeError, TypeError):
                return False
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type and self.index == other.index

    def __hash__(self) -> int:
        return hash((self.type, self.index))


CPU = device("cpu")


def as_device(spec) -> device:
    """Normalise ``None``/str/int/device to a concrete device (``cuda`` becomes ``cuda:<current>``).

    A CUDA device must exist: without CuPy or a GPU this raises a RuntimeError
    that says how to install the GPU extra; an index past the last GPU raises too.
    """
    if spec is None:
        return CPU
    d = spec if isinstance(spec, device) else device(spec)
    if d.type == "cuda":
        cp = require_cupy(d)
        if d.index is None:
            return device("cuda", cp.cuda.runtime.getDevice())
    return d


_cupy = None
_cupy_tried = False
_cupy_reason = ""
_cupy_count = 0


def cupy_or_none():
    """CuPy if it imports and sees at least one GPU, else None. Imported at most once."""
    global _cupy, _cupy_tried, _cupy_reason, _cupy_count
    if not _cupy_tried:
        _cupy_tried = True
        try:
            import cupy  # noqa: PLC0415 - optional dependency, loaded lazily
        except Exception as err:  # ImportError, or a broken install that fails on import
            _cupy_reason = f"CuPy is not installed ({type(err).__name__}: {err})"
            return None
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as err:  # no driver, or a driver too old for this CuPy
            _cupy_reason = f"CuPy is installed but cannot reach a GPU driver ({err})"
            return None
        if count <= 0:
            _cupy_reason = "CuPy is installed but sees no GPU"
            return None
        _cupy, _cupy_count = cupy, count
    return _cupy


def cuda_unavailable_reason() -> str:
    """Why CUDA is not available here ('' when it is)."""
    return "" if cupy_or_none() is not None else _cupy_reason


def cuda_device_count() -> int:
    """Number of visible GPUs (0 without CuPy or a GPU); fixed for the process's lifetime."""
    return _cupy_count if cupy_or_none() is not None else 0


def require_cupy(dev: device | None = None):
    """CuPy, or a clear error saying how to get it (and that ``dev`` exists, if given)."""
    cp = cupy_or_none()
    target = f" to use {dev}" if dev is not None else ""
    if cp is None:
        raise RuntimeError(f"fusionnet: CUDA is not available{target}: {_cupy_reason}; "
                           + CUDA_INSTALL_HINT)
    if dev is not None and dev.index is not None and dev.index >= _cupy_count:
        raise RuntimeError(f"fusionnet: {dev} does not exist: this machine has {_cupy_count} "
                           f"CUDA device(s) (cuda:0 to cuda:{_cupy_count - 1})")
    return cp


def array_module(dev: device):
    """The array module (numpy or cupy) that holds arrays on ``dev``."""
    return np if dev.type == "cpu" else require_cupy(dev)


def device_of_array(array) -> device:
    """The device an ndarray lives on."""
    if isinstance(array, np.ndarray) or np.isscalar(array):
        return CPU
    dev = getattr(array, "device", None)
    if dev is not None and hasattr(dev, "id"):
        return device("cuda", dev.id)
    return CPU


def device_guard(dev) -> contextlib.AbstractContextManager:
    """A context in which CuPy allocates and launches on ``dev`` (does nothing for cpu).

    CuPy works on its *current* device, not on the device of the arrays it is
    given, so code that makes or computes arrays for ``cuda:1`` must run in here.
    """
    d = as_device(dev)
    if d.type == "cpu":
        return contextlib.nullcontext()
    return require_cupy(d).cuda.Device(d.index)


def move_(tensor, device=None, dtype=None):
    """Move ``tensor`` (and its ``.grad``) to ``device``/``dtype`` in place; return it.

    This is what ``Module.to()`` needs: the tensor object stays the same (so an
    optimizer that holds it still sees it), only its storage is replaced. As in
    PyTorch's ``Module.to``, ``dtype`` only applies to floating point tensors.
    """
    def moved(t):
        dt = dtype if dtype is not None and t.is_floating_point() else None
        if device is None and dt is None:
            return t._data
        return t.detach().to(device=device, dtype=dt)._data

    tensor._set_data(moved(tensor))
    if tensor.grad is not None:
        tensor.grad._set_data(moved(tensor.grad))
    return tensor
