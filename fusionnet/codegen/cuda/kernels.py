"""CUDA C for one :class:`~fusionnet.codegen.lower.Kernel` of a lowered Program.

Every kernel takes each array it reads or writes as a pointer plus one element stride per
dimension (so transposes and broadcasts built by the host are read in place, never
copied), and its loop sizes as ``long long`` arguments (sizes may be symbolic in the batch
size). The same statement renderer serves three launch shapes:

* **elementwise**: a grid-stride loop over the output's flat index;
* **reduction**: one block per output element; its threads fold strided elements with the
  row's ``combine`` op from the row's ``start`` (``Op.reduction``), a shared-memory tree
  combines the threads' accumulators, and thread 0 finishes (divides by the count for a
  mean) and stores. Accumulators are float64 for float results and int64 otherwise, as in
  the numba backend;
* **GEMM**: ``tiled``, a 16x16 shared-memory tiled product with the epilogue (bias,
  activation...) applied to each result before it is stored, one kernel per GEMM group;
  or ``epilogue``, the epilogue alone applied in place after cuBLAS (``cupy.matmul``).

``mode="block"`` renders a kernel's body for one block that runs it cooperatively (the
device-side loop kernels of ``loops.py``). :class:`CudaKernel.params` says what the host
passes, in order, so the runner and the CPU emulation bind arguments from one list.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...ops import get_op
from ..lower import Kernel, Program, Unsupported
from .spellings import ACC_CTYPES, convert, ctype, literal, render_op

__all__ = ["CudaKernel", "render_kernels", "statements", "elementwise_block",
           "reduction_block", "shared_declarations", "signature", "BLOCK", "RBLOCK", "TILE", "reduction_axes", "loaded_arrays"]

#: Threads per block of elementwise kernels and of reductions (a power of two: the
#: shared-memory tree halves it), and the tile edge of the tiled GEMM (TILE x TILE threads).
BLOCK = 256
RBLOCK = 256
TILE = 16

IND = "    "


@dataclass
class CudaKernel:
    """One ``__global__`` function: its name, how it is launched, what it is passed.

    ``params`` entries: ``("array", array_name, c_name, transposed)`` (pointer, then one
    stride per dim, reversed when ``transposed``: a 2-D operand read as its transpose) or
    ``("size", dim, c_name)`` (a symbolic size: int or ``"B"``/``"k*B"``)."""

    name: str
    launch: str                   # elementwise | reduction | tiled | epilogue | loop
    params: list
    source: str = ""
    step: object = None           # the program's Kernel (or Loop) it computes
    dims: tuple = ()              # the loop sizes (output, source or (M, N, K))
    extra: dict = field(default_factory=dict)


def _spell_attrs(attrs: dict, operand_dtype: str) -> dict:
    out = {}
    for key, value in attrs.items():
        if isinstance(value, (bool, int, float, np.number, np.bool_)) and key != "dtype":
            out[key] = literal(value, operand_dtype)
        else:
            out[key] = value
    return out


def _index(array: str, index) -> str:
    terms = [f"{i} * {array}_s{j}" for j, i in enumerate(index) if i != "0"]
    return " + ".join(terms) or "0"


def statements(k: Kernel, ind: str, skip=("acc",), body=None) -> list[str]:
    """The kernel body's SSA statements (or ``body``'s) as C declarations, each op's
    result converted to its node's dtype (``acc``, a GEMM's result, is declared by the
    caller)."""
    lines = []
    for stmt in k.body if body is None else body:
        if stmt[0] == "load":
            _, v, array, index = stmt
            lines.append(f"{ind}const {ctype(k.dtypes[v])} {v} = {array}[{_index(array, index)}];")
        elif stmt[0] == "const":
            _, v, value, dtype = stmt
            lines.append(f"{ind}const {ctype(dtype)} {v} = {literal(value, dtype)};")
        elif stmt[0] == "cast":
            _, v, src, dtype = stmt
            lines.append(f"{ind}const {ctype(dtype)} {v} = {convert(src, dtype)};")
        else:
            _, v, name, attrs, args, dtype = stmt
            operand = k.dtypes.get(args[0], dtype) if args else dtype
            expr = render_op(name, args, _spell_attrs(attrs, operand), dtype, operand)
            lines.append(f"{ind}const {ctype(dtype)} {v} = {convert(expr, dtype)};")
    return lines


def loaded_arrays(k: Kernel) -> list[str]:
    """The arrays the body reads, in first-read order."""
    return list(dict.fromkeys(st[2] for st in k.body + k.finish if st[0] == "load"))


def _decompose(names: list, dims: list, flat: str, ind: str) -> list[str]:
    """``names[j]`` = the C-order coordinates of flat index ``flat`` over ``dims``."""
    if not names:
        return []
    lines = [f"{ind}long long {flat}r_ = {flat};"]
    for j in range(len(names) - 1, 0, -1):
        lines.append(f"{ind}const long long {names[j]} = {flat}r_ % {dims[j]}; "
                     f"{flat}r_ /= {dims[j]};")
    lines.append(f"{ind}const long long {names[0]} = {flat}r_;")
    return lines


def _product(dims) -> str:
    return " * ".join(f"({d})" for d in dims) or "1LL"


def elementwise_block(k: Kernel, dims: list, mode: str, ind: str, out: str | None = None,
                      in_place: bool = False) -> list[str]:
    """A grid-stride (``mode="grid"``) or block-stride (``"block"``) loop over the output's
    flat index that evaluates the body and stores it; ``in_place``: the GEMM epilogue,
    whose ``acc`` is the value already stored."""
    out = out or k.out
    rank = len(dims)
    start, stride = (("(long long)blockIdx.x * blockDim.x + threadIdx.x",
                      "(long long)gridDim.x * blockDim.x") if mode == "grid"
                     else ("(long long)threadIdx.x", "(long long)blockDim.x"))
    inner = ind + IND * 2
    lines = [f"{ind}{{", f"{ind}{IND}const long long n_ = {_product(dims)};",
             f"{ind}{IND}for (long long e_ = {start}; e_ < n_; e_ += {stride}) {{"]
    lines += _decompose([f"i{i}" for i in range(rank)], dims, "e_", inner)
    if in_place:
        lines.append(f"{inner}const {ctype(k.dtypes['acc'])} acc = {out}[e_];")
    lines += statements(k, inner)
    lines += side_stores(k, rank, inner)
    lines += [f"{inner}{out}[e_] = {convert(k.result, k.dtype)};", f"{ind}{IND}}}", f"{ind}}}"]
    return lines


def side_stores(k: Kernel, rank: int, ind: str) -> list[str]:
    """Store each side output (``Kernel.stores``) at the current index ``i0..`` of the
    loop nest (through its strides, like every array parameter)."""
    index = tuple(f"i{i}" for i in range(rank))
    return [f"{ind}{array}[{_index(array, index)}] = {convert(var, k.dtypes[var])};"
            for array, var in k.stores]


def reduction_axes(k: Kernel) -> tuple:
    """The reduced source axes, as the numba backend reads ``dim``."""
    rank = len(k.reduce["source_shape"])
    dim = k.reduce["attrs"].get("dim")
    if dim is None:
        return tuple(range(rank))
    return tuple(sorted({a % max(rank, 1) for a in ((dim,) if isinstance(dim, int) else dim)}))


def _acc_dtype(dtype) -> str:
    return ACC_CTYPES[np.dtype(dtype).kind]


def reduction_block(k: Kernel, dims: list, mode: str, ind: str) -> list[str]:
    """One output element per block (``grid``) or each in turn (``block``): strided
    partial accumulators, a shared-memory tree, thread 0 finishes and stores."""
    facts = get_op(k.reduce["op"]).reduction
    acc = _acc_dtype(k.reduce_dtype)
    red = "red_f" if acc == "float64" else "red_i"
    axes = reduction_axes(k)
    rank = len(dims)
    kept = [i for i in range(rank) if i not in axes]
    init = literal(facts.start_value(np.dtype(acc)), acc)

    def combine(a, b):
        return convert(render_op(facts.combine, [a, b], {}, acc, acc), acc)

    q_start, q_stride = ("blockIdx.x", "gridDim.x") if mode == "grid" else ("0", "1")
    i1, i2, i3 = ind + IND, ind + IND * 2, ind + IND * 3
    lines = [f"{ind}{{",
             f"{i1}const long long nout_ = {_product([dims[i] for i in kept])};",
             f"{i1}const long long nred_ = {_product([dims[i] for i in axes])};",
             f"{i1}for (long long q_ = {q_start}; q_ < nout_; q_ += {q_stride}) {{"]
    lines += _decompose([f"i{i}" for i in kept], [dims[i] for i in kept], "q_", i2)
    lines += [f"{i2}{ctype(acc)} acc_ = {init};",
              f"{i2}for (long long e_ = threadIdx.x; e_ < nred_; e_ += blockDim.x) {{"]
    lines += _decompose([f"i{i}" for i in axes], [dims[i] for i in axes], "e_", i3)
    lines += statements(k, i3)
    lines += side_stores(k, rank, i3)
    lines += [f"{i3}acc_ = {combine('acc_', k.result)};", f"{i2}}}",
              f"{i2}{red}[threadIdx.x] = acc_;", f"{i2}__syncthreads();",
              f"{i2}for (unsigned s_ = blockDim.x / 2; s_ > 0; s_ >>= 1) {{",
              f"{i3}if (threadIdx.x < s_) {red}[threadIdx.x] = "
              f"{combine(f'{red}[threadIdx.x]', f'{red}[threadIdx.x + s_]')};",
              f"{i3}__syncthreads();", f"{i2}}}"]
    value = f"{red}[0]"
    if facts.divide_by_count:
        value = f"((double)({value}) / (double)(nred_))"
    if k.finish:  # a full reduction's epilogue: thread 0 runs it on the finished value
        lines += [f"{i2}if (threadIdx.x == 0) {{",
                  f"{i3}const {ctype(k.reduce_dtype)} red = {convert(value, k.reduce_dtype)};"]
        lines += statements(k, i3, body=k.finish)
        lines += [f"{i3}{k.out}[q_] = {convert(k.final, k.dtype)};", f"{i2}}}"]
    else:
        lines += [f"{i2}if (threadIdx.x == 0) {k.out}[q_] = {convert(value, k.dtype)};"]
    lines += [f"{i2}__syncthreads();", f"{i1}}}", f"{ind}}}"]
    return lines


def shared_declarations(kernels: list, ind: str = IND) -> list[str]:
    """The reductions' shared-memory trees (one per accumulator type used)."""
    types = {_acc_dtype(k.reduce_dtype) for k in kernels if k.kind == "reduction"}
    return [f"{ind}__shared__ {ctype(t)} {'red_f' if t == 'float64' else 'red_i'}[{RBLOCK}];"
            for t in sorted(types)]


def signature(name: str, params: list, prog: Program) -> str:
    """``extern "C" __global__ void name(...)`` for ``params`` (see :class:`CudaKernel`)."""
    parts = []
    for p in params:
        if p[0] == "array":
            _, array, cname, _ = p
            parts.append(f"{ctype(prog.dtypes[array])}* {cname}")
            parts += [f"long long {cname}_s{j}" for j in range(len(prog.shapes[array]))]
        else:
            parts.append(f"long long {p[2]}")
    return f'extern "C" __global__ void {name}({", ".join(parts)})'


def _array_params(names) -> list:
    return [("array", n, n, False) for n in names]


def _size_params(dims, prefix: str = "d") -> tuple[list, list]:
    """Size parameters for ``dims`` and their C names."""
    names = [f"{prefix}{i}" for i in range(len(dims))]
    return [("size", d, n) for d, n in zip(dims, names)], names


def _emit(name, launch, params, body, prog, step, dims, extra=None) -> CudaKernel:
    source = "\n".join([signature(name, params, prog) + " {"] + body + ["}"])
    return CudaKernel(name, launch, params, source, step, tuple(dims), extra or {})


def _elementwise(prog: Program, k: Kernel) -> CudaKernel:
    size_params, dims = _size_params(k.shape)
    params = _array_params(k.outs + [a for a in loaded_arrays(k) if a not in k.outs]) + \
        size_params
    return _emit(k.name, "elementwise", params, elementwise_block(k, dims, "grid", IND),
                 prog, k, k.shape)


def _reduction(prog: Program, k: Kernel) -> CudaKernel:
    src = k.reduce["source_shape"]
    size_params, dims = _size_params(src)
    params = _array_params(k.outs + [a for a in loaded_arrays(k) if a not in k.outs]) + \
        size_params
    body = shared_declarations([k]) + reduction_block(k, dims, "grid", IND)
    return _emit(k.name, "reduction", params, body, prog, k, src)


def _gemm_acc(k: Kernel) -> str:
    dt = np.dtype(k.dtypes["acc"])
    if dt.kind == "f":
        return ctype(dt)  # float accumulates in float, as cuBLAS does
    if dt.kind in "iu":
        return "unsigned long long"  # wraps around as NumPy's integer matmul does
    raise Unsupported(f"the CUDA backend has no GEMM for {dt.name}")


def _tiled(prog: Program, k: Kernel) -> CudaKernel:
    g = k.gemm
    m, n = k.shape
    # K: the contracted size, read from the left operand as it is used.
    a_shape = prog.shapes[g["a"]]
    kdim = a_shape[0] if g.get("a_transposed") else a_shape[1]
    epi = [a for a in loaded_arrays(k) if a != k.out]
    params = ([("array", k.out, k.out, False), ("array", g["a"], "A_", bool(g.get("a_transposed"))),
               ("array", g["b"], "B_", bool(g["transposed"]))] + _array_params(epi)
              + [("size", m, "d0"), ("size", n, "d1"), ("size", kdim, "K_")])
    acc = _gemm_acc(k)
    t, i1 = TILE, IND * 2
    body = [f"{IND}__shared__ {acc} As_[{t}][{t + 1}];", f"{IND}__shared__ {acc} Bs_[{t}][{t + 1}];",
            f"{IND}const long long i0 = (long long)blockIdx.y * {t} + threadIdx.y;",
            f"{IND}const long long i1 = (long long)blockIdx.x * {t} + threadIdx.x;",
            f"{IND}{acc} sum_ = 0;",
            f"{IND}for (long long k0_ = 0; k0_ < K_; k0_ += {t}) {{",
            f"{i1}const long long ka_ = k0_ + threadIdx.x, kb_ = k0_ + threadIdx.y;",
            f"{i1}As_[threadIdx.y][threadIdx.x] = (i0 < d0 && ka_ < K_) ? "
            f"({acc})A_[i0 * A__s0 + ka_ * A__s1] : ({acc})0;",
            f"{i1}Bs_[threadIdx.y][threadIdx.x] = (kb_ < K_ && i1 < d1) ? "
            f"({acc})B_[kb_ * B__s0 + i1 * B__s1] : ({acc})0;",
            f"{i1}__syncthreads();",
            f"{i1}for (int kk_ = 0; kk_ < {t}; ++kk_) "
            "sum_ += As_[threadIdx.y][kk_] * Bs_[kk_][threadIdx.x];",
            f"{i1}__syncthreads();", f"{IND}}}",
            f"{IND}if (i0 < d0 && i1 < d1) {{",
            f"{i1}const {ctype(k.dtypes['acc'])} acc = {convert('sum_', k.dtypes['acc'])};"]
    body += statements(k, i1)
    body += [f"{i1}{k.out}[i0 * d1 + i1] = {convert(k.result, k.dtype)};", f"{IND}}}"]
    return _emit(k.name, "tiled", params, body, prog, k, (m, n, kdim))


def _epilogue(prog: Program, k: Kernel) -> CudaKernel:
    size_params, dims = _size_params(k.shape)
    params = _array_params([k.out] + [a for a in loaded_arrays(k) if a != k.out]) + size_params
    body = elementwise_block(k, dims, "grid", IND, in_place=True)
    return _emit(k.name + "_epilogue", "epilogue", params, body, prog, k, k.shape)


def render_kernels(prog: Program, k: Kernel) -> list[CudaKernel]:
    """The kernels that can compute ``k``: one, or for a GEMM the tiled kernel and (when
    there is an epilogue) the epilogue that follows cuBLAS."""
    if k.kind == "elementwise":
        return [_elementwise(prog, k)]
    if k.kind == "reduction":
        return [_reduction(prog, k)]
    out = [_tiled(prog, k)]
    if k.body:
        out.append(_epilogue(prog, k))
    return out
