"""Signatures: what a compiled entry is keyed on, in one place.

A signature is the cache key built on every call::

    (module.training, grad mode, (shape, dtype, placement, requires_grad) per input)

The placement (:func:`placement`: ``numpy.ndarray``, or a device array's type and GPU
index) is the device guard: a block compiled for ``cuda:0`` recompiles for ``cuda:1`` or
the CPU. The grad
mode and each input's ``requires_grad`` are part of it because forward may read them
(``if torch.is_grad_enabled():``) and because they decide whether outputs require grad.
A *generic* key drops the leading (batch) size of every input: one batch-generic entry
serves every batch size whose inputs agree on everything else.
"""
from __future__ import annotations

import numpy as np

from .. import autograd

__all__ = ["signature", "generic_key", "describe_args", "describe_key", "batch_of",
           "placement"]


def placement(array):
    """Where ``array`` lives, as signatures and parameter checks compare it:
    ``numpy.ndarray`` for host arrays, ``(array type, GPU index)`` for device arrays."""
    kind = type(array)
    if kind is np.ndarray:
        return kind
    return (kind, getattr(getattr(array, "device", None), "id", None))


def signature(training: bool, arrays, tensors) -> tuple:
    """The key of a call with input ``tensors`` (whose ``arrays`` are given)."""
    return (training, autograd.is_grad_enabled(),
            *[(a.shape, a.dtype, placement(a), t.requires_grad)
              for a, t in zip(arrays, tensors)])


def generic_key(key: tuple) -> tuple:
    """``key`` with every input's leading size left out (rank kept)."""
    return key[:2] + tuple((shape[1:], len(shape), dtype, kind, rg)
                           for shape, dtype, kind, rg in key[2:])


def batch_of(key: tuple):
    """The common leading size of the inputs, or None when they differ or one is 0-d."""
    sizes = {shape[0] if shape else None for shape, *_ in key[2:]}
    return sizes.pop() if len(sizes) == 1 else None


def describe_args(tensors) -> str:
    """``(2, 20) float32, (2,) int64`` for error messages."""
    return ", ".join(f"{tuple(t.shape)} {t._data.dtype}" for t in tensors)


def describe_key(key: tuple) -> str:
    """The inputs a key admits, e.g. ``(2, 20) float32``."""
    return ", ".join(f"{tuple(shape)} {dtype}" for shape, dtype, *_ in key[2:])
