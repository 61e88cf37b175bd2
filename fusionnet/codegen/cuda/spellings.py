"""How CUDA C spells each elementwise op, and how a CuPy host driver spells the layout
steps: the tables a CUDA backend will render from.

There is no CUDA code generator yet (``CudaBackend.compile`` raises ``Unsupported``);
``tests/test_cuda_templates.py`` renders every elementwise spelling (and every reduction's
combine step, through the elementwise op it names) into small kernels per dtype and
compiles them with ``nvcc``, so the table stays honest until the backend lands.

A spelling is a format string over ``{0}``, ``{1}``, ... (attributes by name, e.g.
``{min}``) or a function ``(arg_vars, attrs, dtype) -> str`` with ``dtype`` the result's
dtype name.
"""
from __future__ import annotations

import numpy as np

__all__ = ["ELEMENTWISE", "LAYOUT", "UNSUPPORTED", "CTYPES", "render_op"]

#: dtype name -> C type.
CTYPES = {"float32": "float", "float64": "double", "int32": "int", "int64": "long long",
          "bool": "bool"}


def _cast(args, attrs, dtype):
    return f"(({CTYPES[np.dtype(attrs['dtype']).name]})({args[0]}))"


def _compare(symbol: str) -> str:
    return f"({{0}} {symbol} {{1}})"


#: Elementwise op name -> CUDA C spelling.
ELEMENTWISE = {
    "neg": "(-{0})",
    "abs": "fabs({0})",
    "sign": "(({0} > 0) - ({0} < 0))",
    "exp": "exp({0})",
    "log": "log({0})",
    "sqrt": "sqrt({0})",
    "sigmoid": "({0} >= 0 ? 1 / (1 + exp(-{0})) : exp({0}) / (1 + exp({0})))",
    "tanh": "tanh({0})",
    "relu": "(!({0} <= 0) ? {0} : 0)",
    "erf": "erf({0})",
    "sin": "sin({0})",
    "cos": "cos({0})",
    "cast": _cast,
    # bounds cast to the operand's type (fmax(float, double) picks a host overload);
    # fmin/fmax drop NaN, NumPy keeps it
    "clamp": "({0} != {0} ? {0} : fmin(fmax({0}, (decltype({0}))({min})), "
             "(decltype({0}))({max})))",
    "add": "({0} + {1})",
    "sub": "({0} - {1})",
    "mul": "({0} * {1})",
    "div": "({0} / {1})",
    "pow": "pow({0}, {1})",
    # NaN-aware, like NumPy: a NaN on either side wins (C's fmax does not).
    "maximum": "(({0} > {1} || {0} != {0}) ? {0} : {1})",
    "minimum": "(({0} < {1} || {0} != {0}) ? {0} : {1})",
    "eq": _compare("=="),
    "ne": _compare("!="),
    "lt": _compare("<"),
    "le": _compare("<="),
    "gt": _compare(">"),
    "ge": _compare(">="),
    "logical_and": "({0} && {1})",
    "logical_or": "({0} || {1})",
    "logical_not": "(!{0})",
    "where": "({0} ? {1} : {2})",
    "copy": "{0}",
    "detach": "{0}",
}

#: Layout step -> spelling in a CuPy host driver (views of device arrays).
LAYOUT = {
    "reshape": "cupy.ascontiguousarray({src}).reshape({arg})",
    "permute": "{src}.transpose({arg})",
    "expand": "cupy.broadcast_to({src}, {arg})",
}

#: Ops a CUDA backend will not generate (yet), and why.
UNSUPPORTED = {
    "matmul": "the kernel library has no CUDA GEMM yet",
    "argmax": "it returns an index, not an accumulated value (no Op.reduction)",
    "argmin": "it returns an index, not an accumulated value (no Op.reduction)",
    "getitem": "indexing is not generated yet",
    "getitem_grad": "scatter-add (the gradient of indexing) is not generated yet",
    "setitem": "indexed writes are not generated yet",
    "cat": "concatenation is not generated yet",
    "stack": "stacking is not generated yet",
    "to_device": "a device copy is never compiled",
    "conv2d": "the kernel library has no CUDA convolution yet",
    "max_pool2d": "the kernel library has no CUDA pooling yet",
    "conv2d_input_grad": "a gradient row: backward runs eagerly (it is not generated)",
    "conv2d_weight_grad": "a gradient row: backward runs eagerly (it is not generated)",
    "max_pool2d_grad": "a gradient row: backward runs eagerly (it is not generated)",
}


def render_op(name: str, args: list, attrs: dict, dtype: str) -> str:
    """The CUDA C spelling of elementwise op ``name`` over ``args`` (attributes already
    spelled as C literals)."""
    spelling = ELEMENTWISE[name]
    if callable(spelling):
        return spelling(args, attrs, dtype)
    return spelling.format(*args, **attrs)
