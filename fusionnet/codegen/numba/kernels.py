"""numba source for one :class:`~fusionnet.codegen.lower.Kernel`: elementwise loop nests,
GEMM (or another native product: convolution, pooling) plus epilogue, and reductions.

Loops run over the output shape (elementwise, GEMM epilogue) or the input shape
(reductions; side outputs, ``Kernel.stores``, are stored at each index of it); every statement of the kernel body is spelled from the table in
``emitters.py`` and converted to its node's dtype. A reduction folds each element in
with its row's ``combine`` op, spelled like any elementwise op, starting from the row's
``Reduction.start``: nothing here depends on an op's name.
"""
from __future__ import annotations

import numpy as np

from ...ops import get_op
from ..lower import Kernel, Program, walk_steps
from .emitters import GEMM, convert, literal, render_op

__all__ = ["render_kernel", "has_parallel_variant", "uses_parallel", "header",
           "PARALLEL_MIN_ELEMENTS"]

IND = "    "

#: Elements from which an elementwise or row-wise reduction kernel runs its outer loop
#: in parallel (numba.prange). Measured with benchmarks/parallel_crossover.py on the
#: 2-core development machine: below ~4M elements the thread start-up costs more
#: than it saves. The driver also needs the caller's permission (``par``): only the
#: main thread launches parallel loops, since numba's default thread pool must not be
#: entered from two threads at once.
PARALLEL_MIN_ELEMENTS = 1 << 22

# error_model="numpy": 1/0 gives inf and 0/0 NaN, as in eager, instead of raising. No
# cache=True: the backend gives every function the checked on-disk cache (cache.py).
_NJIT = '@numba.njit(error_model="numpy"'


def header(parallel: bool) -> str:
    """The decorator line of a generated function."""
    return f"{_NJIT}, parallel=True)" if parallel else f"{_NJIT})"


def has_parallel_variant(k: Kernel) -> bool:
    """Elementwise kernels, and reductions that keep their outer axis (so each parallel
    iteration owns its own accumulator row), get a prange twin."""
    if k.kind == "elementwise":
        return len(k.shape) >= 1
    if k.kind == "reduction":
        src = k.reduce["source_shape"]
        dim = k.reduce["attrs"].get("dim")
        if not src or dim is None:
            return False
        axes = {a % len(src) for a in ((dim,) if isinstance(dim, int) else dim)}
        return 0 not in axes
    return False


def uses_parallel(prog: Program) -> bool:
    """Whether the driver takes the trailing ``par`` argument."""
    return any(isinstance(st, Kernel) and has_parallel_variant(st)
               for st in walk_steps(prog.steps))


# ---- statements -------------------------------------------------------------------------


def _invariant(stmt) -> bool:
    """Literal constants and reads of 0-d arrays do not depend on the loop index."""
    return stmt[0] == "const" or (stmt[0] == "load" and not stmt[3])


def _render_hoisted(k: Kernel) -> list[str]:
    """The loop-invariant statements, rendered once before the loop nest (numba's parfor
    pass cannot type a 0-d read left inside a prange loop)."""
    return _render_body(k, [st for st in k.body if _invariant(st)], IND)


def _render_body(k: Kernel, body: list, indent: str, skip_invariant: bool = False) -> list[str]:
    lines = []
    for stmt in body:
        if skip_invariant and _invariant(stmt):
            continue
        if stmt[0] == "load":
            _, v, array, index = stmt
            lines.append(f"{indent}{v} = {array}[{_index(index)}]")
        elif stmt[0] == "const":
            _, v, value, dtype = stmt
            lines.append(f"{indent}{v} = {literal(value, dtype)}")
        elif stmt[0] == "cast":
            _, v, src, dtype = stmt
            lines.append(f"{indent}{v} = {convert(src, dtype)}")
        else:
            _, v, name, attrs, args, dtype = stmt
            expr = render_op(name, attrs, args, dtype, k.dtypes.get(args[0], dtype)
                             if args else dtype)
            # Round to the node's dtype as eager does (numba would keep float64).
            lines.append(f"{indent}{v} = {convert(expr, dtype)}")
    return lines


def _index(index) -> str:
    return ", ".join(index) if index else "()"


def _loops(rank: int, indent: str, parallel: bool = False) -> tuple[list[str], str]:
    lines = []
    for i in range(rank):
        loop = "numba.prange" if parallel and i == 0 else "range"
        lines.append(f"{indent}{IND * i}for i{i} in {loop}(d{i}):")
    return lines, indent + IND * rank


def _signature(k: Kernel, rank: int, parallel: bool = False) -> str:
    params = ["out"] + [f"side{j}" for j in range(len(k.stores))] + \
        list(dict.fromkeys(k.operands)) + [f"d{i}" for i in range(rank)]
    return f"def {k.name}{'_par' if parallel else ''}({', '.join(params)}):"


def _side_stores(k: Kernel, rank: int, indent: str) -> list[str]:
    """Store each side output's value at the current index of the loop nest."""
    index = _index(tuple(f"i{i}" for i in range(rank)))
    return [f"{indent}side{j}[{index}] = {var}" for j, (_, var) in enumerate(k.stores)]


# ---- kernels ----------------------------------------------------------------------------


def _elementwise(k: Kernel, parallel: bool = False) -> list[str]:
    rank = len(k.shape)
    lines = [header(parallel), _signature(k, rank, parallel)]
    lines += _render_hoisted(k)
    loops, ind = _loops(rank, IND, parallel)
    lines += loops + _render_body(k, k.body, ind, skip_invariant=True)
    lines += _side_stores(k, rank, ind)
    lines.append(f"{ind}out[{_index(tuple(f'i{i}' for i in range(rank)))}] = {k.result}")
    return lines


def _gemm(k: Kernel, parallel: bool = False) -> list[str]:
    rank = len(k.shape)
    lines = [header(False), _signature(k, rank)]
    (product,) = [op for op in k.ops if op in GEMM]
    lines.append(f"{IND}{GEMM[product](k.gemm, k.dtype)}")  # the native kernel fills out
    if k.body:  # the epilogue, applied in place on the product
        out = f"out[{_index(tuple(f'i{i}' for i in range(rank)))}]"
        lines += _render_hoisted(k)
        loops, ind = _loops(rank, IND)
        lines += loops
        lines.append(f"{ind}acc = {out}")
        lines += _render_body(k, k.body, ind, skip_invariant=True)
        lines.append(f"{ind}{out} = {k.result}")
    return lines


def _reduction(k: Kernel, parallel: bool = False) -> list[str]:
    r = k.reduce
    src = r["source_shape"]
    rank = len(src)
    attrs = r["attrs"]
    dim = attrs.get("dim")
    axes = tuple(range(rank)) if dim is None else tuple(
        sorted({a % max(rank, 1) for a in ((dim,) if isinstance(dim, int) else dim)}))
    keepdim = attrs.get("keepdim", False)
    op = get_op(r["op"])
    facts = op.reduction  # the backend checked it is there (Backend.supports)
    acc = np.dtype(np.float64 if np.dtype(k.reduce_dtype).kind == "f" else np.int64)
    init = literal(facts.start_value(acc), acc)
    lines = [header(parallel), _signature(k, rank, parallel)]
    count = " * ".join(f"d{a}" for a in axes) or "1"
    if facts.empty_raises:  # as eager: no identity value when nothing is reduced
        lines.append(f"{IND}if {count} == 0:")
        lines.append(f'{IND * 2}raise ValueError("{op.name}() of an empty tensor has no '
                     'identity value")')
    out_index = tuple(("0" if keepdim else None) if i in axes else f"i{i}"
                      for i in range(rank))
    out_index = tuple(i for i in out_index if i is not None)
    scalar = not out_index
    if scalar:
        lines.append(f"{IND}acc = {init}")
        target = "acc"
    else:
        lines.append(f"{IND}acc = np.full(out.shape, {init}, np.{acc.name})")
        target = f"acc[{_index(out_index)}]"
    lines += _render_hoisted(k)
    loops, ind = _loops(rank, IND, parallel)
    lines += loops + _render_body(k, k.body, ind, skip_invariant=True)
    lines += _side_stores(k, rank, ind)
    combined = render_op(facts.combine, {}, [target, k.result], acc.name, acc.name)
    lines.append(f"{ind}{target} = {convert(combined, acc)}")
    scale = f" / ({count})" if facts.divide_by_count else ""
    if scalar and k.finish:  # the epilogue runs once, on the value eager would store
        lines.append(f"{IND}red = {convert(f'acc{scale}', np.dtype(k.reduce_dtype))}")
        lines += _render_body(k, k.finish, IND)
        lines.append(f"{IND}out[()] = {k.final}")
    elif scalar:
        lines.append(f"{IND}out[()] = acc{scale}")
    else:
        lines.append(f"{IND}flat_out = out.reshape(-1)")
        lines.append(f"{IND}flat_acc = acc.reshape(-1)")
        lines.append(f"{IND}for q in range(flat_acc.size):")
        lines.append(f"{IND * 2}flat_out[q] = flat_acc[q]{scale}")
    return lines


_KERNELS = {"elementwise": _elementwise, "gemm": _gemm, "reduction": _reduction}


def render_kernel(k: Kernel, parallel: bool = False) -> str:
    """The source of kernel ``k`` (its ``prange`` twin when ``parallel``)."""
    return "\n".join(_KERNELS[k.kind](k, parallel))
