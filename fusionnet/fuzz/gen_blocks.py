"""Generators for block structure and state: containers, loops, residuals, reused layers,
in-place writes (also through views), detach / ``.data``, ``no_grad`` regions, losses,
dropout, Python branches, and a few deliberate errors.

These are what makes a block a block rather than an expression: the tracer has to
unroll the Python, the runtime has to respect aliasing and autograd state, and the
fused module has to raise where eager raises.
"""
from __future__ import annotations

from . import gen_math
from .builder import Builder, generator
from .gen_math import WIDTHS, bool_value, operand
from .model import Bat, Val, broadcast, is_float, is_int, promote

__all__ = []

_ACTS = ["nn.ReLU()", "nn.Tanh()", "nn.Sigmoid()", "nn.GELU()", "nn.Identity()"]
_FN_ACTS = ["torch.relu({})", "torch.tanh({})", "F.gelu({})", "{}.sigmoid()", "{}"]


def _width_input(b: Builder, max_ndim: int = 2) -> Val | None:
    """A value layers can take: of the block's float dtype, static last dim."""
    return b.pick(lambda v: v.dtype == b.fdt and 1 <= v.ndim <= max_ndim
                  and isinstance(v.shape[-1], int) and v.shape[-1] > 0)


def _add(b: Builder, name: str, shape, dtype: str, grad: bool) -> Val:
    return b.add(Val(name, tuple(shape), dtype, grad=grad and not b.no_grad and is_float(dtype)))


def _dk(b: Builder) -> str:
    return b.dtype_kw()


@generator("sequential", ops=("matmul", "permute", "add", "relu", "tanh", "sigmoid", "erf"),
           weight=2)
def sequential(b: Builder) -> bool:
    """An nn.Sequential of Linear layers and activation modules."""
    v = _width_input(b, 2 if b.fusable_only else 3)
    if v is None:
        return False
    k, layers = v.shape[-1], []
    for _ in range(b.rng.randint(2, 4)):
        if b.chance(0.5):
            m = b.choice(WIDTHS)
            layers.append(f"nn.Linear({k}, {m}{_dk(b)})")
            k = m
        else:
            layers.append(b.choice(_ACTS + ["nn.Dropout(0.0)"]))
    seq = b.attr("seq", f"nn.Sequential({', '.join(layers)})")
    shape = v.shape[:-1] + (k,)
    if not b.fits(shape):
        return False
    b.new(f"{seq}({v.name})", shape, v.dtype, grad=True)
    return True


@generator("module_list", ops=("matmul", "add", "mul"), weight=1.5)
def module_list(b: Builder) -> bool:
    """A ModuleList of same-width layers applied in a Python loop (often residual)."""
    v = _width_input(b)
    if v is None:
        return False
    k, n = v.shape[-1], b.rng.randint(1, 3)
    blocks = b.attr("blocks", f"nn.ModuleList([nn.Linear({k}, {k}{_dk(b)}) for _ in "
                              f"range({n})])")
    name, layer = b.fresh("h"), b.fresh("layer")
    act = b.choice(_FN_ACTS)
    b.emit(f"{name} = {v.name}")
    if b.chance(0.3):
        b.emit(f"for i, {layer} in enumerate({blocks}):")
        b.emit(f"    {name} = {act.format(f'{layer}({name})')} * (i + 1)")
    else:
        b.emit(f"for {layer} in {blocks}:")
        body = act.format(f"{layer}({name})")
        b.emit(f"    {name} = {name} + {body}" if b.chance(0.6) else f"    {name} = {body}")
    _add(b, name, v.shape, v.dtype, True)
    return True


@generator("module_dict", ops=("matmul", "add"), weight=0.7)
def module_dict(b: Builder) -> bool:
    """An nn.ModuleDict of a projection and an activation, looked up by key."""
    v = _width_input(b)
    if v is None:
        return False
    m = b.choice(WIDTHS)
    d = b.attr("parts", f'nn.ModuleDict({{"proj": nn.Linear({v.shape[-1]}, {m}{_dk(b)}), '
                        f'"act": {b.choice(_ACTS)}}})')
    b.new(f'{d}["act"]({d}["proj"]({v.name}))', v.shape[:-1] + (m,), v.dtype, grad=True)
    return True


@generator("reused_layer", ops=("matmul", "add"), weight=1.5)
def reused_layer(b: Builder) -> bool:
    """One layer called twice (shared weights: its gradient sums both uses)."""
    v = _width_input(b)
    if v is None:
        return False
    k = v.shape[-1]
    layer = b.attr("shared", f"nn.Linear({k}, {k}{_dk(b)})")
    act = b.choice(_FN_ACTS)
    b.new(f"{layer}({act.format(f'{layer}({v.name})')})", v.shape, v.dtype, grad=True)
    return True


@generator("residual", ops=("add", "matmul"), weight=1.5)
def residual(b: Builder) -> bool:
    """x + f(x) with f a layer or an activation."""
    v = b.pick_float()
    if v is None:
        return False
    if v.dtype == b.fdt and v.ndim >= 1 and isinstance(v.shape[-1], int) and b.chance(0.6) \
            and (v.ndim <= 2 or not b.fusable_only):
        layer = b.attr("lin", f"nn.Linear({v.shape[-1]}, {v.shape[-1]}{_dk(b)})")
        inner = b.choice(_FN_ACTS).format(f"{layer}({v.name})")
        b.new(f"{v.name} + {inner}", v.shape, v.dtype, grad=True)
    else:
        inner = b.choice(["torch.tanh({})", "F.relu({})", "{}.sigmoid()", "({} * 0.5)"])
        b.new(f"{v.name} + {inner.format(v.name)}", v.shape, v.dtype, grad=v.grad)
    return True


_LOOP_BODIES = ["{h} * 0.5 + i", "torch.tanh({h}) + {c}", "{h} + {v} * i", "{h} * {h} * 0.1",
                "F.relu({h} - 0.5 * i)", "{h}.clamp(-2.0, 2.0) + 1"]


@generator("static_loop", ops=("mul", "add", "tanh", "relu", "clamp"), weight=1.5)
def static_loop(b: Builder) -> bool:
    """A Python ``for i in range(n)`` loop that the tracer unrolls."""
    v = b.pick(lambda v: v.dtype != "bool")
    if v is None:
        return False
    body = b.choice(_LOOP_BODIES)
    if not is_float(v.dtype) and any(s in body for s in ("tanh", "relu", "0.", "clamp")):
        body = "{h} + {v} * i"
    c = ""
    if "{c}" in body:
        c = b.attr("c", b.tensor_literal(gen_math.broadcastable_shape(b, v.shape), v.dtype))
    name = b.fresh("h")
    b.emit(f"{name} = {v.name}")
    b.emit(f"for i in range({b.rng.randint(1, 4)}):")
    b.emit(f"    {name} = {body.format(h=name, v=v.name, c=c)}")
    _add(b, name, v.shape, v.dtype, v.grad)
    return True


_WHILE_BODIES = ["{h} / 2", "{h} * 0.5 + {v} * 0.01", "torch.tanh({h}) * 0.75",
                 "F.relu({h}) * 0.5 - {h} * 0.25", "{h} * 0.5 + {g} * 0.125"]


@generator("data_loop", ops=("abs", "sum", "max", "gt", "div", "mul", "add", "tanh", "relu",
                              "matmul"), weight=0.8)
def data_loop(b: Builder) -> bool:
    """A ``while`` on a tensor's value (compiled as a loop region), bounded by a Python
    counter; sometimes two carried tensors (passed through each other, or one value
    carried into both), a body that reads the loop's initial value, or a Linear in the
    body (a GEMM reads its whole input: where the loop's arrays wrongly alias, an
    elementwise body would hide it, a GEMM does not)."""
    v = b.pick_float()
    if v is None:
        return False
    h, n = b.fresh("h"), b.fresh("n")
    body = b.choice(_WHILE_BODIES)
    if (v.dtype == b.fdt and 1 <= v.ndim <= 2 and isinstance(v.shape[-1], int)
            and v.shape[-1] > 0 and b.chance(0.4)):
        k = v.shape[-1]
        body = b.attr("lin", f"nn.Linear({k}, {k}{_dk(b)})") + "({h}) * 0.5"
    two = "{g}" in body or b.chance(0.3)
    g = b.fresh("h") if two else ""
    b.emit(f"{h} = {v.name}")
    if two:
        b.emit(f"{g} = {v.name} + 1")
    b.emit(f"{n} = 0")
    test = b.choice(["{h}.abs().sum() > {t}", "{h}.abs().max() > {t}"])
    b.emit(f"while {test.format(h=h, t=b.choice(['1.0', '10.0', '1000.0']))} "
           f"and {n} < {b.rng.randint(2, 30)}:")
    step = body.format(h=h, v=v.name, g=g)
    how = b.choice(["swap", "alias", "own"]) if two else ""
    if how == "swap":
        b.emit(f"    {h}, {g} = {step}, {h}")   # the old state carried on: no reuse
    else:
        b.emit(f"    {h} = {step}")
        if how == "alias":
            b.emit(f"    {g} = {h}")            # one value, two states: one array
        elif how == "own":
            b.emit(f"    {g} = {g} * 0.5")
    b.emit(f"    {n} += 1")
    _add(b, h, v.shape, v.dtype, v.grad)
    if two:
        _add(b, g, v.shape, v.dtype, v.grad)
    return True


# ---- in-place writes -----------------------------------------------------------------

def _inplace_target(b: Builder, pred=lambda v: True) -> Val | None:
    """An intermediate to write into (an input only rarely: that makes fuse fall back)."""
    return b.pick(lambda v: not v.readonly and v.dtype != "bool" and pred(v) and (
        not v.is_input or b.chance(0.1)))


def _inplace_operand(b: Builder, w: Val):
    """An operand whose broadcast with ``w`` is ``w``'s shape and whose result casts to
    ``w``'s dtype."""
    expr, shape, dtype, kind, grad = operand(b, w)
    if broadcast(w.shape, shape) != w.shape or dtype == "bool":
        return None
    res = promote(w.dtype, dtype, kind, (w.shape, shape))
    if is_float(res) and not is_float(w.dtype):
        return None
    return expr, grad


@generator("inplace", ops=("add", "sub", "mul", "div", "clamp", "relu", "setitem"), weight=3)
def inplace(b: Builder) -> bool:
    """+=, -=, *=, /=, add_, mul_, clamp_, relu_, zero_, fill_, copy_ on an intermediate."""
    w = _inplace_target(b)
    if w is None:
        return False
    r = b.rng.random()
    if r < 0.55:
        got = _inplace_operand(b, w)
        if got is None:
            return False
        o, grad = got
        ops = ["+=", "-=", "*="] + (["/="] if is_float(w.dtype) else [])
        forms = [f"{w.name} {op} {o}" for op in ops] + [f"{w.name}.add_({o})",
                                                        f"{w.name}.mul_({o})",
                                                        f"{w.name}.sub_({o})"]
        if is_float(w.dtype):
            forms.append(f"{w.name}.div_({o})")
        b.emit(b.choice(forms))
        w.grad = w.grad or (grad and not b.no_grad)
    elif r < 0.75:
        if is_float(w.dtype):
            forms = [f"{w.name}.clamp_(min=-1.0)", f"{w.name}.clamp_(-0.5, 0.5)",
                     f"{w.name}.relu_()", f"F.relu({w.name}, inplace=True)", "module"]
        else:
            forms = [f"{w.name}.clamp_(min=0)", f"{w.name}.clamp_(-2, 2)"]
        form = b.choice(forms)
        if form == "module":
            form = f"{b.attr('act', 'nn.ReLU(inplace=True)')}({w.name})"
        b.emit(form)
    else:
        u = b.pick(lambda u: u is not w and broadcast(u.shape, w.shape) == w.shape
                   and u.ndim <= w.ndim and (is_float(w.dtype) or not is_float(u.dtype))
                   and u.dtype != "bool")
        fill = b.float_literal() if is_float(w.dtype) else b.int_literal()
        forms = [f"{w.name}.zero_()", f"{w.name}.fill_({fill})"]
        if u is not None:
            forms.append(f"{w.name}.copy_({u.name})")
        form = b.choice(forms)
        b.emit(form)
        if "copy_" in form:
            w.grad = w.grad or u.grad
    return True


_VIEWS = ["{w}.view(-1)", "{w}.reshape(-1)", "{w}[0]", "{w}[..., :1]", "{w}.unsqueeze(0)",
          "{w}.detach()", "{w}.data", "{w}.t()", "{w}.transpose(0, -1)", "{w}[:, 1:]",
          "{w}.squeeze()", "{w}.flatten()"]


@generator("view_inplace", ops=("reshape", "getitem", "permute", "mul", "add", "clamp"),
           weight=1.5)
def view_inplace(b: Builder) -> bool:
    """An in-place write through a view (``v = h.view(-1); v *= 2``), then a read of the
    base, which eager sees changed."""
    w = _inplace_target(b, lambda v: v.ndim >= 1 and not v.is_input)
    if w is None:
        return False
    views = [t for t in _VIEWS if ("t()" not in t or w.ndim == 2) and (
        "[:, 1:]" not in t or w.ndim >= 2)]
    view = b.choice(views).format(w=w.name)
    name = b.fresh("view")
    b.emit(f"{name} = {view}")
    scal = b.choice(["2.0", "0.5", "-1.0"]) if is_float(w.dtype) else b.choice(["2", "3", "-1"])
    b.emit(b.choice([f"{name} *= {scal}", f"{name}.add_({scal})", f"{name}.mul_({scal})",
                     f"{name}.zero_()", f"{name} -= {scal}"] + (
        [f"{name}.clamp_(max=0.5)"] if is_float(w.dtype) else [])))
    use = b.choice(["{w} + 0", "{w} * 1", "{w}.clone()", "sum"])
    if use == "sum":  # read the (possibly changed) base through a reduction
        b.new(f"{w.name}.sum(-1)", w.shape[:-1], w.dtype if is_float(w.dtype) else "int64",
              grad=w.grad)
    else:
        b.new(use.format(w=w.name), w.shape, w.dtype, grad=w.grad)
    return True


@generator("detach", ops=("mul",), weight=1.5)
def detach(b: Builder) -> bool:
    """detach() / .data of an intermediate or of a parameter (no gradient flows)."""
    v = b.pick_float()
    if v is None:
        return False
    if b.chance(0.3):  # a parameter's detached data: a constant for autograd
        last = v.shape[-1] if v.shape and isinstance(v.shape[-1], int) else 1
        w = b.attr("w", f"nn.Parameter(torch.randn({last}{_dk(b)}))")
        b.new(f"{v.name} * {w}.{b.choice(['data', 'detach()'])}", broadcast(v.shape, (last,)),
              promote(v.dtype, b.fdt, None, (v.shape, (last,))), grad=v.grad)
        return True
    form = b.choice(["{}.detach()", "{}.data", "{}.detach().clone()"])
    b.new(form.format(v.name), v.shape, v.dtype, readonly=v.readonly and "clone" not in form)
    return True


@generator("no_grad", ops=(), weight=1.5)
def no_grad(b: Builder) -> bool:
    """A ``with torch.no_grad():`` region inside forward (its values carry no gradient)."""
    if b.no_grad:
        return False
    b.emit("with torch.no_grad():")
    b.indent += 1
    b.no_grad = True
    start = len(b.body)
    try:
        for _ in range(b.rng.randint(1, 2)):
            for _ in range(6):
                if b.choice([gen_math.unary, gen_math.binary, gen_math.reduce,
                             gen_math.linear, gen_math.clamp])(b):
                    break
    finally:
        b.indent -= 1
        b.no_grad = False
    if len(b.body) == start:
        b.body.append("    " * (b.indent + 1) + "pass")
    return True


# ---- losses, dropout, branches ---------------------------------------------------------

@generator("mse_loss", ops=("mse_loss", "sub", "mul", "mean", "sum"), weight=1)
def mse_loss(b: Builder) -> bool:
    """F.mse_loss / nn.MSELoss between two same-shaped float values."""
    v = b.pick_float()
    if v is None:
        return False
    u = b.pick(lambda u: u.shape == v.shape and is_float(u.dtype) and u is not v)
    if u is None:
        return False
    red = b.choice(["mean", "sum", "none"])
    shape = v.shape if red == "none" else ()
    if b.chance(0.3):
        expr = f"{b.attr('loss', f'nn.MSELoss(reduction={red!r})')}({v.name}, {u.name})"
    else:
        expr = f"F.mse_loss({v.name}, {u.name}, reduction={red!r})"
    b.new(expr, shape, promote(v.dtype, u.dtype, None, (v.shape, u.shape)),
          grad=v.grad or u.grad)
    return True


@generator("class_loss", ops=("getitem", "neg", "mean", "log", "exp", "max", "sub"),
           weight=0.8, fusable=False)
def class_loss(b: Builder) -> bool:
    """F.cross_entropy / F.nll_loss against class indices or probabilities."""
    v = b.pick(lambda v: is_float(v.dtype) and v.ndim == 2 and isinstance(v.shape[1], int)
               and v.shape[1] > 0)
    if v is None:
        return False
    c = v.shape[1]
    t = b.pick(lambda t: t.dtype == "int64" and t.shape == (v.shape[0],) and t.index_bound
               is not None and t.index_bound <= c)
    red = b.choice(["mean", "sum", "none"])
    shape = (v.shape[0],) if red == "none" else ()
    if t is None or b.chance(0.3):
        probs = b.new(f"F.softmax({v.name} * 0.5, dim=1)", v.shape, v.dtype, grad=v.grad)
        b.new(f"F.cross_entropy({v.name}, {probs.name}, reduction={red!r})", shape, v.dtype,
              grad=v.grad)
        return True
    if b.chance(0.5):
        expr = f"F.cross_entropy({v.name}, {t.name}, reduction={red!r})"
    else:
        expr = f"F.nll_loss(F.log_softmax({v.name}, dim=1), {t.name}, reduction={red!r})"
    b.new(expr, shape, v.dtype, grad=v.grad)
    return True


@generator("dropout", ops=("mul", "ge"), weight=0.6)
def dropout(b: Builder) -> bool:
    """nn.Dropout / F.dropout; p > 0 draws random numbers (the block then runs eagerly)."""
    v = b.pick_float()
    if v is None:
        return False
    p = b.choice(["0.0", "1.0"] if b.fusable_only else ["0.0", "0.25", "0.5", "1.0"])
    b.random_ops = b.random_ops or p not in ("0.0", "1.0")
    if b.chance(0.5):
        expr = f"{b.attr('drop', f'nn.Dropout({p})')}({v.name})"
    else:
        expr = f"F.dropout({v.name}, {p}, training=self.training)"
    b.new(expr, v.shape, v.dtype, grad=v.grad)
    return True


@generator("data_branch", ops=("sum", "gt"), weight=0.6, fusable=False)
def data_branch(b: Builder) -> bool:
    """Python control flow on a tensor's value: an ``if`` (a branch region) or a
    ``float()`` of a tensor (a graph break: that block runs eagerly)."""
    v = b.pick(lambda v: v.dtype != "bool")
    if v is None:
        return False
    name = b.fresh("h")
    if b.chance(0.5):
        b.emit(f"if {v.name}.sum() > 0:")
        b.emit(f"    {name} = {v.name} * 2")
        b.emit("else:")
        b.emit(f"    {name} = {v.name} - 1")
        _add(b, name, v.shape, v.dtype, v.grad)
    else:
        b.emit(f"{name} = {v.name} / (abs(float({v.name}.float().mean())) + 1.0)")
        _add(b, name, v.shape, gen_math.result_float(v.dtype), v.grad)
    return True


@generator("shape_branch", ops=("mul", "add"), weight=0.6)
def shape_branch(b: Builder) -> bool:
    """Python control flow on a size (``if h.shape[0] > 4``): static per batch size."""
    v = b.pick(lambda v: v.dtype != "bool" and v.shape and isinstance(v.shape[0], Bat))
    if v is None:
        return False
    name = b.fresh("h")
    b.emit(f"if {v.name}.shape[0] > {b.choice([1, 4, 50])}:")
    b.emit(f"    {name} = {v.name} * 2")
    b.emit("else:")
    b.emit(f"    {name} = {v.name} + 1")
    _add(b, name, v.shape, v.dtype, v.grad)
    return True


@generator("error", ops=(), weight=0.35)
def error(b: Builder) -> bool:
    """Code that raises (at every batch size or only at some): fused must raise alike."""
    r = b.rng.random()
    v = b.pick(lambda v: v.dtype != "bool")
    if v is None:
        return False
    if r < 0.3 and v.shape and isinstance(v.shape[0], Bat):
        # Valid only where the element count divides: fails at some batch sizes.
        k = b.choice([2, 3, 4])
        b.new(f"{v.name}.reshape(-1, {k})", (Bat(1), k), v.dtype, grad=v.grad)
        b.pool[-1].shape = v.shape  # keep the model usable; the case records the error
        b.pool[-1].ragged = True
    elif r < 0.5 and is_int(v.dtype):
        b.new(f"{v.name} ** -1", v.shape, v.dtype)
    elif r < 0.65:
        b.new(f"{v.name}.long().mean()", (), "float32")
    elif r < 0.8:
        b.emit(f"{v.name}.unsqueeze(0).expand(2, {', '.join(['-1'] * v.ndim)}).mul_(2)")
    else:
        bad = (v.shape[-1] + 1) if v.shape and isinstance(v.shape[-1], int) else 2
        w = b.attr("w", f"nn.Parameter(torch.randn({bad}, 2{_dk(b)}))")
        b.new(f"{v.name} @ {w}", v.shape[:-1] + (2,), b.fdt, grad=True)
    return True


@generator("param_mask", ops=("mul", "where", "gt"), weight=0.5)
def param_mask(b: Builder) -> bool:
    """A float value times a bool mask (promotion from bool)."""
    v = b.pick_float()
    if v is None:
        return False
    m = bool_value(b, like=v)
    if m is None:
        return False
    shape = broadcast(v.shape, m.shape)
    if shape is None or not b.fits(shape):
        return False
    form = b.choice(["{v} * {m}", "{m} * {v}", "{v} * {m}.float()"])
    b.new(form.format(v=v.name, m=m.name), shape, v.dtype, grad=v.grad)
    return True
