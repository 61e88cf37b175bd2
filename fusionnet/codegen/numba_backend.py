"""The numba emitter: a Program becomes a Python module of ``@njit`` kernels plus one
``@njit`` driver, so a forward call crosses from Python into native code once.

Everything numba-specific lives in this file. The generated module is written
to the compile cache (``FUSIONNET_CACHE_DIR``, default ``~/.cache/fusionnet``)
under a name derived from its own source and the library versions, and its
functions use numba's on-disk cache: a second process imports the module and
loads the machine code instead of compiling. A changed source gets a new file
name, so a stale entry is never used.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading

import numpy as np

from .. import __version__
from .._kernels import kernels_hash
from ..ops import get_op
from .backend import Backend, CompiledProgram
from .lower import Kernel, Program, Unsupported, View

__all__ = ["NumbaBackend", "cache_dir"]

_IMPORT_LOCK = threading.Lock()
_IND = "    "

#: Elements from which an elementwise or row-wise reduction kernel runs its outer loop
#: in parallel (numba.prange). Measured with benchmarks/parallel_crossover.py on the
#: 2-core development machine: below ~4M elements the thread start-up costs more
#: than it saves. The driver also needs the caller's permission (``par``): only the
#: main thread launches parallel loops, since numba's default thread pool must not be
#: entered from two threads at once.
PARALLEL_MIN_ELEMENTS = 1 << 22


def cache_dir() -> str:
    """Where generated modules and numba's cache files go."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "fusionnet")
    return os.environ.get("FUSIONNET_CACHE_DIR", default)


# ---- scalar expressions ----------------------------------------------------------------------


def _literal(value, dtype: str) -> str:
    if dtype == "bool":
        return "True" if value else "False"
    if np.dtype(dtype).kind in "iu":
        return f"np.{dtype}({int(value)})"
    v = float(value)
    text = repr(v) if np.isfinite(v) else ("np.nan" if np.isnan(v) else
                                           ("np.inf" if v > 0 else "-np.inf"))
    return f"np.{dtype}({text})"


def _convert(expr: str, dtype: str) -> str:
    """``expr`` as a scalar of ``dtype``."""
    if np.dtype(dtype).kind == "b":
        return f"({expr} != 0)" if not expr.startswith("(") else f"bool{expr}"
    return f"np.{np.dtype(dtype).name}({expr})"


def _render_op(name: str, attrs: dict, args: list, dtype: str) -> str:
    """The row's numba template (a format string, or a function of args/attrs/dtype)."""
    template = get_op(name).emit["numba"]
    if template is None:
        raise Unsupported(f"op {name!r} has no numba template")
    if callable(template):
        return template(args, attrs, dtype)
    return template.format(*args)


def _invariant(stmt) -> bool:
    """Literal constants and reads of 0-d arrays do not depend on the loop index."""
    return stmt[0] == "const" or (stmt[0] == "load" and not stmt[3])


def _render_hoisted(body: list) -> list[str]:
    """The loop-invariant statements, rendered once before the loop nest (numba's parfor
    pass cannot type a 0-d read left inside a prange loop)."""
    return _render_body([st for st in body if _invariant(st)], _IND)


def _render_body(body: list, indent: str, skip_invariant: bool = False) -> list[str]:
    lines = []
    for stmt in body:
        if skip_invariant and _invariant(stmt):
            continue
        if stmt[0] == "load":
            _, v, array, index = stmt
            lines.append(f"{indent}{v} = {array}[{_index(index)}]")
        elif stmt[0] == "const":
            _, v, value, dtype = stmt
            lines.append(f"{indent}{v} = {_literal(value, dtype)}")
        elif stmt[0] == "cast":
            _, v, src, dtype = stmt
            lines.append(f"{indent}{v} = {_convert(src, dtype)}")
        else:
            _, v, name, attrs, args, dtype = stmt
            expr = _render_op(name, attrs, args, dtype)
            # Round to the node's dtype as eager does (numba would keep float64).
            lines.append(f"{indent}{v} = {_convert(expr, dtype)}")
    return lines


def _index(index) -> str:
    return ", ".join(index) if index else "()"


def _dims(shape) -> str:
    inner = ", ".join(str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


# ---- kernels ---------------------------------------------------------------------------------


def _loops(rank: int, indent: str, parallel: bool = False) -> tuple[list[str], str]:
    lines = []
    for i in range(rank):
        loop = "numba.prange" if parallel and i == 0 else "range"
        lines.append(f"{indent}{_IND * i}for i{i} in {loop}(d{i}):")
    return lines, indent + _IND * rank


# error_model="numpy": 1/0 gives inf and 0/0 NaN, as in eager, instead of raising.
_NJIT = '@numba.njit(cache=True, error_model="numpy"'


def _header(parallel: bool) -> str:
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


def _kernel_signature(k: Kernel, rank: int, parallel: bool = False) -> str:
    params = ["out"] + list(dict.fromkeys(k.operands)) + [f"d{i}" for i in range(rank)]
    return f"def {k.name}{'_par' if parallel else ''}({', '.join(params)}):"


def _elementwise(k: Kernel, parallel: bool = False) -> list[str]:
    rank = len(k.shape)
    lines = [_header(parallel), _kernel_signature(k, rank, parallel)]
    lines += _render_hoisted(k.body)
    loops, ind = _loops(rank, _IND, parallel)
    lines += loops + _render_body(k.body, ind, skip_invariant=True)
    lines.append(f"{ind}out[{_index(tuple(f'i{i}' for i in range(rank)))}] = {k.result}")
    return lines


def _gemm(k: Kernel) -> list[str]:
    g = k.gemm
    lines = [_header(False), _kernel_signature(k, 2)]
    blas_ok = np.dtype(k.dtype).kind == "f"
    fn = ("dot_nt" if g["transposed"] else "dot_nn") + ("" if blas_ok else "_loop")
    # A transposed left operand (x.T @ w) is copied contiguous: BLAS then reads it fast.
    a = f"np.ascontiguousarray({g['a']}.T)" if g.get("a_transposed") else g["a"]
    lines.append(f"{_IND}{fn}({a}, {g['b']}, out)")
    if k.body:  # the epilogue, applied in place on the GEMM result
        lines += _render_hoisted(k.body)
        loops, ind = _loops(2, _IND)
        lines += loops
        lines.append(f"{ind}acc = out[i0, i1]")
        lines += _render_body(k.body, ind, skip_invariant=True)
        lines.append(f"{ind}out[i0, i1] = {k.result}")
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
    op = r["op"]
    is_float = np.dtype(k.dtype).kind == "f"
    acc_dtype = "np.float64" if is_float else "np.int64"
    template = get_op(op).emit["numba"]
    init = template["init"] if is_float or op in ("sum", "mean") else (
        "np.iinfo(np.int64).min" if op == "max" else "np.iinfo(np.int64).max")
    combine = template["combine"]
    lines = [_header(parallel), _kernel_signature(k, rank, parallel)]
    count = " * ".join(f"d{a}" for a in axes) or "1"
    if op in ("max", "min"):  # as eager: no identity value to return for nothing
        size = " * ".join(f"d{i}" for i in range(rank)) or "1"
        lines.append(f"{_IND}if {size} == 0:")
        lines.append(f'{_IND * 2}raise ValueError("{op}() of an empty tensor has no identity '
                     'value")')
    out_index = tuple(("0" if keepdim else None) if i in axes else f"i{i}"
                      for i in range(rank))
    out_index = tuple(i for i in out_index if i is not None)
    scalar = not out_index
    if scalar:
        lines.append(f"{_IND}acc = {acc_dtype}({init})")
        target = "acc"
    else:
        lines.append(f"{_IND}acc = np.full(out.shape, {init}, {acc_dtype})")
        target = f"acc[{_index(out_index)}]"
    lines += _render_hoisted(k.body)
    loops, ind = _loops(rank, _IND, parallel)
    lines += loops + _render_body(k.body, ind, skip_invariant=True)
    lines.append(f"{ind}{target} = {combine.format(acc=target, x=k.result)}")
    scale = f" / ({count})" if op == "mean" else ""
    if scalar:
        lines.append(f"{_IND}out[()] = acc{scale}")
    else:
        lines.append(f"{_IND}flat_out = out.reshape(-1)")
        lines.append(f"{_IND}flat_acc = acc.reshape(-1)")
        lines.append(f"{_IND}for q in range(flat_acc.size):")
        lines.append(f"{_IND * 2}flat_out[q] = flat_acc[q]{scale}")
    return lines


_KERNELS = {"elementwise": _elementwise, "gemm": _gemm, "reduction": _reduction}


def uses_parallel(prog: Program) -> bool:
    """Whether the driver takes the trailing ``par`` argument."""
    return any(isinstance(st, Kernel) and has_parallel_variant(st) for st in prog.steps)


# ---- the driver ------------------------------------------------------------------------------


def _view(step: View) -> str:
    if step.op == "reshape":
        return f"np.ascontiguousarray({step.src}).reshape({_dims(step.shape)})"
    if step.op == "permute":
        return f"{step.src}.transpose({_dims(tuple(step.attrs['dims']))})"
    if step.op == "expand":
        return f"np.broadcast_to({step.src}, {_dims(step.shape)})"
    raise Unsupported(f"view op {step.op}")


def _driver(prog: Program) -> list[str]:
    args = prog.inputs + [p.name for p in prog.params] + [c for c, _ in prog.constants]
    if uses_parallel(prog):
        args.append("par")
    lines = [_header(False), f"def forward({', '.join(args)}):"]
    for sym, (array, dim) in sorted(prog.symbols.items()):
        lines.append(f"{_IND}{sym} = {array}.shape[{dim}]")
    reusable: dict[int, tuple] = {}  # buffer slot -> (var, shape, dtype) once its value is dead
    for step in prog.steps:
        if isinstance(step, View):
            lines.append(f"{_IND}{step.out} = {_view(step)}")
            continue
        slot = reusable.get(step.buffer) if step.buffer is not None else None
        if slot and slot[1:] == (step.shape, step.dtype) and slot[0] not in step.operands:
            lines.append(f"{_IND}{step.out} = {slot[0]}  # reuses buffer {step.buffer}")
        else:
            lines.append(f"{_IND}{step.out} = np.empty({_dims(step.shape)}, "
                         f"np.{np.dtype(step.dtype).name})")
        if step.buffer is not None:
            reusable[step.buffer] = (step.out, step.shape, step.dtype)
        rank = len(step.reduce["source_shape"]) if step.kind == "reduction" else len(
            step.shape)
        loop_dims = step.reduce["source_shape"] if step.kind == "reduction" else step.shape
        operands = list(dict.fromkeys(step.operands))
        operands = [_operand(prog, o, step) for o in operands]
        sizes = [str(d) for d in loop_dims][:rank]
        call_args = ", ".join([step.out] + operands + sizes)
        if has_parallel_variant(step):
            elements = " * ".join(f"({d})" for d in sizes)
            lines.append(f"{_IND}if par and {elements} >= {PARALLEL_MIN_ELEMENTS}:")
            lines.append(f"{_IND * 2}{step.name}_par({call_args})")
            lines.append(f"{_IND}else:")
            lines.append(f"{_IND * 2}{step.name}({call_args})")
        else:
            lines.append(f"{_IND}{step.name}({call_args})")
    # Never hand out an input, parameter or constant (or a view of one) itself: eager
    # would have returned a fresh tensor for `x * 1`, which simplification turned into x.
    views = {st.out for st in prog.steps if isinstance(st, View)}
    shared = set(prog.inputs) | {p.name for p in prog.params} | {c for c, _ in prog.constants}
    outs = ", ".join(f"{o}.copy()" if o in shared | views else o for o in prog.outputs)
    if prog.structure == "tensor":
        lines.append(f"{_IND}return {outs}")
    else:
        lines.append(f"{_IND}return ({outs},)")
    return lines


def _operand(prog: Program, name: str, step: Kernel) -> str:
    if name in prog.scalars:  # literal scalars are inlined in the kernel body
        value, dtype = prog.scalars[name]
        return _literal(value, dtype)
    if step.kind == "gemm" and name in (step.gemm["a"], step.gemm["b"]):
        # BLAS wants contiguous operands of one dtype (eager promotes mixed dtypes).
        if prog.dtypes.get(name, step.dtype) != step.dtype:
            return f"{name}.astype(np.{np.dtype(step.dtype).name})"
        return f"np.ascontiguousarray({name})"
    return name


def render(prog: Program) -> tuple[str, dict]:
    """The module source for ``prog`` and the source of each kernel by name."""
    header = [f"# Generated by fusionnet {__version__} for graph {prog.name!r}. Do not edit.",
              "import math", "", "import numba", "import numpy as np", "",
              "from fusionnet._kernels import kernel_module", "",
              "_k = kernel_module('numba_kernels')",
              "dot_nt, dot_nn = _k.dot_nt, _k.dot_nn",
              "dot_nt_loop, dot_nn_loop = _k.dot_nt_loop, _k.dot_nn_loop",
              "int_pow = _k.int_pow", ""]
    kernel_sources = {}
    body = []
    for step in prog.steps:
        if isinstance(step, Kernel):
            text = "\n".join(_KERNELS[step.kind](step))
            kernel_sources[step.name] = text
            body += [text, "", ""]
            if has_parallel_variant(step):
                text = "\n".join(_KERNELS[step.kind](step, parallel=True))
                kernel_sources[step.name + "_par"] = text
                body += [text, "", ""]
    driver = "\n".join(_driver(prog))
    kernel_sources["forward"] = driver
    return "\n".join(header + [""] + body + [driver, ""]), kernel_sources


class NumbaCompiled(CompiledProgram):
    """A compiled numba module; ``compile_stats`` reads numba's cache counters."""

    def compile_stats(self) -> dict:
        stats = self.fn.stats
        return {"cache_hits": sum(stats.cache_hits.values()),
                "cache_misses": sum(stats.cache_misses.values())}


class NumbaBackend(Backend):
    """CPU code generation with numba."""

    name = "numba"

    def available(self) -> bool:
        try:
            import numba  # noqa: F401, PLC0415
        except ImportError:
            return False
        return True

    def compile(self, program: Program) -> CompiledProgram:
        source, kernel_sources = render(program)
        import numba  # noqa: PLC0415 - loaded only when something is compiled

        key = hashlib.sha256("\n".join([source, __version__, numba.__version__,
                                        np.__version__, kernels_hash()]).encode())
        modname = f"fusionnet_gen_{key.hexdigest()[:20]}"
        folder = cache_dir()
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, modname + ".py")
        with _IMPORT_LOCK:
            if not os.path.exists(path):
                # Write then rename: another process may be writing the same file.
                tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
                with open(tmp, "w", encoding="utf-8") as fh:
                    fh.write(source)
                os.replace(tmp, path)
            module = sys.modules.get(modname)
            if module is None:
                spec = importlib.util.spec_from_file_location(modname, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[modname] = module
                spec.loader.exec_module(module)
        compiled = NumbaCompiled(module.forward, program, source, kernel_sources, path)
        compiled.parallel = uses_parallel(program)
        return compiled
