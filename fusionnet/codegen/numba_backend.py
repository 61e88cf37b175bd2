"""The numba emitter: a Program becomes a Python module of ``@njit`` kernels plus one
``@njit`` driver, so a forward call crosses from Python into native code once.

Everything numba-specific lives in this file (numba's cache files in ``numba_cache.py``).
The generated module names the fusionnet, numba and NumPy versions and the kernels' hash
in its header and is written to the compile cache (``FUSIONNET_CACHE_DIR``, default
``~/.cache/fusionnet``) as ``fusionnet_gen_<hash of its content>.py``; its functions
use numba's on-disk cache, so a second process loads the machine code instead of
compiling. Nothing read back is trusted: a module file whose content is not what its
name says is rewritten, a damaged numba cache file is discarded and rebuilt (each with
one warning), and a cache folder that cannot be written is replaced, for the process, by
a private temporary one (one warning).
"""
from __future__ import annotations

import atexit
import hashlib
import math
import os
import shutil
import sys
import tempfile
import threading
import types

import numpy as np

from .. import __version__
from .._kernels import kernels_hash
from ..ops import get_op
from .backend import Backend, CompiledProgram
from .lower import Kernel, Program, Unsupported, View

__all__ = ["NumbaBackend", "cache_dir", "literal"]

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


def _is_number(value) -> bool:
    return isinstance(value, (bool, int, float, np.number, np.bool_))


def _convert(expr: str, dtype: str) -> str:
    """``expr`` as a scalar of ``dtype``."""
    if np.dtype(dtype).kind == "b":
        return f"({expr} != 0)" if not expr.startswith("(") else f"bool{expr}"
    return f"np.{np.dtype(dtype).name}({expr})"


def _render_op(name: str, attrs: dict, args: list, dtype: str, operand_dtype: str) -> str:
    """The row's numba template (a format string, or a function of args/attrs/dtype).

    Scalar attributes reach the template as literals of the first operand's dtype (eager
    converts them the same way), spelled here, so a template never spells a number."""
    template = get_op(name).emit["numba"]
    if template is None:
        raise Unsupported(f"op {name!r} has no numba template")
    spelled = {k: literal(v, operand_dtype) if _is_number(v) else v for k, v in attrs.items()}
    if callable(template):
        return template(args, spelled, dtype)
    return template.format(*args, **spelled)


def _invariant(stmt) -> bool:
    """Literal constants and reads of 0-d arrays do not depend on the loop index."""
    return stmt[0] == "const" or (stmt[0] == "load" and not stmt[3])


def _render_hoisted(k: Kernel) -> list[str]:
    """The loop-invariant statements, rendered once before the loop nest (numba's parfor
    pass cannot type a 0-d read left inside a prange loop)."""
    return _render_body(k, [st for st in k.body if _invariant(st)], _IND)


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
            lines.append(f"{indent}{v} = {_convert(src, dtype)}")
        else:
            _, v, name, attrs, args, dtype = stmt
            expr = _render_op(name, attrs, args, dtype, k.dtypes.get(args[0], dtype)
                              if args else dtype)
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


# error_model="numpy": 1/0 gives inf and 0/0 NaN, as in eager, instead of raising. No
# cache=True: compile() gives every function the checked on-disk cache (numba_cache.py).
_NJIT = '@numba.njit(error_model="numpy"'


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
    lines += _render_hoisted(k)
    loops, ind = _loops(rank, _IND, parallel)
    lines += loops + _render_body(k, k.body, ind, skip_invariant=True)
    lines.append(f"{ind}out[{_index(tuple(f'i{i}' for i in range(rank)))}] = {k.result}")
    return lines


def _gemm(k: Kernel) -> list[str]:
    g = k.gemm
    lines = [_header(False), _kernel_signature(k, 2)]
    # Integer and bool products wrap around as NumPy's do (uint64 loops); floats use BLAS.
    blas_ok = np.dtype(k.dtype).kind == "f"
    fn = ("dot_nt" if g["transposed"] else "dot_nn") + ("" if blas_ok else "_int")
    # A transposed left operand (x.T @ w) is copied contiguous: BLAS then reads it fast.
    a = f"np.ascontiguousarray({g['a']}.T)" if g.get("a_transposed") else g["a"]
    lines.append(f"{_IND}{fn}({a}, {g['b']}, out)")
    if k.body:  # the epilogue, applied in place on the GEMM result
        lines += _render_hoisted(k)
        loops, ind = _loops(2, _IND)
        lines += loops
        lines.append(f"{ind}acc = out[i0, i1]")
        lines += _render_body(k, k.body, ind, skip_invariant=True)
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
    op = get_op(r["op"])
    facts, template = op.reduction, op.emit["numba"]
    if facts is None or template is None:
        raise Unsupported(f"reduction {op.name!r} has no numba template or does not say how "
                          "its accumulator starts (Op.reduction)")
    acc = np.dtype(np.float64 if np.dtype(k.dtype).kind == "f" else np.int64)
    acc_dtype = f"np.{acc.name}"
    init = literal(facts.start_value(acc), acc)
    lines = [_header(parallel), _kernel_signature(k, rank, parallel)]
    count = " * ".join(f"d{a}" for a in axes) or "1"
    if facts.empty_raises:  # as eager: no identity value to return for nothing
        size = " * ".join(f"d{i}" for i in range(rank)) or "1"
        lines.append(f"{_IND}if {size} == 0:")
        lines.append(f'{_IND * 2}raise ValueError("{op.name}() of an empty tensor has no '
                     'identity value")')
    out_index = tuple(("0" if keepdim else None) if i in axes else f"i{i}"
                      for i in range(rank))
    out_index = tuple(i for i in out_index if i is not None)
    scalar = not out_index
    if scalar:
        lines.append(f"{_IND}acc = {init}")
        target = "acc"
    else:
        lines.append(f"{_IND}acc = np.full(out.shape, {init}, {acc_dtype})")
        target = f"acc[{_index(out_index)}]"
    lines += _render_hoisted(k)
    loops, ind = _loops(rank, _IND, parallel)
    lines += loops + _render_body(k, k.body, ind, skip_invariant=True)
    combined = _render_combine(template["combine"], target, k.result, attrs, acc.name)
    lines.append(f"{ind}{target} = {_convert(combined, acc.name)}")
    scale = f" / ({count})" if facts.divide_by_count else ""
    if scalar:
        lines.append(f"{_IND}out[()] = acc{scale}")
    else:
        lines.append(f"{_IND}flat_out = out.reshape(-1)")
        lines.append(f"{_IND}flat_acc = acc.reshape(-1)")
        lines.append(f"{_IND}for q in range(flat_acc.size):")
        lines.append(f"{_IND * 2}flat_out[q] = flat_acc[q]{scale}")
    return lines


def _render_combine(template, acc: str, x: str, attrs: dict, acc_dtype: str) -> str:
    """A reduction's combine step: a format string over ``{acc}`` and ``{x}``, or a function
    ``([acc, x], attrs, accumulator dtype)`` like an elementwise template."""
    if callable(template):
        return template([acc, x], attrs, acc_dtype)
    return template.format(acc, x, acc=acc, x=x)


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
        return literal(value, dtype)
    if step.kind == "gemm" and name in (step.gemm["a"], step.gemm["b"]):
        # BLAS wants contiguous operands of one dtype (eager promotes mixed dtypes).
        if prog.dtypes.get(name, step.dtype) != step.dtype:
            return f"{name}.astype(np.{np.dtype(step.dtype).name})"
        return f"np.ascontiguousarray({name})"
    return name


def render(prog: Program) -> tuple[str, dict]:
    """The module source for ``prog`` and the source of each kernel by name."""
    import numba  # noqa: PLC0415 - loaded only when something is compiled

    # The versions and the kernels' hash are part of the content, and the file is named by
    # the hash of its content: a file whose content does not hash to its name is damaged.
    header = [f"# Generated by fusionnet {__version__} for graph {prog.name!r}. Do not edit.",
              f"# numba {numba.__version__}, NumPy {np.__version__}, kernels {kernels_hash()}",
              "import math", "", "import numba", "import numpy as np", "",
              "from fusionnet._kernels import kernel_module", "",
              "_k = kernel_module('numba_kernels')",
              "dot_nt, dot_nn = _k.dot_nt, _k.dot_nn",
              "dot_nt_int, dot_nn_int = _k.dot_nt_int, _k.dot_nn_int",
              "int_pow, stable_sigmoid = _k.int_pow, _k.stable_sigmoid", ""]
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
        modname = "fusionnet_gen_" + hashlib.sha256(source.encode()).hexdigest()[:20]
        with _IMPORT_LOCK:
            module = sys.modules.get(modname)
            if module is None:
                module = _load(modname, source)
        compiled = NumbaCompiled(module.forward, program, source, kernel_sources,
                                 module.__file__)
        compiled.parallel = uses_parallel(program)
        return compiled


# ---- the compile cache -----------------------------------------------------------------------

_usable: dict = {}  # configured cache folder -> the folder this process writes to (or None)


def _load(modname: str, source: str):
    """Write (or verify) the module file in the cache folder and execute it; numba's files
    get the checked cache. An unwritable folder is replaced by a private one; if none can
    be made, the module is compiled in memory, without a disk cache."""
    from . import numba_cache  # noqa: PLC0415 - imports numba

    folder, path = _writable_folder(), None
    while folder is not None:
        path = os.path.join(folder, modname + ".py")
        try:
            _ensure_source(path, source)
            break
        except OSError as err:  # it stopped being writable: the private folder, or memory
            folder, path = _fail_over(folder, err), None
            _usable[cache_dir()] = folder
    # Executed from the verified text, not through the import system: a stale or damaged
    # __pycache__/*.pyc next to the file is never read.
    code = compile(source, path or f"<fusionnet generated {modname}>", "exec")
    module = types.ModuleType(modname)
    module.__file__ = path or "<in memory>"
    sys.modules[modname] = module
    try:
        exec(code, module.__dict__)  # noqa: S102 - our own generated source
    except BaseException:
        del sys.modules[modname]
        raise
    if path is not None:
        numba_cache.install(module)
    return module


def _ensure_source(path: str, source: str) -> None:
    """Make ``path`` hold exactly ``source``. Its name is the hash of that content, so any
    other content (truncated, emptied, edited) is damage: rewrite it and say so once."""
    data = source.encode()
    try:
        with open(path, "rb") as fh:
            if fh.read() == data:
                return
        damaged = True
    except FileNotFoundError:
        damaged = False
    except OSError:  # unreadable (a folder of that name...): rewrite, or fail over
        damaged = True
    # Write then rename: another process may be writing the same file.
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if damaged:
        from .numba_cache import warn_once  # noqa: PLC0415
        warn_once(("module", path), f"the generated module {path} did not match its name "
                                    "(damaged or edited); it was rewritten")


def _writable_folder() -> str | None:
    """The cache folder, once per process checked to be writable; else a private one."""
    folder = cache_dir()
    if folder not in _usable:
        try:
            os.makedirs(folder, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
            _usable[folder] = folder
        except OSError as err:
            _usable[folder] = _private_folder(folder, err)
    return _usable[folder]


_private: list = []  # this process's temporary cache folder, made on first need


def _fail_over(folder: str, err: OSError) -> str | None:
    """Where to write after writing to ``folder`` failed: the private folder, else memory."""
    if not _private or folder != _private[0]:
        return _private_folder(folder, err)
    from .numba_cache import warn_once  # noqa: PLC0415

    warn_once(("unwritable", folder), f"cannot write the temporary compile folder {folder} "
                                      f"({err}); compiling in memory instead")
    return None


def _private_folder(folder: str, err: OSError) -> str | None:
    from .numba_cache import warn_once  # noqa: PLC0415

    if not _private:
        try:
            _private.append(tempfile.mkdtemp(prefix="fusionnet-cache-"))
            atexit.register(shutil.rmtree, _private[0], ignore_errors=True)
        except OSError:
            _private.append(None)
    where = (f"in the temporary folder {_private[0]} for this process" if _private[0]
             else "in memory")
    warn_once(("unwritable", folder), f"the compile cache folder {folder} cannot be written "
              f"({err}); compiling {where} instead (set FUSIONNET_CACHE_DIR to a writable "
              "folder to keep compiled code between processes)")
    return _private[0]
