"""Top-level tensor functions under PyTorch's names (``fusionnet.exp(x)``, ``fusionnet.cat``...).

Most are the Tensor method of the same name called as a function: :func:`_function` builds
each from the method (one definition, in ``tensor_ops.py`` or ``tensor.py``) and gives it
the method's docstring and signature, with ``self`` spelled ``input`` as PyTorch does.
The few whose arguments differ from the method's (``cat``, ``stack``, ``where``,
``reshape``, ``permute``) are written out below; none computes anything itself.
"""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

from .dispatch import apply
from .tensor import Tensor
from .tensor_ops import numpy_aliases

#: Methods that are also top-level functions with the same arguments: ``fusionnet.sum(x,
#: dim=None, keepdim=False, dtype=None)``, ``fusionnet.max(a, b)`` (elementwise) and
#: ``fusionnet.max(x, dim)`` (values, indices) alike.
_METHODS = ("abs", "neg", "sign", "exp", "log", "sqrt", "erf", "sigmoid", "tanh", "relu",
            "pow", "clamp", "maximum", "minimum", "sum", "mean", "max", "min", "argmax",
            "argmin", "matmul", "mm", "flatten", "transpose", "unsqueeze", "squeeze", "clone",
            "numel", "allclose", "equal", "sin", "cos", "square", "norm", "bmm")

__all__ = ["cat", "concat", "stack", "where", "reshape", "permute", "meshgrid", *_METHODS]


def _function(name: str) -> Callable:
    """``fusionnet.<name>(input, *args, **kwargs)``: the method ``Tensor.<name>`` as a function.

    It calls the method's function directly (not ``input.<name>``), so a scalar first
    argument reaches the op table as it would from the method (``fusionnet.pow(2, x)``).
    """
    method = getattr(Tensor, name)

    def function(input, *args, **kwargs):  # noqa: A002 - PyTorch's name
        return method(input, *args, **kwargs)

    sig = inspect.signature(method)
    params = list(sig.parameters.values())
    function.__signature__ = sig.replace(parameters=[params[0].replace(name="input")]
                                         + params[1:])
    function.__name__ = function.__qualname__ = name
    function.__doc__ = method.__doc__
    return function


globals().update({name: _function(name) for name in _METHODS})


def _seq(tensors, name):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError(f"{name}() expects a non-empty sequence of tensors")
    return tensors


@numpy_aliases
def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Concatenate tensors along an existing dimension."""
    return apply("cat", *_seq(tensors, "cat"), dim=dim)


concat = cat


@numpy_aliases
def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Stack equally shaped tensors along a new dimension."""
    return apply("stack", *_seq(tensors, "stack"), dim=dim)


def where(condition: Tensor, input, other) -> Tensor:  # noqa: A002 - PyTorch's names
    """``input`` where ``condition`` holds, else ``other`` (either may be a scalar)."""
    return apply("where", condition, input, other)


def reshape(input: Tensor, shape: Sequence[int]) -> Tensor:  # noqa: A002
    """Same data, new shape (one -1 allowed): :meth:`Tensor.reshape`."""
    return input.reshape(shape)


def permute(input: Tensor, dims: Sequence[int]) -> Tensor:  # noqa: A002
    """Reorder dimensions: :meth:`Tensor.permute`."""
    return input.permute(dims)


def meshgrid(*tensors, indexing: str = "ij") -> tuple:
    """Coordinate grids from 1-D tensors: with ``indexing="ij"`` result i varies along dim
    i; ``"xy"`` swaps the first two dims (NumPy's default). Each result is an ``expand``
    view of its input, as in PyTorch."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise ValueError(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}")
    if any(t.ndim > 1 for t in tensors):
        raise RuntimeError("meshgrid expects all tensors to have 0 or 1 dimensions")
    sizes = [t.numel() for t in tensors]
    swap = indexing == "xy" and len(tensors) >= 2
    if swap:
        sizes[0], sizes[1] = sizes[1], sizes[0]
    out = []
    for i, t in enumerate(tensors):
        at = (1 - i if i < 2 else i) if swap else i
        shape = [1] * len(tensors)
        shape[at] = sizes[at]
        out.append(t.reshape(shape).expand(sizes))
    return tuple(out)
