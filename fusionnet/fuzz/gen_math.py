"""Generators for the math rows: unary and binary elementwise ops, comparisons, logic,
``where``, clamps and casts, reductions and matrix products.

Each writes the op the way users do, in one of several spellings (an operator, a
Tensor method, a ``torch.`` function, ``F.`` or an ``nn`` module), with operands drawn
from the pool, Python scalars, module constants, parameters, buffers or tensors made
inside forward.
"""
from __future__ import annotations

from .builder import DTYPE_SRC, Builder, generator
from .model import (Bat, Val, broadcast, is_float, is_int, promote, result_float)

__all__ = ["operand", "broadcastable_shape", "WIDTHS"]

#: Layer widths (1 included on purpose).
WIDTHS = (1, 1, 2, 3, 4, 5, 8, 16, 33)


def broadcastable_shape(b: Builder, shape: tuple) -> tuple:
    """A static shape that broadcasts against ``shape`` (a suffix with some dims 1)."""
    if not shape or b.chance(0.1):
        return ()
    n = b.rng.randint(1, len(shape))
    out = []
    for d in shape[len(shape) - n:]:
        out.append(1 if isinstance(d, Bat) or b.chance(0.3) else d)
    return tuple(out)


def _const_dtype(b: Builder, v: Val) -> str:
    if is_float(v.dtype):
        return v.dtype if b.chance(0.85) else b.choice(("float32", "float64"))
    if is_int(v.dtype):
        return "int64" if b.chance(0.85) else b.fdt
    return "bool" if b.chance(0.7) else "int64"


def _tuple_src(shape: tuple) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _fill_for(b: Builder, dtype: str) -> str:
    if dtype == "bool":
        return "True"
    return b.choice(["0.5", "-2.0", "3.0"]) if is_float(dtype) else b.int_literal()


def _forward_constant(b: Builder, v: Val, dtype: str) -> tuple[str, tuple, str]:
    """A tensor built inside forward (a literal constant node of the graph):
    ``(expr, shape, dtype)``."""
    shape = broadcastable_shape(b, v.shape)
    explicit = f", dtype={DTYPE_SRC[dtype]}"
    kw = "" if dtype == "float32" else explicit
    dims = ", ".join(map(str, shape))
    last = v.shape[-1] if v.shape else None
    r = b.rng.random()
    if r < 0.2 and shape:
        return f"torch.ones({dims}{kw})", shape, dtype
    if r < 0.35:
        return f"torch.full({_tuple_src(shape)}, {_fill_for(b, dtype)}{kw})", shape, dtype
    if r < 0.5 and isinstance(last, int) and dtype != "bool":
        return (f"torch.arange({last})" if dtype == "int64" else
                f"torch.arange({last}{explicit})"), (last,), dtype
    if r < 0.6 and v.ndim >= 2 and last == v.shape[-2] and isinstance(last, int) \
            and dtype != "bool":
        return f"torch.eye({last}{kw})", (last, last), dtype
    if r < 0.75:
        like = b.choice(["zeros_like", "ones_like", "full_like"])
        if like == "full_like":
            return (f"torch.full_like({v.name}, {_fill_for(b, v.dtype)})", v.shape, v.dtype)
        return f"torch.{like}({v.name})", v.shape, v.dtype
    if r < 0.82 and v.shape and v.shape[0] == Bat(1):
        # Reads the batch size as a Python int: the compiled code must not bake it in.
        return f"torch.ones({v.name}.shape[0], 1{kw})", (Bat(1), 1), dtype
    return b.tensor_literal(shape, dtype), shape, dtype


def operand(b: Builder, v: Val, tensor_only: bool = False, allow_self: bool = True):
    """A second operand for ``v``: ``(expr, shape, dtype or None, scalar kind, grad)``.

    ``dtype`` is None for a Python scalar, whose kind ("int", "float") then decides the
    promotion (weak typing)."""
    r = b.rng.random()
    if r < 0.28 and not tensor_only:
        lit, kind = b.scalar_for(v)
        return lit, (), None, kind, False
    if r < 0.55:
        u = b.pick(lambda u: broadcast(u.shape, v.shape) is not None and u is not v
                   and (u.dtype != "bool" or v.dtype != "bool"))
        if u is not None:
            return u.name, u.shape, u.dtype, None, u.grad
    if r < 0.6 and allow_self:
        return v.name, v.shape, v.dtype, None, v.grad
    dtype = _const_dtype(b, v)
    r = b.rng.random()
    shape = broadcastable_shape(b, v.shape)
    dims = ", ".join(map(str, shape)) or "()"
    if r < 0.3 and is_float(dtype):
        scale = b.choice(["", " * 0.5", " * 0.1"])
        ref = b.attr("w", f"nn.Parameter(torch.randn({dims}{b.dtype_kw(dtype)}){scale})")
        return ref, shape, dtype, None, not b.no_grad
    if r < 0.45:
        rand = (f"torch.randn({dims}{b.dtype_kw(dtype)})" if is_float(dtype)
                else b.tensor_literal(shape, dtype))
        return b.buffer("buf", rand), shape, dtype, None, False
    if r < 0.7:
        return b.attr("c", b.tensor_literal(shape, dtype)), shape, dtype, None, False
    expr, shape, dtype = _forward_constant(b, v, dtype)
    return expr, shape, dtype, None, False


def _grad(*flags) -> bool:
    return any(flags)


# ---- unary ---------------------------------------------------------------------------

#: op -> spellings ({a} is the operand); float results for ints where the op is float-valued.
_UNARY = {
    "neg": ["-{a}", "{a}.neg()", "torch.neg({a})"],
    "abs": ["{a}.abs()", "torch.abs({a})", "abs({a})"],
    "sign": ["{a}.sign()", "torch.sign({a})"],
    "exp": ["{a}.exp()", "torch.exp({a})"],
    "log": ["{a}.log()", "torch.log({a})", "torch.log({a}.abs() + 0.001)"],
    "sqrt": ["{a}.sqrt()", "torch.sqrt({a})", "({a} * {a}).sqrt()"],
    "sigmoid": ["{a}.sigmoid()", "torch.sigmoid({a})", "F.sigmoid({a})", "@nn.Sigmoid()"],
    "tanh": ["{a}.tanh()", "torch.tanh({a})", "F.tanh({a})", "@nn.Tanh()"],
    "relu": ["{a}.relu()", "torch.relu({a})", "F.relu({a})", "@nn.ReLU()"],
    "erf": ["{a}.erf()", "torch.erf({a})"],
    "sin": ["{a}.sin()", "torch.sin({a})"],
    "cos": ["{a}.cos()", "torch.cos({a})"],
    "gelu": ["F.gelu({a})", 'F.gelu({a}, approximate="tanh")', "@nn.GELU()",
             '@nn.GELU(approximate="tanh")'],
}
_KEEPS_DTYPE = {"neg", "abs", "sign", "relu"}


def _spell(b: Builder, template: str, a: str) -> str:
    if template.startswith("@"):  # an nn module made in __init__
        return f"{b.attr('act', template[1:])}({a})"
    return template.format(a=a)


@generator("unary", ops=("neg", "abs", "sign", "exp", "log", "sqrt", "sigmoid", "tanh",
                         "relu", "erf", "sin", "cos", "mul", "add"), weight=6)
def unary(b: Builder) -> bool:
    """One unary math op (ints and bools where PyTorch accepts them)."""
    name = b.choice(list(_UNARY))
    ok = (lambda v: v.dtype != "bool") if name in _KEEPS_DTYPE else (
        lambda v: True if name not in ("gelu", "relu") else is_float(v.dtype))
    v = b.pick(ok)
    if v is None:
        return False
    if v.dtype == "bool" and name not in ("exp", "sigmoid", "tanh", "erf", "log", "sqrt"):
        return False
    dtype = v.dtype if name in _KEEPS_DTYPE else result_float(v.dtype)
    # abs() of a bool tensor raises, as in PyTorch: no spelling that calls it on one.
    spellings = [t for t in _UNARY[name] if v.dtype != "bool" or ".abs()" not in t]
    expr = _spell(b, b.choice(spellings), v.name)
    b.new(expr, v.shape, dtype, grad=v.grad)
    return True


@generator("softmax", ops=("max", "sub", "exp", "sum", "div", "log"), weight=1.5)
def softmax(b: Builder) -> bool:
    """softmax / log_softmax along a dimension."""
    v = b.pick(lambda v: is_float(v.dtype) and v.ndim >= 1)
    if v is None:
        return False
    d = b.rng.randrange(-v.ndim, v.ndim)
    form = b.choice(["F.softmax({a}, dim={d})", "{a}.softmax({d})", "@nn.Softmax(dim={d})",
                     "F.log_softmax({a}, dim={d})", "{a}.log_softmax({d})",
                     "@nn.LogSoftmax(dim={d})", "torch.exp(F.log_softmax({a}, {d}))"])
    if form.startswith("@"):
        expr = f"{b.attr('act', form[1:].format(d=d))}({v.name})"
    else:
        expr = form.format(a=v.name, d=d)
    b.new(expr, v.shape, v.dtype, grad=v.grad)
    return True


@generator("clamp", ops=("clamp",), weight=1.5)
def clamp(b: Builder) -> bool:
    """clamp / clip with one or two bounds."""
    v = b.pick(lambda v: v.dtype != "bool")
    if v is None:
        return False
    if is_float(v.dtype):
        lo, hi = sorted([b.choice([-2.0, -1.0, -0.5, 0.0, 0.25, 1.0, 3.0]) for _ in range(2)])
        lo, hi = repr(lo), repr(hi)
    else:
        lo, hi = sorted([b.rng.randint(-5, 5) for _ in range(2)])
        lo, hi = str(lo), str(hi)
    form = b.choice(["{a}.clamp(min={lo})", "{a}.clamp(max={hi})", "{a}.clamp({lo}, {hi})",
                     "torch.clamp({a}, {lo}, {hi})", "torch.clamp({a}, min={lo})",
                     "{a}.clip({lo}, {hi})"])
    b.new(form.format(a=v.name, lo=lo, hi=hi), v.shape, v.dtype, grad=v.grad)
    return True


@generator("cast", ops=("cast",), weight=2)
def cast(b: Builder) -> bool:
    """A dtype conversion (.float(), .double(), .long(), .int(), .bool(), .to(...))."""
    v = b.pick()
    if v is None:
        return False
    if is_float(v.dtype):
        choices = [("double", "float64"), ("float", "float32"), ("to64", "float64"),
                   ("long", "int64"), ("bool", "bool"), ("int", "int32")]
    elif is_int(v.dtype):
        choices = [("float", "float32"), ("double", "float64"), ("bool", "bool"),
                   ("int", "int32"), ("long", "int64")]
    else:
        choices = [("float", "float32"), ("long", "int64"), ("double", "float64"),
                   ("int", "int32")]
    how, dtype = b.choice(choices)
    src = v.name
    if is_float(v.dtype) and is_int(dtype):
        # Out-of-range float -> int conversions are undefined in C and in NumPy alike.
        src = f"{v.name}.clamp(-1000.0, 1000.0)"
    expr = {"double": f"{src}.double()", "float": f"{src}.float()", "long": f"{src}.long()",
            "bool": f"{src}.bool()", "int": f"{src}.int()",
            "to64": f"{src}.to(torch.float64)"}[how]
    if b.chance(0.2) and how in ("double", "float", "long"):
        expr = f"{src}.to({DTYPE_SRC[dtype]})"
    b.new(expr, v.shape, dtype, grad=v.grad and is_float(dtype),
          readonly=v.readonly and dtype == v.dtype)  # a cast to its own dtype is a no-op
    return True


# ---- binary --------------------------------------------------------------------------

_ARITH = ("add", "sub", "mul", "div", "pow", "maximum", "minimum")


def _arith_expr(b: Builder, op: str, a: str, o: str, scalar: bool, int_alpha: bool) -> str:
    if op == "add":
        alpha = "2" if int_alpha else "0.5"
        return b.choice([f"{a} + {o}", f"{o} + {a}", f"{a}.add({o})",
                         f"{a}.add({o}, alpha={alpha})"])
    if op == "sub":
        alpha = "3" if int_alpha else "2.0"
        return b.choice([f"{a} - {o}", f"{o} - {a}", f"{a}.sub({o})",
                         f"{a}.sub({o}, alpha={alpha})"])
    if op == "mul":
        return b.choice([f"{a} * {o}", f"{o} * {a}", f"{a}.mul({o})"])
    if op == "div":
        return b.choice([f"{a} / {o}", f"{o} / {a}", f"{a}.div({o})"])
    fn = "max" if op == "maximum" else "min"
    return b.choice([f"torch.{op}({a}, {o})", f"{a}.{op}({o})", f"torch.{fn}({a}, {o})"])


@generator("binary", ops=_ARITH, weight=7)
def binary(b: Builder) -> bool:
    """a (op) b with broadcasting, scalars on either side, promotion between dtypes."""
    op = b.choice(_ARITH)
    v = b.pick(lambda v: v.dtype != "bool")
    if v is None:
        return False
    if op == "pow":
        return _pow(b, v)
    expr_o, shape_o, dt_o, kind, grad_o = operand(b, v, tensor_only=op in ("maximum",
                                                                            "minimum"))
    shape = broadcast(v.shape, shape_o)
    if shape is None or not b.fits(shape):
        return False
    if op == "sub" and (dt_o == "bool" or kind == "bool"):
        return False  # PyTorch refuses subtraction with a bool
    dtype = promote(v.dtype, dt_o, kind, (v.shape, shape_o))
    if op == "div":
        dtype = result_float(dtype)
    int_alpha = not is_float(dtype)
    if op in ("maximum", "minimum") and dt_o != v.dtype and (dt_o == "bool"):
        return False
    b.new(_arith_expr(b, op, v.name, expr_o, dt_o is None, int_alpha), shape, dtype,
          grad=_grad(v.grad, grad_o))
    return True


def _pow(b: Builder, v: Val) -> bool:
    if is_int(v.dtype):
        e = b.choice(["0", "1", "2", "3", "2"])
        b.new(b.choice([f"{v.name} ** {e}", f"{v.name}.pow({e})", f"torch.pow({v.name}, {e})"]),
              v.shape, v.dtype)
        return True
    r = b.rng.random()
    if r < 0.6:
        e = b.choice(["2", "3", "0.5", "-1", "1.5", "2.0", "-0.5", "0"])
        expr = b.choice([f"{v.name} ** {e}", f"{v.name}.pow({e})", f"torch.pow({v.name}, {e})"])
        b.new(expr, v.shape, v.dtype, grad=v.grad)
    elif r < 0.75:
        base = b.choice(["2", "0.5", "2.0", "10.0"])
        b.new(f"{base} ** {v.name}", v.shape, v.dtype, grad=v.grad)
    else:
        expr_o, shape_o, dt_o, kind, grad_o = operand(b, v, tensor_only=True)
        shape = broadcast(v.shape, shape_o)
        if shape is None or not b.fits(shape) or dt_o == "bool":
            return False
        b.new(f"{v.name} ** {expr_o}", shape, promote(v.dtype, dt_o, kind, (v.shape, shape_o)),
              grad=_grad(v.grad, grad_o))
    return True


_CMP = {"eq": ["{a} == {o}", "{a}.eq({o})"], "ne": ["{a} != {o}"], "lt": ["{a} < {o}"],
        "le": ["{a} <= {o}"], "gt": ["{a} > {o}"], "ge": ["{a} >= {o}"]}


@generator("compare", ops=tuple(_CMP), weight=2.5)
def compare(b: Builder) -> bool:
    """A comparison (bool result) against a scalar or a tensor."""
    v = b.pick(lambda v: v.dtype != "bool")
    if v is None:
        return False
    expr_o, shape_o, dt_o, _, _ = operand(b, v, allow_self=False)
    shape = broadcast(v.shape, shape_o)
    if shape is None or not b.fits(shape) or dt_o == "bool":
        return False
    op = b.choice(list(_CMP))
    b.new(b.choice(_CMP[op]).format(a=v.name, o=expr_o), shape, "bool")
    return True


def bool_value(b: Builder, like: Val | None = None) -> Val | None:
    """A bool pool value (broadcastable with ``like``), made from a comparison if none."""
    fits = (lambda u: u.dtype == "bool" and (like is None or broadcast(u.shape, like.shape)
                                              is not None))
    m = b.pick(fits)
    if m is not None:
        return m
    src = like if like is not None and like.dtype != "bool" else b.pick(
        lambda u: u.dtype != "bool")
    if src is None:
        return None
    thr = b.choice(["0", "0.5", "-0.25", "1"]) if is_float(src.dtype) else "0"
    return b.new(f"{src.name} {b.choice(['>', '<', '>=', '<='])} {thr}", src.shape, "bool")


@generator("logical", ops=("logical_and", "logical_or", "logical_not"), weight=1.5)
def logical(b: Builder) -> bool:
    """&, |, ~ and their method spellings, on bool tensors."""
    m = bool_value(b)
    if m is None:
        return False
    if b.chance(0.3):
        b.new(b.choice([f"~{m.name}", f"{m.name}.logical_not()"]), m.shape, "bool")
        return True
    n = bool_value(b, like=m)
    if n is None:
        return False
    shape = broadcast(m.shape, n.shape)
    form = b.choice(["{a} & {o}", "{a} | {o}", "{a}.logical_and({o})", "{a}.logical_or({o})"])
    b.new(form.format(a=m.name, o=n.name), shape, "bool")
    return True


@generator("where", ops=("where", "gt"), weight=2)
def where(b: Builder) -> bool:
    """torch.where(cond, a, b) / a.where(cond, b), with scalars allowed."""
    v = b.pick(lambda v: v.dtype != "bool")
    if v is None:
        return False
    m = bool_value(b, like=v)
    if m is None:
        return False
    expr_o, shape_o, dt_o, kind, grad_o = operand(b, v)
    shape = broadcast(broadcast(v.shape, m.shape) or (), shape_o)
    if shape is None or broadcast(v.shape, m.shape) is None or not b.fits(shape):
        return False
    if dt_o == "bool":
        return False
    dtype = promote(v.dtype, dt_o, kind, (v.shape, shape_o))
    form = b.choice(["torch.where({m}, {a}, {o})", "torch.where({m}, {o}, {a})",
                     "{a}.where({m}, {o})"])
    b.new(form.format(m=m.name, a=v.name, o=expr_o), shape, dtype, grad=_grad(v.grad, grad_o))
    return True


# ---- reductions ----------------------------------------------------------------------

def _reduce_dims(b: Builder, v: Val, allow_tuple: bool):
    """(dim argument as source text or None, normalised dims)."""
    if v.ndim == 0 or b.chance(0.2):
        return None, tuple(range(v.ndim))
    if allow_tuple and v.ndim >= 2 and b.chance(0.3):
        dims = sorted(b.rng.sample(range(v.ndim), b.rng.randint(2, v.ndim)))
        spelled = [d - v.ndim if b.chance(0.3) else d for d in dims]
        return "(" + ", ".join(map(str, spelled)) + ")", tuple(dims)
    d = b.rng.randrange(v.ndim)
    return str(d - v.ndim if b.chance(0.3) else d), (d,)


def _reduced(v: Val, dims: tuple, keepdim: bool) -> tuple:
    if keepdim:
        return tuple(1 if i in dims else s for i, s in enumerate(v.shape))
    return tuple(s for i, s in enumerate(v.shape) if i not in dims)


@generator("reduce", ops=("sum", "mean", "max", "min", "ne", "eq", "gt"), weight=4)
def reduce(b: Builder) -> bool:
    """sum / mean / max / min / amax / amin / any / all, over all dims, one or several."""
    op = b.choice(["sum", "sum", "mean", "mean", "max", "min", "amax", "amin", "any", "all"])
    v = b.pick(lambda v: (is_float(v.dtype) or op not in ("mean",)) and not (
        v.dtype == "bool" and op in ("max", "min", "amax", "amin") and b.chance(0.7)))
    if v is None:
        return False
    dim, dims = _reduce_dims(b, v, allow_tuple=op in ("sum", "mean", "amax", "amin"))
    keepdim = dim is not None and b.chance(0.4)
    shape = _reduced(v, dims, keepdim)
    dtype = {"sum": "int64" if not is_float(v.dtype) else v.dtype, "any": "bool",
             "all": "bool"}.get(op, v.dtype)
    kd = ", keepdim=True" if keepdim else ""
    a = v.name
    if dim is None:
        expr = b.choice({"sum": [f"{a}.sum()", f"torch.sum({a})"],
                         "mean": [f"{a}.mean()", f"torch.mean({a})"],
                         "max": [f"{a}.max()", f"torch.max({a})"],
                         "min": [f"{a}.min()", f"torch.min({a})"],
                         "amax": [f"{a}.amax(dim={tuple(range(v.ndim))})"],
                         "amin": [f"{a}.amin(dim={tuple(range(v.ndim))})"],
                         "any": [f"{a}.any()"], "all": [f"{a}.all()"]}[op])
        if op in ("amax", "amin") and v.ndim == 0:
            expr = f"{a}.{op[1:]}()"
    elif op in ("max", "min"):
        expr = b.choice([f"{a}.{op}({dim}{kd}).values", f"{a}.{op}(dim={dim}{kd})[0]",
                         f"torch.{op}({a}, {dim}{kd})[0]", f"{a}.a{op}({dim}{kd})"])
    elif op in ("sum", "mean"):
        expr = b.choice([f"{a}.{op}({dim}{kd})", f"{a}.{op}(dim={dim}{kd})",
                         f"torch.{op}({a}, {dim}{kd})"])
        if op == "sum" and not is_float(v.dtype) and b.chance(0.2):
            expr, dtype = f"{a}.sum({dim}{kd}, dtype={DTYPE_SRC[b.fdt]})", b.fdt
    else:
        expr = f"{a}.{op}({dim}{kd})"
    b.new(expr, shape, dtype, grad=v.grad and dtype == v.dtype)
    return True


@generator("argreduce", ops=("argmax", "argmin", "max", "min"), weight=1, fusable=False)
def argreduce(b: Builder) -> bool:
    """argmax / argmin and the indices of max(dim) / min(dim)."""
    v = b.pick(lambda v: v.dtype != "bool" and v.ndim >= 1)
    if v is None:
        return False
    op = b.choice(["max", "min"])
    a = v.name
    if b.chance(0.25):
        expr = b.choice([f"{a}.arg{op}()", f"torch.arg{op}({a})"])
        b.new(expr, (), "int64")
        return True
    d = b.rng.randrange(v.ndim)
    keepdim = b.chance(0.3)
    kd = ", keepdim=True" if keepdim else ""
    expr = b.choice([f"{a}.arg{op}({d}{kd})", f"torch.arg{op}({a}, dim={d}{kd})",
                     f"{a}.{op}({d}{kd}).indices", f"torch.{op}({a}, {d}{kd})[1]"])
    size = v.shape[d]
    bound = size if isinstance(size, int) else None
    b.new(expr, _reduced(v, (d,), keepdim), "int64", index_bound=bound)
    return True


# ---- matrix products -----------------------------------------------------------------

def _width(b: Builder) -> int:
    return b.choice(WIDTHS)


@generator("linear", ops=("matmul", "permute", "add"), weight=4)
def linear(b: Builder) -> bool:
    """nn.Linear / nn.LazyLinear / F.linear on the last dimension."""
    v = b.pick(lambda v: v.dtype == b.fdt and v.ndim >= 1 and isinstance(v.shape[-1], int)
               and (v.ndim <= 2 or not b.fusable_only))
    if v is None:
        return False
    k, m = v.shape[-1], _width(b)
    shape = v.shape[:-1] + (m,)
    if not b.fits(shape):
        return False
    bias = b.chance(0.8)
    bias_kw = "" if bias else ", bias=False"
    r = b.rng.random()
    if r < 0.6:
        layer = b.attr("lin", f"nn.Linear({k}, {m}{bias_kw}{b.dtype_kw()})")
        expr = f"{layer}({v.name})"
    elif r < 0.75:
        layer = b.attr("lazy", f"nn.LazyLinear({m}{bias_kw}{b.dtype_kw()})")
        expr = f"{layer}({v.name})"
    else:
        w = b.attr("w", f"nn.Parameter(torch.randn({m}, {k}{b.dtype_kw()}) * 0.3)")
        bias_arg = ""
        if bias:
            bias_arg = ", " + b.attr("w", f"nn.Parameter(torch.randn({m}{b.dtype_kw()}))")
        expr = f"F.linear({v.name}, {w}{bias_arg})"
    b.new(expr, shape, b.fdt, grad=not b.no_grad)
    return True


@generator("matmul", ops=("matmul", "permute"), weight=3)
def matmul(b: Builder) -> bool:
    """@ / matmul / mm against parameters, transposes of itself, vectors, int matrices."""
    r = b.rng.random()
    if r < 0.45:
        v = b.pick(lambda v: v.dtype == b.fdt and v.ndim in (1, 2) and isinstance(
            v.shape[-1], int))
        if v is None:
            return False
        k, m = v.shape[-1], _width(b)
        w = b.attr("w", f"nn.Parameter(torch.randn({k}, {m}{b.dtype_kw()}) * 0.5)")
        forms = [f"{v.name} @ {w}", f"torch.matmul({v.name}, {w})", f"{v.name}.matmul({w})"]
        if v.ndim == 2:
            forms.append(f"torch.mm({v.name}, {w})")
        b.new(b.choice(forms), v.shape[:-1] + (m,), b.fdt, grad=not b.no_grad)
        return True
    if r < 0.7:  # products of a 2-D value with (a transpose of) itself or a same-shaped value
        v = b.pick(lambda v: is_float(v.dtype) and v.ndim == 2)
        if v is None:
            return False
        u = b.pick(lambda u: u.shape == v.shape and u.dtype == v.dtype) or v
        if b.chance(0.5):
            shape, expr = (v.shape[0], u.shape[0]), b.choice([f"{v.name} @ {u.name}.T",
                                                             f"{v.name} @ {u.name}.t()",
                                                             f"torch.mm({v.name}, {u.name}.T)"])
        else:
            shape, expr = (v.shape[1], u.shape[1]), b.choice([f"{v.name}.T @ {u.name}",
                                                             f"{v.name}.t().matmul({u.name})"])
        if not b.fits(shape):
            return False
        b.new(expr, shape, v.dtype, grad=v.grad or u.grad)
        return True
    if r < 0.85:  # matrix-vector
        v = b.pick(lambda v: v.dtype == b.fdt and v.ndim >= 1 and isinstance(
            v.shape[-1], int) and (v.ndim <= 2 or not b.fusable_only))
        if v is None:
            return False
        vec = b.attr("w", f"nn.Parameter(torch.randn({v.shape[-1]}{b.dtype_kw()}))")
        b.new(b.choice([f"{v.name} @ {vec}", f"torch.matmul({v.name}, {vec})"]), v.shape[:-1],
              b.fdt, grad=not b.no_grad)
        return True
    v = b.pick(lambda v: is_int(v.dtype) and v.ndim in (1, 2) and isinstance(v.shape[-1], int))
    if v is None or b.fusable_only and v.ndim != 2:
        return False
    k, m = v.shape[-1], _width(b)
    c = b.attr("c", b.tensor_literal((k, m), "int64"))
    b.new(f"{v.name} @ {c}", v.shape[:-1] + (m,), "int64")
    return True


@generator("batched_matmul", ops=("matmul",), weight=0.7, fusable=False)
def batched_matmul(b: Builder) -> bool:
    """A 3-D value times a matrix, or a batch of matrices times a batch of matrices."""
    v = b.pick(lambda v: v.dtype == b.fdt and v.ndim == 3 and isinstance(v.shape[-1], int))
    if v is None:
        return False
    if b.chance(0.5):
        u = b.pick(lambda u: u.shape == v.shape and u.dtype == v.dtype) or v
        shape = (v.shape[0], v.shape[1], u.shape[1])
        expr = f"{v.name} @ {u.name}.transpose(1, 2)"
        grad = v.grad or u.grad
    else:
        m = _width(b)
        w = b.attr("w", f"nn.Parameter(torch.randn({v.shape[-1]}, {m}{b.dtype_kw()}) * 0.5)")
        shape, expr, grad = v.shape[:-1] + (m,), f"torch.matmul({v.name}, {w})", not b.no_grad
    if not b.fits(shape):
        return False
    b.new(expr, shape, v.dtype, grad=grad)
    return True
