"""How CUDA C spells each elementwise op, the layout steps and the GEMMs: the tables the
CUDA backend renders from (``kernels.py``) and ``Backend.supports`` answers from.

A spelling is a format string over ``{0}``, ``{1}``, ... (attributes by name, e.g.
``{min}``) or a function ``(arg_vars, attrs, dtype) -> str`` with ``dtype`` the result's
dtype name. Numeric attributes reach a spelling already spelled by :func:`literal` in the
first operand's dtype (eager converts them the same way), and every op's result is
converted to its node's dtype by :func:`convert` afterwards, as eager rounds every
intermediate: the same contract as the numba backend's ``emitters.py``.

C leaves signed overflow undefined and NumPy wraps, so signed integer ``+ - *`` and
negation are spelled in ``unsigned long long`` and converted back (:func:`wrapping`): the
low bits are NumPy's result. ``tests/test_cuda_templates.py`` compiles every spelling per
dtype with ``nvcc``; ``tests/test_cuda_emulation.py`` runs them on the CPU.

Nothing here imports CuPy.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from ..lower import Unsupported

__all__ = ["ELEMENTWISE", "LAYOUT", "GEMM", "UNSUPPORTED", "CTYPES", "ACC_CTYPES", "render_op",
           "literal", "convert", "ctype", "wrapping"]

#: dtype name -> C type.
CTYPES = {"float32": "float", "float64": "double", "int32": "int", "int64": "long long",
          "bool": "bool"}
#: Accumulator dtype of a reduction or GEMM over elements of a dtype kind, as the numba
#: backend accumulates (the row's ``Reduction`` facts are per accumulator dtype).
ACC_CTYPES = {"f": "float64", "i": "int64", "b": "int64", "u": "int64"}


def ctype(dtype) -> str:
    """The C type of ``dtype`` (a name or ``np.dtype``)."""
    name = np.dtype(dtype).name
    if name not in CTYPES:
        raise Unsupported(f"the CUDA backend has no C type for dtype {name}")
    return CTYPES[name]


def literal(value, dtype) -> str:
    """``value`` as a C expression of ``dtype``: the one place literals are spelled.

    Converted first as eager converts it (``np.asarray(value, dtype)``; a value that
    cannot be converted raises :class:`Unsupported`, so the block runs eagerly and raises
    there). inf and NaN are spelled by their bits (NVRTC has no ``INFINITY`` macro without
    headers), floats by their shortest round-trip text, which keeps ``-0.0``."""
    dt = np.dtype(dtype)
    try:
        with np.errstate(over="ignore"):
            v = np.asarray(value, dtype=dt).item()
    except (OverflowError, ValueError, TypeError) as err:
        raise Unsupported(f"the constant {value!r} cannot be converted to {dt.name}: "
                          f"{err}") from err
    if dt.kind == "b":
        return "true" if v else "false"
    if dt.kind in "iu":
        if v == np.iinfo(np.int64).min:  # the literal 9223372036854775808 does not fit
            return "(-9223372036854775807LL - 1)"
        return f"(({ctype(dt)}){int(v)}LL)"
    if math.isnan(v) or math.isinf(v):
        if dt == np.float32:
            bits = struct.unpack("<i", struct.pack("<f", v))[0]
            return f"__int_as_float({bits})"
        bits = struct.unpack("<q", struct.pack("<d", v))[0]
        return f"__longlong_as_double({bits}LL)"
    return f"(({ctype(dt)}){float(v)!r})"


def convert(expr: str, dtype) -> str:
    """``expr`` as a value of ``dtype``: the one place conversions are spelled."""
    return f"(({ctype(dtype)})({expr}))"


def wrapping(template: str, int_template: str):
    """``template``, or ``int_template`` (computing in ``unsigned long long``) when the
    result is a signed integer, so that it wraps around as NumPy's does."""
    def spell(args, attrs, dtype):
        chosen = int_template if np.dtype(dtype).kind == "i" else template
        return chosen.format(*args)
    return spell


def _u64(expr: str) -> str:
    return f"((unsigned long long)({expr}))"


def _wrapping_binary(symbol: str):
    return wrapping(f"({{0}} {symbol} {{1}})", f"({_u64('{0}')} {symbol} {_u64('{1}')})")


# NaN-aware, like NumPy: a NaN on either side wins; on a tie the second argument is kept.
# C's fmax/fmin do neither (they drop NaN).
_MAXIMUM = "(({0} > {1} || {0} != {0}) ? {0} : {1})"
_MINIMUM = "(({0} < {1} || {0} != {0}) ? {0} : {1})"


def _clamp(args, attrs, dtype):
    # np.maximum then np.minimum, as eager does; a missing bound is left out.
    expr = args[0]
    if attrs.get("min") is not None:
        expr = _MAXIMUM.format(f"({expr})", attrs["min"])
    if attrs.get("max") is not None:
        expr = _MINIMUM.format(f"({expr})", attrs["max"])
    return expr


def _cast(args, attrs, dtype):
    return convert(args[0], attrs["dtype"])


def _is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def _abs(args, attrs, dtype):
    return f"fabs({args[0]})" if _is_float(dtype) else f"(({args[0]}) < 0 ? -({args[0]}) : ({args[0]}))"


def _sign(args, attrs, dtype):
    x = args[0]
    sign = f"(({x} > 0) - ({x} < 0))"
    return f"({x} != {x} ? {x} : {sign})" if _is_float(dtype) else sign


def _pow(args, attrs, dtype):
    # Integers: square and multiply in unsigned long long, the low bits NumPy keeps (a
    # negative exponent gives 0 here; eager raises ValueError: a known difference).
    if np.dtype(dtype).kind in "iub":
        return f"fn_ipow({args[0]}, {args[1]})"
    if attrs.get("single_element", (False, False))[1]:
        # As eager's NumPy: a single-element exponent of 0.5 is a square root
        # (sqrt(-inf) is nan where pow(-inf, 0.5) is inf).
        return f"({args[1]} == 0.5 ? sqrt({args[0]}) : pow({args[0]}, {args[1]}))"
    return f"pow({args[0]}, {args[1]})"


def _div(args, attrs, dtype):
    # True division, as eager: integer operands are divided as doubles (C would truncate).
    return f"((double)({args[0]}) / (double)({args[1]}))" if not _is_float(dtype) or \
        attrs.get("_int_operands") else f"({args[0]} / {args[1]})"


def _compare(symbol: str) -> str:
    return f"({{0}} {symbol} {{1}})"


#: Elementwise op name -> CUDA C spelling.
ELEMENTWISE = {
    "neg": wrapping("(-{0})", f"(0ULL - {_u64('{0}')})"),
    "abs": _abs,
    "sign": _sign,
    "exp": "exp({0})",
    "log": "log({0})",
    "sqrt": "sqrt({0})",
    # The stable form eager uses: exp(-x) of a very negative x overflows, so split.
    "sigmoid": "({0} >= 0 ? 1 / (1 + exp(-{0})) : exp({0}) / (1 + exp({0})))",
    "tanh": "tanh({0})",
    "relu": "(!({0} <= 0) ? {0} : 0)",
    "erf": "erf({0})",
    "sin": "sin((double)({0}))",
    "cos": "cos((double)({0}))",
    "cast": _cast,
    "clamp": _clamp,
    "add": _wrapping_binary("+"),
    "sub": _wrapping_binary("-"),
    "mul": _wrapping_binary("*"),
    "div": _div,
    "pow": _pow,
    "maximum": _MAXIMUM,
    "minimum": _MINIMUM,
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

#: Layout step -> spelling in the CuPy host runner (views of device arrays; ``runner.py``
#: builds them once per plan, a reshape of a non-contiguous array copies first).
LAYOUT = {
    "reshape": "cupy.ascontiguousarray({src}).reshape({arg})",
    "permute": "{src}.transpose({arg})",
    "expand": "cupy.broadcast_to({src}, {arg})",
}

#: Matmul op -> how it is computed: cuBLAS (``cupy.matmul``) plus an epilogue kernel, or a
#: tiled kernel with the epilogue fused where cuBLAS cannot be used (graph capture).
GEMM = {"matmul": "cublas_or_tiled"}

#: Ops the CUDA backend does not generate (yet), and why.
UNSUPPORTED = {
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

#: Device helpers some spellings call, emitted once at the top of every module.
PRELUDE = r"""
__device__ __forceinline__ unsigned long long fn_ipow(long long a, long long b) {
    unsigned long long base = (unsigned long long)a, result = 1ULL;
    if (b < 0) return 0ULL;
    while (b > 0) { if (b & 1) result *= base; base *= base; b >>= 1; }
    return result;
}
"""


def render_op(name: str, args: list, attrs: dict, dtype: str,
              operand_dtype: str | None = None) -> str:
    """The CUDA C spelling of elementwise op ``name`` over ``args`` (attributes already
    spelled as C literals), before the conversion to ``dtype``. ``operand_dtype`` (the
    first operand's dtype) tells true division of integers apart."""
    spelling = ELEMENTWISE.get(name)
    if spelling is None:
        raise Unsupported(f"the CUDA backend has no spelling for elementwise op {name!r}")
    if callable(spelling):
        if name == "div" and operand_dtype is not None and np.dtype(operand_dtype).kind != "f":
            attrs = dict(attrs, _int_operands=True)
        return spelling(args, attrs, dtype)
    return spelling.format(*args, **attrs)
