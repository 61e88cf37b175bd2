"""Elementwise rows of the op table: unary math, binary arithmetic, comparisons.

Every row here is ``Kind.ELEMENTWISE``: output element i depends only on
input element i after broadcasting. How each backend spells these ops as scalar
expressions lives in the backend (``fusionnet/codegen/numba/emitters.py``,
``fusionnet/codegen/cuda/spellings.py``); the rows keep what the ops mean, including
the facts the passes read (``neutral`` elements, ``same_type_is_identity``). Gradient
rules are written with Tensor methods, which themselves go through this table.
"""
from __future__ import annotations

import math

import numpy as np

from .registry import (SAVES_INPUTS, SAVES_NONE, SAVES_OTHERS, SAVES_OUTPUT, Kind, Op,
                       register)
from .rules import bool_dtype, broadcast, float_dtype, same_dtype, same_shape

E = Kind.ELEMENTWISE


def _unary(name, eager, grad, doc, *, saves=SAVES_INPUTS, dtype=same_dtype, refuses_bool=""):
    # Float math converts bool inputs to float32 first (eager and generated code alike).
    bools = "float32" if dtype is float_dtype else None
    return register(Op(name, E, 1, eager, same_shape, dtype, grad, doc, saves=saves,
                       bools_as=bools, refuses_bool=refuses_bool))


def _binary(name, eager, grad, doc, *, saves=SAVES_INPUTS, dtype=same_dtype, neutral=None,
            refuses_bool=""):
    bools = "float32" if dtype is float_dtype else None
    return register(Op(name, E, 2, eager, broadcast, dtype, grad, doc, saves=saves,
                       promote=(0, 1), neutral=neutral or {}, bools_as=bools,
                       refuses_bool=refuses_bool))


def _float_in(a):
    """Bools as float32 first: NumPy would pick its float16 loop for exp(bool)."""
    return a.astype("float32") if a.dtype.kind == "b" else a


def _sigmoid(xp, a):
    # Stable in float32 at both ends (the tanh form loses everything below ~1e-7).
    a = _float_in(a)
    e = xp.exp(-xp.abs(a))
    return xp.where(a >= 0, 1 / (1 + e), e / (1 + e))


def _special(xp):
    """scipy.special for NumPy arrays, cupyx.scipy.special for CuPy arrays (loaded lazily)."""
    if xp is np:
        import scipy.special  # noqa: PLC0415 - only ops that need it pay for the import
        return scipy.special
    import cupyx.scipy.special  # noqa: PLC0415
    return cupyx.scipy.special


# ---- unary math -------------------------------------------------------------------------

_unary("neg", lambda xp, a: xp.negative(a), lambda g, x, **_: (-g,),
       "negation -x", saves=SAVES_NONE)
_unary("abs", lambda xp, a: xp.abs(a), lambda g, x, **_: (g * x.sign(),),
       "absolute value",  # PyTorch has no abs kernel for bool ("abs_cpu" not implemented)
       refuses_bool="abs is not implemented for bool tensors")


def _sign_eager(xp, a):
    if a.dtype.kind == "b":
        return a.copy()
    out = xp.sign(a)
    if a.dtype.kind == "f":  # PyTorch: sign(NaN) is 0 (where: 0-d inputs give scalars)
        out = xp.where(xp.isnan(a), xp.zeros((), a.dtype), out)
    return out


def _zero_grad(g, x, **_):
    # Exact zeros even where g is inf or NaN (g * 0 would give NaN there), as PyTorch.
    return ((g != g).logical_and(g == g).to(g.dtype),)


_unary("sign", _sign_eager, _zero_grad,
       "sign: -1, 0 or 1; NaN gives 0 (as PyTorch); its gradient is zero", saves=SAVES_NONE)
_unary("exp", lambda xp, a: xp.exp(_float_in(a)), lambda g, x, out, **_: (g * out,),
       "e to the x", saves=SAVES_OUTPUT, dtype=float_dtype)
_unary("log", lambda xp, a: xp.log(_float_in(a)), lambda g, x, **_: (g / x,),
       "natural logarithm", dtype=float_dtype)
_unary("sqrt", lambda xp, a: xp.sqrt(_float_in(a)), lambda g, x, out, **_: (g * 0.5 / out,),
       "square root", saves=SAVES_OUTPUT, dtype=float_dtype)
_unary("sigmoid", _sigmoid,
       lambda g, x, out, **_: (g * out * (1 - out),),
       "logistic sigmoid 1 / (1 + e^-x)", saves=SAVES_OUTPUT, dtype=float_dtype)
_unary("tanh", lambda xp, a: xp.tanh(_float_in(a)), lambda g, x, out, **_: (g * (1 - out * out),),
       "hyperbolic tangent", saves=SAVES_OUTPUT, dtype=float_dtype)
# The gradient reads the output (relu(x) > 0 exactly where x > 0), as PyTorch's does:
# so relu_ on a tensor that autograd needs still trains.
def _relu_grad(g, x, out, **_):
    # PyTorch's threshold_backward: the gradient passes unless the result is <= 0, so a
    # NaN input passes it and a NaN gradient at a clipped element gives 0, not NaN.
    return (g.where((out <= 0).logical_not(), 0.0),)


_unary("relu", lambda xp, a: xp.maximum(a, 0).astype(a.dtype, copy=False), _relu_grad,
       "max(x, 0); NaN stays NaN", saves=SAVES_OUTPUT)
_unary("erf", lambda xp, a: _special(xp).erf(_float_in(a)),
       lambda g, x, **_: (g * (2 / math.sqrt(math.pi)) * (-(x * x)).exp(),),
       "Gauss error function (for exact GELU)", dtype=float_dtype)


_unary("sin", lambda xp, a: xp.sin(_float_in(a)), lambda g, x, **_: (g * x.cos(),),
       "sine", dtype=float_dtype)
_unary("cos", lambda xp, a: xp.cos(_float_in(a)), lambda g, x, **_: (-(g * x.sin()),),
       "cosine", dtype=float_dtype)


def _cast_grad(g, x, dtype, **_):
    return (g.to(x.dtype) if x.dtype.is_floating_point else None,)


register(Op("cast", E, 1, lambda xp, a, dtype: a.astype(dtype), same_shape,
            lambda d, dtype: np.dtype(dtype), _cast_grad, "convert to another dtype",
            saves=SAVES_NONE, same_type_is_identity=True))


def _clamp_eager(xp, a, min=None, max=None):  # noqa: A002 - PyTorch's keyword names
    out = a
    if min is not None:
        out = xp.maximum(out, xp.asarray(min, dtype=a.dtype))
    if max is not None:
        out = xp.minimum(out, xp.asarray(max, dtype=a.dtype))
    return out if out is not a else a.copy()


def _clamp_grad(g, x, min=None, max=None, **_):  # noqa: A002
    inside = x == x  # all True, same shape; narrowed by each bound
    if min is not None:
        inside = inside.logical_and(x >= min)
    if max is not None:
        inside = inside.logical_and(x <= max)
    return (g * inside,)


register(Op("clamp", E, 1, _clamp_eager, same_shape, same_dtype, _clamp_grad,
            "clamp(x, min, max); attributes min and max may be None"))

# ---- binary arithmetic ------------------------------------------------------------------

_binary("add", lambda xp, a, b: xp.add(a, b), lambda g, a, b, **_: (g, g),
        "a + b", saves=SAVES_NONE, neutral={0: -0.0, 1: -0.0})  # -0.0 + 0.0 is +0.0
_binary("sub", lambda xp, a, b: xp.subtract(a, b), lambda g, a, b, **_: (g, -g),
        "a - b", saves=SAVES_NONE, neutral={1: 0},
        refuses_bool="subtraction with a bool tensor is not supported (PyTorch's rule); use "
                     "~ or logical_not() to invert a mask")
_binary("mul", lambda xp, a, b: xp.multiply(a, b), lambda g, a, b, **_: (g * b, g * a),
        "a * b", saves=SAVES_OTHERS, neutral={0: 1, 1: 1})


def _div_grad(g, a, b, needs=(True, True), **_):
    ga = g / b if needs[0] else None
    # PyTorch's grouping, -g * ((a / b) / b): no b * b to overflow, and the same rounding
    gb = -g * ((a / b) / b) if needs[1] else None
    return ga, gb


def _div_saves(needs):
    # a's gradient reads b; b's reads both. So `x /= 2` on a tensor that
    # requires grad stays legal, as in PyTorch.
    return ((0, 1) if needs[1] else (1,) if needs[0] else ()), False


_binary("div", lambda xp, a, b: xp.true_divide(_float_in(a), _float_in(b)), _div_grad,
        "true division a / b (integers give float32)", saves=_div_saves, dtype=float_dtype,
        neutral={1: 1})


def _pow_grad(g, a, b, out=None, needs=(True, True), **_):
    ga = g * b * a ** (b - 1) if needs[0] else None
    gb = g * out * a.log() if needs[1] else None
    return ga, gb


def _pow_saves(needs):
    return (0, 1), needs[1]


_binary("pow", lambda xp, a, b: xp.power(a, b), _pow_grad,
        "a ** b", saves=_pow_saves)


def _minmax_grad(first_wins):
    def grad(g, a, b, **_):
        # Ties split the gradient evenly, as PyTorch does.
        win_a = (a > b) if first_wins else (a < b)
        share_a = win_a + (a == b) * 0.5
        return g * share_a, g * (1 - share_a)
    return grad


_binary("maximum", lambda xp, a, b: xp.maximum(a, b), _minmax_grad(True),
        "elementwise maximum (NaN propagates)")
_binary("minimum", lambda xp, a, b: xp.minimum(a, b), _minmax_grad(False),
        "elementwise minimum (NaN propagates)")

# ---- comparisons and logic (not differentiable; give bool) ------------------------------

for _name, _fn, _sym in [("eq", np.equal, "=="), ("ne", np.not_equal, "!="),
                         ("lt", np.less, "<"), ("le", np.less_equal, "<="),
                         ("gt", np.greater, ">"), ("ge", np.greater_equal, ">=")]:
    _binary(_name, (lambda ufunc: lambda xp, a, b: getattr(xp, ufunc)(a, b))(_fn.__name__),
            None, f"a {_sym} b (bool result)", saves=SAVES_NONE, dtype=bool_dtype)

_binary("logical_and", lambda xp, a, b: xp.logical_and(a, b), None, "a and b (bool)",
        saves=SAVES_NONE, dtype=bool_dtype)
_binary("logical_or", lambda xp, a, b: xp.logical_or(a, b), None, "a or b (bool)",
        saves=SAVES_NONE, dtype=bool_dtype)
_unary("logical_not", lambda xp, a: xp.logical_not(a), None, "not a (bool)",
       saves=SAVES_NONE, dtype=bool_dtype)


def _where_grad(g, cond, a, b, **_):
    zero = g * 0
    return None, g.where(cond, zero), zero.where(cond, g)


def _where_dtype(cond, a, b, **_):
    return a


register(Op("where", E, 3, lambda xp, c, a, b: xp.where(c, a, b), broadcast, _where_dtype,
            _where_grad, "where(cond, a, b): a where cond is true, else b",
            saves=lambda needs: ((0,), False), promote=(1, 2)))
