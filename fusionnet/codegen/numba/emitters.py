"""How numba spells things: the table from op name to a scalar expression, the layout
steps, the GEMM kernels, and the one place literals and conversions are spelled.

An elementwise spelling is a format string over ``{0}``, ``{1}``, ... (the operands'
element values; attributes by name, e.g. ``{min}``) or, where a string cannot say it, a
function ``(arg_vars, attrs, dtype) -> str`` with ``dtype`` the result's dtype name.
Scalar attributes reach a spelling already spelled by :func:`literal` as literals of the
first operand's dtype (eager converts them the same way), so a spelling never formats a
number itself. Every op's result is converted to the node's dtype by :func:`convert`
afterwards, as eager rounds every intermediate.

numba marks signed integer ``+ - *`` "no signed wrap", which lets LLVM assume they never
overflow (it folds ``x + 1 > x`` to True); NumPy wraps around. Integer arithmetic that
must wrap is therefore spelled with :func:`wrapping`: in ``np.uint64``, whose arithmetic
wraps, and converted back to the signed dtype, keeping the low bits: NumPy's result.

Nothing here imports numba: the tables are plain data that ``Backend.supports`` reads.
"""
from __future__ import annotations

import math

import numpy as np

from ..lower import Unsupported

__all__ = ["ELEMENTWISE", "LAYOUT", "GEMM", "UNSUPPORTED", "INDEX_OF", "literal", "convert", "wrapping",
           "render_op", "render_layout", "dims"]


def literal(value, dtype) -> str:
    """``value`` as numba source for a scalar of ``dtype``: the one place literals are spelled.

    The value is first converted as eager converts it (``np.asarray(value, dtype)``: a
    float bound of an integer tensor truncates, an out-of-range or non-finite one raises,
    which becomes :class:`Unsupported` so the block runs eagerly and raises there). inf,
    nan and -0.0 are spelled so that numba reads them back exactly."""
    dt = np.dtype(dtype)
    try:
        with np.errstate(over="ignore"):  # eager converted it too, and warned if it overflowed
            v = np.asarray(value, dtype=dt).item()
    except (OverflowError, ValueError, TypeError) as err:
        raise Unsupported(f"the constant {value!r} cannot be converted to {dt.name}: "
                          f"{err}") from err
    if dt.kind == "b":
        return "True" if v else "False"
    if dt.kind in "iu":
        return f"np.{dt.name}({int(v)})"
    if math.isnan(v):
        text = "np.nan"
    elif math.isinf(v):
        text = "np.inf" if v > 0 else "-np.inf"
    else:
        text = repr(float(v))  # shortest round-trip text; keeps the sign of -0.0
    return f"np.{dt.name}({text})"


def convert(expr: str, dtype) -> str:
    """``expr`` as a scalar of ``dtype``: the one place conversions are spelled (the result
    of every op, a ``cast``, and the casts of type promotion)."""
    dt = np.dtype(dtype)
    return f"bool({expr})" if dt.kind == "b" else f"np.{dt.name}({expr})"


def wrapping(template: str, int_template: str):
    """A spelling that is ``template``, or ``int_template`` (computing in ``np.uint64``)
    when the result is a signed integer, so that it wraps around as NumPy's does."""
    def spell(args, attrs, dtype):
        chosen = int_template if np.dtype(dtype).kind == "i" else template
        return chosen.format(*args)
    return spell


def _u64(expr: str) -> str:
    return f"np.uint64({expr})"


def _wrapping_binary(symbol: str):
    return wrapping(f"({{0}} {symbol} {{1}})", f"({_u64('{0}')} {symbol} {_u64('{1}')})")


# NaN-aware, like NumPy: a NaN on either side wins; on a tie the second argument is kept
# (np.maximum(-0.0, 0.0) is 0.0). Python's max() and C's fmax do neither.
_MAXIMUM = "({0} if ({0} > {1} or {0} != {0}) else {1})"
_MINIMUM = "({0} if ({0} < {1} or {0} != {0}) else {1})"


def _clamp(args, attrs, dtype):
    # np.maximum then np.minimum, as eager. A missing bound is left out.
    expr = args[0]
    if attrs.get("min") is not None:
        expr = _MAXIMUM.format(expr, attrs["min"])
    if attrs.get("max") is not None:
        expr = _MINIMUM.format(expr, attrs["max"])
    return expr


def _pow(args, attrs, dtype):
    if np.dtype(dtype).kind in "iu":  # raises on negative exponents, as NumPy does
        return f"int_pow({args[0]}, {args[1]})"
    if attrs.get("single_element", (False, False))[1]:
        # NumPy (and PyTorch) take the square root for a single-element exponent of 0.5:
        # sqrt(-inf) is nan where C's pow(-inf, 0.5) is inf.
        return f"(math.sqrt({args[0]}) if {args[1]} == 0.5 else {args[0]} ** {args[1]})"
    return f"({args[0]} ** {args[1]})"


#: Elementwise op name -> numba spelling.
ELEMENTWISE = {
    "neg": wrapping("(-{0})", f"(np.uint64(0) - {_u64('{0}')})"),
    "abs": "abs({0})",
    "sign": "(({0} > 0) - ({0} < 0))",
    # In double, then rounded once (convert): numba types math.exp of a float32 as
    # float32 (expf), whose last bit is off for a tenth to a third of inputs; the double
    # result rounded is the correctly rounded float32 but for rare double roundings.
    # Eager's NumPy float32 SIMD loops are within 1 ulp of it (docs/fuzzing.md).
    "exp": "math.exp(np.float64({0}))",
    "log": "math.log(np.float64({0}))",
    "sqrt": "math.sqrt({0})",
    # The stable form eager uses (kernels/numba_kernels.py: stable_sigmoid); the tanh form
    # underflows to 0 below about -37, so log(sigmoid(x)) became -inf.
    "sigmoid": "stable_sigmoid({0})",
    "tanh": "math.tanh(np.float64({0}))",
    "relu": "({0} if not ({0} <= 0) else 0)",
    "erf": "math.erf(np.float64({0}))",
    "sin": "math.sin(np.float64({0}))",
    "cos": "math.cos(np.float64({0}))",
    "cast": "{0}",  # the conversion itself is convert(), applied to every op's result
    "clamp": _clamp,
    "add": _wrapping_binary("+"),
    "sub": _wrapping_binary("-"),
    "mul": _wrapping_binary("*"),
    "div": "({0} / {1})",
    "pow": _pow,
    "maximum": _MAXIMUM,
    "minimum": _MINIMUM,
    "eq": "({0} == {1})",
    "ne": "({0} != {1})",
    "lt": "({0} < {1})",
    "le": "({0} <= {1})",
    "gt": "({0} > {1})",
    "ge": "({0} >= {1})",
    "logical_and": "({0} and {1})",
    "logical_or": "({0} or {1})",
    "logical_not": "(not {0})",
    "where": "({1} if {0} else {2})",
    "copy": "{0}",
    "detach": "{0}",
}

#: ``Op.index_of`` -> the NumPy function numba compiles for it (first index, NaN-aware).
INDEX_OF = {"max": "np.argmax", "min": "np.argmin"}

#: Layout step -> numba spelling in the driver (NumPy views; ``{arg}`` is a shape or dims).
LAYOUT = {
    "reshape": "np.ascontiguousarray({src}).reshape({arg})",
    "permute": "{src}.transpose({arg})",
    "expand": "np.broadcast_to({src}, {arg})",
}


def _dot_call(g: dict, dtype: str) -> str:
    # Integer and bool products wrap around as NumPy's do (uint64 loops); floats use BLAS.
    fn = "dot" + ("_nt" if g["transposed"] else "_nn") + (
        "" if np.dtype(dtype).kind == "f" else "_int")
    # A transposed left operand (x.T @ w, every weight gradient): BLAS reads the transposed
    # view of a contiguous array in place (its F layout); copying it first cost 10x the
    # product for a (4096, 256) activation. The integer loops copy (they index a[i, k]).
    if not g.get("a_transposed"):
        a = g["a"]
    elif np.dtype(dtype).kind == "f":
        a = f"np.ascontiguousarray({g['a']}).T"
    else:
        a = f"np.ascontiguousarray({g['a']}.T)"
    out, a_rank, b_rank = g["ranks"]
    b = g["b"]
    if (out, a_rank, b_rank) == (2, 2, 2):
        return f"{fn}({a}, {b}, out)"
    # Other ranks are 2-D products of reshaped operands (NumPy's matmul rules): stacked
    # rows (a batch of matrices times one matrix) are one product; a vector is a matrix
    # of one row or column; a batch times a batch is one product per matrix (a batch of
    # one broadcast). ``matmul_ranks_supported`` says which ranks come here.
    if a_rank == 3 and b_rank == 3:
        pick_a = f"np.ascontiguousarray({a}[min(i, {a}.shape[0] - 1)])"
        pick_b = f"np.ascontiguousarray({b}[min(i, {b}.shape[0] - 1)])"
        return (f"for i in range(out.shape[0]):\n"
                f"        {fn}({pick_a}, {pick_b}, out[i])")
    a2 = f"np.ascontiguousarray({a})" + (
        "" if a_rank == 2 else f".reshape(-1, {a}.shape[-1])")
    b2 = f"np.ascontiguousarray({b})" + (".reshape(-1, 1)" if b_rank == 1 else "")
    out2 = "out.reshape(-1, 1)" if b_rank == 1 else "out.reshape(-1, out.shape[-1])"
    return f"{fn}({a2}, {b2}, {out2})"


def matmul_ranks_supported(ranks) -> bool:
    """Whether ``_dot_call`` generates a matmul of these (output, a, b) ranks: 2-D, a
    stack of matrices or a vector times a matrix or a vector, a batch of matrices times
    a batch (3-D)."""
    out, a_rank, b_rank = ranks
    return b_rank in (1, 2) or (a_rank, b_rank) == (3, 3)


def _conv_call(g: dict, dtype: str) -> str:
    at = g["attrs"]
    (sh, sw), (ph, pw), (dh, dw) = at["stride"], at["padding"], at["dilation"]
    x, w = g["args"]
    return f"conv2d_nchw({x}, {w}, out, {sh}, {sw}, {ph}, {pw}, {dh}, {dw}, {at['groups']})"


def _pool_call(g: dict, dtype: str) -> str:
    at = g["attrs"]
    (kh, kw), (sh, sw) = at["kernel_size"], at["stride"]
    (ph, pw), (dh, dw) = at["padding"], at["dilation"]
    return (f"max_pool2d_nchw({g['args'][0]}, out, {kh}, {kw}, {sh}, {sw}, {ph}, {pw}, "
            f"{dh}, {dw})")


#: Matmul-kind op -> how its native kernel is called (``(gemm facts, result dtype) ->
#: source`` writing into ``out``): the kernel-library GEMMs (``dot_nt``/``dot_nn``,
#: ``_int`` variants), convolution and max pooling. A fused epilogue then runs on ``out``.
GEMM = {"matmul": _dot_call, "conv2d": _conv_call, "max_pool2d": _pool_call}

#: The ranks (output first, then each operand) each GEMM kernel is generated for.
GEMM_RANKS = {"matmul": (2, 2, 2), "conv2d": (4, 4, 4), "max_pool2d": (4, 4)}

#: Ops numba does not generate, and why (they run eagerly: ``fuse`` falls back).
UNSUPPORTED = {
    "to_device": "a device copy is never compiled",
    "conv2d_input_grad": "a gradient row: backward runs eagerly (it is not generated)",
    "conv2d_weight_grad": "a gradient row: backward runs eagerly (it is not generated)",
    "max_pool2d_grad": "a gradient row: backward runs eagerly (it is not generated)",
}


def _is_number(value) -> bool:
    return isinstance(value, (bool, int, float, np.number, np.bool_))


def render_op(name: str, attrs: dict, args: list, dtype: str, operand_dtype: str) -> str:
    """The spelling of elementwise op ``name`` over ``args`` (variable names), before the
    conversion to ``dtype``; numeric attributes become literals of ``operand_dtype``."""
    spelling = ELEMENTWISE.get(name)
    if spelling is None:
        raise Unsupported(f"numba has no spelling for elementwise op {name!r}")
    spelled = {k: literal(v, operand_dtype) if _is_number(v) else v for k, v in attrs.items()}
    if callable(spelling):
        return spelling(args, spelled, dtype)
    return spelling.format(*args, **spelled)


def dims(shape) -> str:
    """A shape or dims tuple as source (``(3,)``, ``(B, 256)``)."""
    inner = ", ".join(str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def render_layout(step: str, src: str, arg) -> str:
    """A layout step applied to array ``src`` (a view in NumPy)."""
    spelling = LAYOUT.get(step)
    if spelling is None:
        raise Unsupported(f"numba has no spelling for layout step {step!r}")
    return spelling.format(src=src, arg=dims(tuple(arg)))
