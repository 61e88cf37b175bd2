"""fusionnet: a PyTorch-compatible block library on NumPy/CuPy, with a graph-tracing
and kernel-fusion engine.

``import fusionnet as torch`` is meant to run the block code of *Dive into
Deep Learning*'s "Builders' Guide" unchanged. Importing builds the op table and the
eager library (tensors, autograd, ``nn``, ``optim``) and nothing else: the engine
(``trace``, ``optimize``, ``fuse``, ``explain``, ``export_graph``, ``save``/``load``
and networkx with them) loads on first use, and numba, CuPy, graphviz, matplotlib
and torch load only when something needs them.
"""
from __future__ import annotations

import importlib as _importlib
import sys as _sys
import types as _types

from . import ops
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .device import device
from .dtypes import (bool_, dtype, float32, float64, get_default_dtype, int32, int64)
from .factories import (DoubleTensor, FloatTensor, LongTensor, arange, as_tensor, empty,
                        empty_like, eye, from_numpy, full, full_like, normal, ones, ones_like,
                        rand, rand_like, randint, randn, randn_like, randperm, tensor, zeros,
                        zeros_like)
from .functions import (abs, allclose, argmax, argmin, bmm, cat, clamp, clone, concat, cos,
                        equal, erf, exp, flatten, log, matmul, max, maximum, mean, meshgrid,
                        min, minimum, mm, neg, norm, numel, permute, pow, relu, reshape,
                        sigmoid, sign, sin, sqrt, square, squeeze, stack, sum, tanh,
                        transpose, unsqueeze, where)
from .random import Generator, default_generator, initial_seed, manual_seed, seed
from .tensor import Size, Tensor, is_tensor

from . import cuda, nn, optim

__version__ = "0.1.0"

# PyTorch spells the bool dtype `torch.bool`; `bool` is a builtin we must not shadow
# inside this package, so it is attached here for users only.
globals()["bool"] = bool_
float = float32  # noqa: A001 - PyTorch aliases: torch.float, torch.double, torch.long
double = float64
long = int64

#: The engine's public names and the submodule each comes from. They are imported on
#: first use (PEP 562 ``__getattr__`` below), so ``import fusionnet`` loads no networkx.
_LAZY = {
    "Graph": "graph", "GraphBreak": "graph",
    "TraceError": "tracer", "trace": "tracer",
    "explain": "explain",
    "optimize": "passes",
    "fuse": "runtime", "FusedModule": "runtime", "FusionFallbackWarning": "runtime",
    "FuseInputError": "runtime",
    "export_graph": "viz",
    "save": "serialization", "load": "serialization", "SerializationError": "serialization",
}

#: Submodules that ``fusionnet.<name>`` reaches without an import statement, as it did
#: when the package imported them eagerly.
_LAZY_SUBMODULES = frozenset({"codegen", "distributed", "graph", "interpreter", "passes",
                              "pystate", "regions", "runtime", "serialization", "structure",
                              "tracer", "utils", "viz"})
__all__ = [
    "Tensor", "Size", "tensor", "as_tensor", "from_numpy", "zeros", "ones", "empty", "full",
    "rand", "randn", "randint", "arange", "eye", "zeros_like", "ones_like", "empty_like",
    "full_like", "rand_like", "randn_like", "normal", "randperm", "sin", "cos", "square",
    "norm", "bmm", "meshgrid", "FloatTensor", "DoubleTensor", "LongTensor",
    "cat", "concat", "stack", "mm", "matmul", "relu", "exp", "log", "sqrt", "abs", "neg",
    "sign", "erf", "pow", "sigmoid", "tanh", "sum", "mean", "max", "min", "argmax", "argmin",
    "where", "clamp", "maximum", "minimum", "reshape", "flatten", "transpose", "permute",
    "unsqueeze", "squeeze", "allclose", "equal", "numel", "clone", "is_tensor",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "manual_seed", "seed",
    "initial_seed", "Generator", "default_generator", "device", "dtype", "float32",
    "float64", "int32", "int64", "bool_",
    "get_default_dtype", "ops", "Graph", "GraphBreak", "TraceError", "trace", "explain",
    "optimize", "fuse", "FusedModule", "FusionFallbackWarning", "FuseInputError",
    "export_graph", "save", "load", "SerializationError", "nn", "optim", "cuda",
]


def __getattr__(name: str):
    """Import an engine name (or a submodule) on first use and keep it as an attribute."""
    if name in _LAZY:
        value = getattr(_importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _LAZY_SUBMODULES:
        value = _importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY.keys())


class _Package(_types.ModuleType):
    """The package's module type: ``fusionnet.explain`` stays the function.

    Python binds a submodule on its package when the submodule first loads, which would
    replace the function ``explain`` by the module ``fusionnet.explain`` whenever that
    module is imported before the name is first used (``from fusionnet.explain import
    ...``). An eager ``from .explain import explain`` used to rebind it afterwards.
    """

    def __setattr__(self, name: str, value) -> None:
        if _LAZY.get(name) == name and isinstance(value, _types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
