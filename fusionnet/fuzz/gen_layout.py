"""Generators for the layout rows: reshape/view/flatten, permute/transpose, expand,
squeeze/unsqueeze, indexing, index assignment, cat/stack, clone and device no-ops.

Shapes stay symbolic in the batch size: a reshape writes ``-1`` where the batch goes,
indexing takes only ``:``, ``0`` or ``-1`` on a batch dimension, and sizes read as
Python ints (``h.shape[0]``) are spelled that way, so every case is valid at each of
its batch sizes.
"""
from __future__ import annotations

from .builder import DTYPE_SRC, Builder, generator
from .gen_math import bool_value
from .model import Bat, Val, batch_power, broadcast, is_float, promote, static_size

__all__ = []


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _factor(b: Builder, n: int, parts: int) -> list[int]:
    """``parts`` random factors whose product is ``n``."""
    out = []
    for _ in range(parts - 1):
        d = b.choice(_divisors(n))
        out.append(d)
        n //= d
    out.append(n)
    b.rng.shuffle(out)
    return out


@generator("reshape", ops=("reshape",), weight=3)
def reshape(b: Builder) -> bool:
    """reshape / view / flatten / nn.Flatten / view_as, with -1 where the batch goes."""
    v = b.pick(lambda v: batch_power(v.shape) <= 1)
    if v is None:
        return False
    total, has_batch = static_size(v.shape), batch_power(v.shape) == 1
    r = b.rng.random()
    if r < 0.2 and v.ndim >= 2:
        return _flatten(b, v)
    if r < 0.3:
        shape = (Bat(total),) if has_batch else (total,)
        b.new(b.choice([f"{v.name}.reshape(-1)", f"{v.name}.flatten()", f"{v.name}.view(-1)",
                        f"torch.flatten({v.name})"]), shape, v.dtype, grad=v.grad,
              readonly=v.readonly)
        return True
    if r < 0.4:
        u = b.pick(lambda u: u is not v and batch_power(u.shape) == batch_power(v.shape)
                   and static_size(u.shape) == total)
        if u is not None:
            b.new(f"{v.name}.{b.choice(['view_as', 'reshape_as'])}({u.name})", u.shape, v.dtype,
                  grad=v.grad, readonly=v.readonly)
            return True
    if r < 0.5 and v.shape and v.shape[0] == Bat(1) and v.ndim >= 2:
        # The batch size read as a Python int (the engine must then compile exact sizes).
        b.new(f"{v.name}.reshape({v.name}.shape[0], -1)", (Bat(1), total), v.dtype,
              grad=v.grad, readonly=v.readonly)
        return True
    explicit = b.choice(_divisors(total)) if has_batch else total
    dims = _factor(b, explicit, b.rng.randint(1, 3)) if explicit > 1 or b.chance(0.5) else []
    if has_batch:
        pos = b.rng.randint(0, len(dims))
        spelled = dims[:pos] + [-1] + dims[pos:]
        shape = tuple(dims[:pos]) + (Bat(total // explicit),) + tuple(dims[pos:])
    else:
        if not dims:
            dims = [1] if total == 1 else [total]
        pos = b.rng.randrange(len(dims))
        spelled = [-1 if i == pos and b.chance(0.5) else d for i, d in enumerate(dims)]
        shape = tuple(dims)
    args = ", ".join(map(str, spelled))
    form = b.choice([f"{v.name}.reshape({args})", f"{v.name}.view({args})",
                     f"{v.name}.reshape(({args},))", f"torch.reshape({v.name}, ({args},))"])
    b.new(form, shape, v.dtype, grad=v.grad, readonly=v.readonly)
    return True


def _flatten(b: Builder, v: Val) -> bool:
    start = b.rng.randrange(v.ndim - 1)
    end = b.rng.randrange(start + 1, v.ndim)
    merged = v.shape[start:end + 1]
    if batch_power(merged) > 1:
        return False
    size = static_size(merged)
    dim = Bat(size) if batch_power(merged) else size
    shape = v.shape[:start] + (dim,) + v.shape[end + 1:]
    if start == 1 and end == v.ndim - 1 and b.chance(0.4):
        expr = f"{b.attr('flat', 'nn.Flatten()')}({v.name})"
    else:
        e = end - v.ndim if b.chance(0.4) else end
        expr = b.choice([f"{v.name}.flatten({start}, {e})",
                         f"torch.flatten({v.name}, {start}, {e})"])
    b.new(expr, shape, v.dtype, grad=v.grad, readonly=v.readonly)
    return True


@generator("permute", ops=("permute",), weight=2.5)
def permute(b: Builder) -> bool:
    """permute / transpose / swapaxes / .T / .t()."""
    v = b.pick(lambda v: v.ndim >= 2)
    if v is None:
        return False
    n = v.ndim
    r = b.rng.random()
    if r < 0.35:
        perm = list(range(n))
        while perm == list(range(n)):
            b.rng.shuffle(perm)
        args = ", ".join(map(str, perm))
        expr = b.choice([f"{v.name}.permute({args})", f"{v.name}.permute(({args}))",
                         f"torch.permute({v.name}, ({args}))"])
        shape = tuple(v.shape[p] for p in perm)
    elif r < 0.75 or n != 2:
        i, j = b.rng.sample(range(n), 2)
        perm = list(range(n))
        perm[i], perm[j] = perm[j], perm[i]
        si = i - n if b.chance(0.4) else i
        sj = j - n if b.chance(0.4) else j
        expr = b.choice([f"{v.name}.transpose({si}, {sj})",
                         f"torch.transpose({v.name}, {si}, {sj})",
                         f"{v.name}.swapaxes({si}, {sj})"])
        shape = tuple(v.shape[p] for p in perm)
    else:
        expr = b.choice([f"{v.name}.T", f"{v.name}.t()"])
        shape = (v.shape[1], v.shape[0])
    b.new(expr, shape, v.dtype, grad=v.grad, readonly=v.readonly)
    return True


@generator("expand", ops=("expand", "reshape"), weight=1.5)
def expand(b: Builder) -> bool:
    """expand / expand_as a size-1 dimension (a read-only broadcast view)."""
    v = b.pick(lambda v: 1 in v.shape or v.ndim <= 2)
    if v is None:
        return False
    if b.chance(0.3):
        u = b.pick(lambda u: u is not v and broadcast(v.shape, u.shape) == u.shape)
        if u is not None and u.shape != v.shape:
            b.new(f"{v.name}.expand_as({u.name})", u.shape, v.dtype, grad=v.grad, readonly=True)
            return True
    src, shape = v.name, list(v.shape)
    if 1 not in shape:  # make a size-1 dimension first
        d = b.rng.randint(0, len(shape))
        src = f"{v.name}.unsqueeze({d})"
        shape.insert(d, 1)
    sizes = []
    for s in shape:
        sizes.append(b.choice([2, 3, 4]) if s == 1 and b.chance(0.7) else -1)
    lead = [b.choice([2, 3])] if b.chance(0.25) else []
    out = tuple(lead) + tuple(s if z == -1 else z for s, z in zip(shape, sizes))
    if not b.fits(out):
        return False
    args = ", ".join(map(str, lead + sizes))
    b.new(f"{src}.expand({args})", out, v.dtype, grad=v.grad, readonly=True)
    return True


@generator("squeeze", ops=("reshape",), weight=1.5)
def squeeze(b: Builder) -> bool:
    """unsqueeze / squeeze(dim) / squeeze() (never of a batch dimension, which is 1 at
    batch size 1)."""
    v = b.pick()
    if v is None:
        return False
    if b.chance(0.55) or 1 not in v.shape:
        d = b.rng.randint(-v.ndim - 1, v.ndim)
        shape = list(v.shape)
        shape.insert(d % (v.ndim + 1), 1)
        expr = b.choice([f"{v.name}.unsqueeze({d})", f"torch.unsqueeze({v.name}, {d})"])
        b.new(expr, tuple(shape), v.dtype, grad=v.grad, readonly=v.readonly)
        return True
    ones = [i for i, s in enumerate(v.shape) if s == 1]
    if not any(isinstance(s, Bat) for s in v.shape) and b.chance(0.3):
        b.new(f"{v.name}.squeeze()", tuple(s for s in v.shape if s != 1), v.dtype, grad=v.grad,
              readonly=v.readonly)
        return True
    d = b.choice(ones + [i for i in b.static_dims(v) if b.chance(0.2)])
    shape = tuple(s for i, s in enumerate(v.shape) if not (i == d and s == 1))
    sd = d - v.ndim if b.chance(0.3) else d
    b.new(b.choice([f"{v.name}.squeeze({sd})", f"torch.squeeze({v.name}, {sd})"]), shape,
          v.dtype, grad=v.grad, readonly=v.readonly)
    return True


# ---- indexing ------------------------------------------------------------------------

def _slice(b: Builder, n: int) -> tuple[str, int]:
    """A slice of a static dimension of size ``n`` and its length."""
    while True:
        start = b.choice([None, 0, 1, -2, 2])
        stop = b.choice([None, None, n - 1, -1, 2, n])
        step = b.choice([None, None, 1, 2])
        length = len(range(n)[slice(start, stop, step)])
        if length or b.chance(0.08):  # empty selections, now and then
            break
    text = ("" if start is None else str(start)) + ":" + ("" if stop is None else str(stop))
    if step is not None:
        text += f":{step}"
    return text, length


def index_key(b: Builder, v: Val, allow_tensor: bool) -> tuple[str, tuple, bool] | None:
    """A random index into ``v``: (key source, result shape, uses an index tensor).

    At most one index tensor, and then no integer items: NumPy counts integers as
    advanced indices next to a tensor (moving dimensions), PyTorch does not."""
    dims = list(v.shape)
    if not dims:
        return None
    items, shape = [], []
    if b.chance(0.2):  # a leading ellipsis, then the trailing dims
        keep = b.rng.randint(0, len(dims) - 1)
        items.append("...")
        shape.extend(dims[:keep])
        indexed, rest = dims[keep:], []
    else:
        n = b.rng.randint(1, len(dims))
        indexed, rest = dims[:n], dims[n:]
    statics = [i for i, d in enumerate(indexed) if not isinstance(d, Bat) and d > 0]
    tensor_at = b.choice(statics) if allow_tensor and statics and b.chance(0.3) else None
    for i, d in enumerate(indexed):
        if b.chance(0.12):
            items.append("None")
            shape.append(1)
        if i == tensor_at:
            src, n = _index_tensor(b, d)
            items.append(src)
            shape.append(n)
        elif isinstance(d, Bat):
            choice = b.choice([":", ":", ":", "0", "-1"] if tensor_at is None else [":"])
            items.append(choice)
            if choice == ":":
                shape.append(d)
        elif d > 0 and tensor_at is None and b.chance(0.3):
            items.append(str(b.rng.randrange(-d, d)))
        else:
            text, length = _slice(b, d)
            items.append(text)
            shape.append(length)
    if b.chance(0.1):  # a trailing None comes before the dims the key leaves out
        items.append("None")
        shape.append(1)
    shape.extend(rest)
    return ", ".join(items), tuple(shape), tensor_at is not None


def _index_tensor(b: Builder, size: int) -> tuple[str, object]:
    """An integer index tensor for a dimension of ``size``: a list, a constant or a value."""
    u = b.pick(lambda u: u.dtype == "int64" and u.ndim == 1 and u.index_bound is not None
               and u.index_bound <= size and not isinstance(u.shape[0], Bat))
    if u is not None and b.chance(0.5):
        return u.name, u.shape[0]
    n = b.rng.randint(1, 4)
    values = [b.rng.randrange(-size, size) for _ in range(n)]
    lit = "[" + ", ".join(map(str, values)) + "]"
    if b.chance(0.5):
        return lit, n
    return b.attr("idx", f"torch.tensor({lit})"), n


@generator("getitem", ops=("getitem", "getitem_grad"), weight=3, fusable=False)
def getitem(b: Builder) -> bool:
    """x[key] with ints, slices, None, ..., index tensors and lists; boolean masks."""
    v = b.pick(lambda v: v.ndim >= 1)
    if v is None:
        return False
    if b.chance(0.12):  # a boolean mask: the result's length depends on the data
        m = bool_value(b, like=v)
        if m is None or m.shape != v.shape:
            return False
        b.new(f"{v.name}[{m.name}].sum()", (), "int64" if not is_float(v.dtype) else v.dtype,
              grad=v.grad)
        return True
    key = index_key(b, v, allow_tensor=True)
    if key is None:
        return False
    text, shape, _ = key
    if not b.fits(shape):
        return False
    b.new(f"{v.name}[{text}]", shape, v.dtype, grad=v.grad, readonly=v.readonly)
    return True


@generator("setitem", ops=("setitem", "getitem", "copy", "mul"), weight=2, fusable=False)
def setitem(b: Builder) -> bool:
    """x[key] = value (a scalar or a broadcast tensor), x[key] op= value, on a clone or
    on an intermediate in place."""
    v = b.pick(lambda v: v.ndim >= 1 and not v.readonly)
    if v is None:
        return False
    key = index_key(b, v, allow_tensor=b.chance(0.3))
    if key is None:
        return False
    text, sel, used_tensor = key
    if used_tensor and "[" in text:  # a list may repeat positions: writes would be ambiguous
        return False
    if v.is_input or b.chance(0.4):
        target = b.new(b.choice([f"{v.name}.clone()", f"torch.clone({v.name})"]), v.shape,
                       v.dtype, grad=v.grad)
    else:
        target = v
    value, vgrad = _assigned_value(b, target, sel)
    if value is None:
        return False
    op = b.choice(["=", "=", "=", "+=", "*="]) if target.dtype != "bool" else "="
    b.emit(f"{target.name}[{text}] {op} {value}")
    target.grad = target.grad or vgrad
    return True


def _assigned_value(b: Builder, target: Val, sel: tuple):
    if b.chance(0.5):
        if target.dtype == "bool":
            return b.choice(["True", "False"]), False
        return (b.float_literal() if is_float(target.dtype) else b.int_literal()), False
    u = b.pick(lambda u: broadcast(u.shape, sel) == sel and u.ndim <= len(sel) and (
        is_float(target.dtype) or not is_float(u.dtype)) and (u.dtype == "bool") == (
        target.dtype == "bool"))
    if u is None:
        return None, False
    return u.name, u.grad


@generator("cat", ops=("cat", "stack"), weight=2, fusable=False)
def cat(b: Builder) -> bool:
    """torch.cat / concat / stack of pool values or of a value and a function of it."""
    v = b.pick(lambda v: v.ndim >= 1)
    if v is None:
        return False
    stack = b.chance(0.35)
    d = b.rng.randrange(-(v.ndim + stack), v.ndim + stack)
    dn = d % (v.ndim + stack)
    if stack:
        partner = b.pick(lambda u: u.shape == v.shape and u is not v)
    else:
        partner = b.pick(lambda u: u.ndim == v.ndim and u is not v and all(
            x == y for i, (x, y) in enumerate(zip(u.shape, v.shape)) if i != dn) and (
            isinstance(u.shape[dn], Bat) == isinstance(v.shape[dn], Bat)))
    if partner is not None:
        parts, grad = [v.name, partner.name], v.grad or partner.grad
        dtypes = {v.dtype, partner.dtype}
    else:
        other = b.choice([f"{v.name} * 2", f"-{v.name}", f"{v.name}"]) if v.dtype != "bool" \
            else v.name
        parts, grad, dtypes, partner = [v.name, other], v.grad, {v.dtype}, v
    if b.chance(0.2):
        parts.append(v.name)
    dtype = v.dtype
    for t in sorted(dtypes):
        dtype = promote(dtype, t)
    if stack:
        shape = v.shape[:dn] + (len(parts),) + v.shape[dn:]
    else:
        sizes = [v.shape[dn], partner.shape[dn]] + [v.shape[dn]] * (len(parts) - 2)
        if isinstance(v.shape[dn], Bat):
            total = Bat(sum(s.k for s in sizes))
        else:
            total = sum(sizes)
        shape = v.shape[:dn] + (total,) + v.shape[dn + 1:]
    if not b.fits(shape) or batch_power(shape) > 2:
        return False
    seq = b.choice(["[{}]", "({})"]).format(", ".join(parts))
    fn = "stack" if stack else b.choice(["cat", "cat", "concat"])
    dim = b.choice([f", {d}", f", dim={d}"]) if d != 0 or b.chance(0.5) else ""
    b.new(f"torch.{fn}({seq}{dim})", shape, dtype, grad=grad)
    return True


@generator("clone", ops=("copy",), weight=1)
def clone(b: Builder) -> bool:
    """clone / torch.clone / .to(dtype, copy=True)."""
    v = b.pick()
    if v is None:
        return False
    b.new(b.choice([f"{v.name}.clone()", f"torch.clone({v.name})",
                    f"{v.name}.to({DTYPE_SRC[v.dtype]}, copy=True)"]), v.shape, v.dtype,
          grad=v.grad)
    return True


@generator("device_noop", ops=(), weight=0.4)
def device_noop(b: Builder) -> bool:
    """.cpu(), .to('cpu'), .to(x.device), .contiguous(): no ops on a CPU tensor."""
    v = b.pick()
    if v is None:
        return False
    b.new(b.choice([f"{v.name}.cpu()", f'{v.name}.to("cpu")', f"{v.name}.to({v.name}.device)",
                    f"{v.name}.contiguous()"]), v.shape, v.dtype, grad=v.grad, readonly=v.readonly)
    return True
