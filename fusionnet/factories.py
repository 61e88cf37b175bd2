"""Tensor factories under PyTorch's names: ``tensor``, ``zeros``, ``rand``, ``arange``...

Each accepts the PyTorch argument forms (``rand(2, 3)``, ``rand((2, 3))``,
``rand(size=(2, 3))``) and the ``dtype=``, ``device=``, ``requires_grad=``
keywords.
"""
from __future__ import annotations

import numpy as np

from . import random as _random
from .device import array_module, as_device, device_guard
from .dtypes import as_dtype, float32, require_native
from .tensor import Tensor
from .tensor_ops import shape_args as _shape_args

__all__ = ["tensor", "as_tensor", "from_numpy", "zeros", "ones", "empty", "full", "rand",
           "randn", "randint", "normal", "randperm", "arange", "eye", "zeros_like", "ones_like",
           "empty_like", "full_like", "rand_like", "randn_like", "FloatTensor", "DoubleTensor", "LongTensor"]


def _on(device, make):
    """``make(xp)`` run where CuPy allocates on ``device`` (CuPy uses its current GPU)."""
    dev = as_device(device)
    with device_guard(dev):
        return make(array_module(dev))


def _make(array, requires_grad=False):
    t = Tensor._wrap(array)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _size(args, size):
    if size is not None:
        if args:
            raise TypeError("give the size either positionally or as size=, not both")
        return _shape_args((size,))
    return _shape_args(args)


def _float_dtype(dtype):
    dt = float32 if dtype is None else as_dtype(dtype)
    return dt.np


def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A new tensor holding a copy of ``data`` (Python numbers, lists, arrays, tensors)."""
    if isinstance(data, Tensor):
        if device is None:  # tensor(t) keeps t's device, as in PyTorch
            device = data.device
        data = data.detach()._host() if data.device.type == "cpu" else data
    out = Tensor(data, dtype=dtype, device=device)
    if out._data is data or (isinstance(data, np.ndarray) and np.shares_memory(out._data, data)):
        out._data = out._data.copy()
    return out.requires_grad_(True) if requires_grad else out


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """Like :func:`tensor` but shares memory with a NumPy array or tensor when it can."""
    if isinstance(data, Tensor):
        return data.to(device=device, dtype=dtype) if (device or dtype) else data
    return Tensor(data, dtype=dtype, device=device)


def from_numpy(array: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with ``array``."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    require_native(array.dtype, "from_numpy")  # shares memory: no conversion possible
    return Tensor._wrap(array)


def zeros(*size, dtype=None, device=None, requires_grad=False, **kw) -> Tensor:
    """A tensor of zeros."""
    shape = _size(size, kw.pop("size", None))
    return _make(_on(device, lambda xp: xp.zeros(shape, dtype=_float_dtype(dtype))),
                 requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False, **kw) -> Tensor:
    """A tensor of ones."""
    shape = _size(size, kw.pop("size", None))
    return _make(_on(device, lambda xp: xp.ones(shape, dtype=_float_dtype(dtype))),
                 requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False, **kw) -> Tensor:
    """An uninitialised tensor (zeros here, so results never depend on stale memory)."""
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad, **kw)


def full(size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor filled with ``fill_value`` (dtype inferred from it, as in PyTorch)."""
    if dtype is None:
        dtype = (as_dtype(bool) if isinstance(fill_value, bool) else
                 as_dtype(int) if isinstance(fill_value, int) else float32)
    shape, npd = _shape_args((size,)), as_dtype(dtype).np
    return _make(_on(device, lambda xp: xp.full(shape, fill_value, dtype=npd)), requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False, generator=None, **kw) -> Tensor:
    """Uniform samples from [0, 1) (from ``generator``, default the default stream)."""
    shape = _size(size, kw.pop("size", None))
    arr = _on(device, lambda xp: _random.generator(xp, generator, traced=True).random(
        shape, dtype=_float_dtype(dtype)))
    return _make(arr, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False, generator=None, **kw) -> Tensor:
    """Standard normal samples (from ``generator``, default the default stream)."""
    shape = _size(size, kw.pop("size", None))
    arr = _on(device, lambda xp: _random.generator(xp, generator, traced=True).standard_normal(
        shape, dtype=_float_dtype(dtype)))
    return _make(arr, requires_grad)


def normal(mean=0.0, std=1.0, size=None, *, generator=None, dtype=None, device=None,
           requires_grad=False) -> Tensor:
    """Samples from N(mean, std**2): ``normal(0.0, 1.0, (2, 3))`` with numbers, or, with
    tensors for ``mean`` and/or ``std``, one sample per element of their broadcast shape."""
    tensors = [v for v in (mean, std) if isinstance(v, Tensor)]
    if not tensors:
        if size is None:
            raise TypeError("normal() with number mean and std needs a size")
        return _make((mean + std * randn(_shape_args((size,)), dtype=dtype, device=device,
                                         generator=generator))._data, requires_grad)
    if size is not None and tuple(_shape_args((size,))) != tuple(
            np.broadcast_shapes(*(tuple(t.shape) for t in tensors))):
        raise RuntimeError("normal(): size must match the shape of mean/std when they are "
                           "tensors")
    shape = np.broadcast_shapes(*(tuple(t.shape) for t in tensors))
    noise = randn(shape, dtype=dtype or tensors[0].dtype, device=tensors[0].device,
                  generator=generator)
    return _make((mean + std * noise)._data, requires_grad)


def randint(low, high=None, size=None, dtype=None, device=None, requires_grad=False,
            generator=None) -> Tensor:
    """Random integers in [low, high) (``randint(high, size)`` also works)."""
    if size is None and isinstance(high, (tuple, list)):
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    if size is None:
        raise TypeError("randint() needs a size")
    dt = as_dtype(int) if dtype is None else as_dtype(dtype)
    shape = _shape_args((size,))
    arr = _on(device, lambda xp: _random.generator(xp, generator).integers(low, high, shape,
                                                                           dtype=np.int64))
    return _make(arr.astype(dt.np), requires_grad)


def randperm(n: int, *, generator=None, dtype=None, device=None,
             requires_grad=False) -> Tensor:
    """A random permutation of 0..n-1 (the order of ``n`` uniform draws)."""
    dt = as_dtype(int) if dtype is None else as_dtype(dtype)
    arr = _on(device, lambda xp: xp.argsort(_random.generator(xp, generator).random(
        (int(n),)), kind="stable"))
    return _make(arr.astype(dt.np), requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Evenly spaced values in [start, end); ints give int64, floats float32."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = as_dtype(int) if is_int else float32
    npd = as_dtype(dtype).np
    return _make(_on(device, lambda xp: xp.arange(start, end, step).astype(npd)),
                 requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """An identity matrix of shape (n, m)."""
    return _make(_on(device, lambda xp: xp.eye(n, m, dtype=_float_dtype(dtype))),
                 requires_grad)


def _like(fn, t, dtype, device, requires_grad, *args):
    return fn(*args, t.shape, dtype=dtype or t.dtype, device=device or t.device,
              requires_grad=requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Zeros with ``t``'s shape, dtype and device."""
    return _like(zeros, t, dtype, device, requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Ones with ``t``'s shape, dtype and device."""
    return _like(ones, t, dtype, device, requires_grad)


def empty_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    """An uninitialised (zero) tensor like ``t``."""
    return _like(zeros, t, dtype, device, requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``fill_value`` everywhere, with ``t``'s shape, dtype and device."""
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform samples with ``t``'s shape, dtype and device."""
    return _like(rand, t, dtype, device, requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Normal samples with ``t``'s shape, dtype and device."""
    return _like(randn, t, dtype, device, requires_grad)


def _legacy(dtype_name):
    def make(*args, device=None):
        if len(args) == 1 and isinstance(args[0], (list, tuple, np.ndarray, Tensor)) and not (
                isinstance(args[0], tuple) and all(isinstance(a, int) for a in args[0])):
            return tensor(args[0], dtype=dtype_name, device=device)
        return zeros(*args, dtype=dtype_name, device=device)
    make.__name__ = {"float32": "FloatTensor", "float64": "DoubleTensor",
                     "int64": "LongTensor"}[dtype_name]
    make.__doc__ = (f"Legacy constructor: ``{make.__name__}(2, 3)`` gives a {dtype_name} "
                    f"tensor of that shape; ``{make.__name__}([1, 2])`` one from data.")
    return make


FloatTensor = _legacy("float32")
DoubleTensor = _legacy("float64")
LongTensor = _legacy("int64")
