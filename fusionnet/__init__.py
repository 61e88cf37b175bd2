"""fusionnet: a PyTorch-compatible block library on NumPy/CuPy, with a graph-tracing
and kernel-fusion engine.

``import fusionnet as torch`` is meant to run the block code of *Dive into
Deep Learning*'s "Builders' Guide" unchanged. Importing builds the op table
and nothing else: numba, CuPy, graphviz, matplotlib and torch load lazily.
"""
from __future__ import annotations

from . import ops
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .device import device
from .dtypes import (bool_, dtype, float32, float64, get_default_dtype, int32, int64)
from .factories import (DoubleTensor, FloatTensor, LongTensor, arange, as_tensor, empty,
                        empty_like, eye, from_numpy, full, full_like, ones, ones_like, rand,
                        rand_like, randint, randn, randn_like, tensor, zeros, zeros_like)
from .functions import (abs, allclose, argmax, argmin, cat, clamp, clone, concat, equal, erf,
                        exp, flatten, log, matmul, max, maximum, mean, min, minimum, mm, neg,
                        numel, permute, pow, relu, reshape, sigmoid, sign, sqrt, squeeze,
                        stack, sum, tanh, transpose, unsqueeze, where)
from .random import initial_seed, manual_seed, seed
from .tensor import Size, Tensor, is_tensor
from .graph import Graph, GraphBreak
from .tracer import TraceError, trace
from .explain import explain
from .passes import optimize

__version__ = "0.1.0"

# PyTorch spells the bool dtype `torch.bool`; `bool` is a builtin we must not shadow
# inside this package, so it is attached here for users only.
globals()["bool"] = bool_
float = float32  # noqa: A001 - PyTorch aliases: torch.float, torch.double, torch.long
double = float64
long = int64

__all__ = [
    "Tensor", "Size", "tensor", "as_tensor", "from_numpy", "zeros", "ones", "empty", "full",
    "rand", "randn", "randint", "arange", "eye", "zeros_like", "ones_like", "empty_like",
    "full_like", "rand_like", "randn_like", "FloatTensor", "DoubleTensor", "LongTensor",
    "cat", "concat", "stack", "mm", "matmul", "relu", "exp", "log", "sqrt", "abs", "neg",
    "sign", "erf", "pow", "sigmoid", "tanh", "sum", "mean", "max", "min", "argmax", "argmin",
    "where", "clamp", "maximum", "minimum", "reshape", "flatten", "transpose", "permute",
    "unsqueeze", "squeeze", "allclose", "equal", "numel", "clone", "is_tensor",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "manual_seed", "seed",
    "initial_seed", "device", "dtype", "float32", "float64", "int32", "int64", "bool_",
    "get_default_dtype", "ops", "Graph", "GraphBreak", "TraceError", "trace", "explain",
    "optimize", "fuse", "FusedModule", "FusionFallbackWarning", "FuseInputError",
    "export_graph", "save", "load", "SerializationError", "nn", "optim", "cuda",
]

from . import nn, optim  # noqa: E402
from . import cuda  # noqa: E402
from .serialization import SerializationError, load, save  # noqa: E402
from .runtime import FusedModule, FuseInputError, FusionFallbackWarning, fuse  # noqa: E402
from .viz import export_graph  # noqa: E402
