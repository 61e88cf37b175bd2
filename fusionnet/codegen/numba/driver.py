"""numba source for a whole :class:`~fusionnet.codegen.lower.Program`: the module header,
its kernels and the ``forward`` driver that allocates (or reuses, following
``plan_buffers``) the intermediates, builds the layout views and calls the kernels, so a
forward call crosses from Python into native code once.
"""
from __future__ import annotations

import numpy as np

from ... import __version__
from ..._kernels import kernel_module_name, kernels_hash
from ..lower import Branch, Kernel, Loop, Program, View, walk_steps
from .emitters import dims, literal, render_layout
from .kernels import (IND, PARALLEL_MIN_ELEMENTS, has_parallel_variant, header, render_kernel,
                      uses_parallel)

__all__ = ["render"]


def _driver(prog: Program) -> list[str]:
    args = prog.inputs + [p.name for p in prog.params] + [c for c, _ in prog.constants]
    if uses_parallel(prog):
        args.append("par")
    lines = [header(False), f"def forward({', '.join(args)}):"]
    for sym, (array, dim) in sorted(prog.symbols.items()):
        lines.append(f"{IND}{sym} = {array}.shape[{dim}]")
    lines += _steps(prog, prog.steps, IND)
    # Never hand out an input, parameter or constant (or a view of one) itself: eager
    # would have returned a fresh tensor for `x * 1`, which simplification turned into x.
    fresh = _fresh(prog.steps)
    # In-place results last, once nothing reads the old values any more.
    lines += [f"{IND}{target}[...] = {prog.outputs[i]}" for i, target in
              sorted(prog.writes.items())]
    outs = ", ".join(o if o in fresh else f"{o}.copy()" for i, o in enumerate(prog.outputs)
                     if i not in prog.writes)
    if prog.structure == "tensor":
        lines.append(f"{IND}return {outs}")
    else:
        lines.append(f"{IND}return ({outs},)" if outs else f"{IND}return ()")
    return lines


def _fresh(steps) -> set:
    """Names of arrays these steps allocate themselves (kernel outputs, region results):
    C-contiguous and owned by the call, so they may be returned or carried as they are."""
    out = set()
    for step in steps:
        if isinstance(step, Kernel):
            out.update(step.outs)
        elif isinstance(step, (Loop, Branch)):
            out.update(step.outs)
    return out


def _carry(name: str, fresh: set) -> str:
    """``name`` as a loop variable or branch result: a C-contiguous array of its own, so
    numba sees one array type on every path (a view or an input is copied)."""
    return name if name in fresh else f"{name}.copy()"


def _steps(prog: Program, steps: list, ind: str) -> list[str]:
    """The driver lines of ``steps`` at indent ``ind`` (region bodies recursively, each
    with its own buffer reuse: nothing is reused across iterations)."""
    lines: list[str] = []
    reusable: dict[int, tuple] = {}  # buffer slot -> (var, shape, dtype) once its value is dead
    for step in steps:
        if isinstance(step, View):
            lines.append(f"{ind}{step.out} = {render_layout(step.step, step.src, step.arg)}")
        elif isinstance(step, Loop):
            lines += _loop(prog, step, ind)
        elif isinstance(step, Branch):
            lines += _branch(prog, step, ind)
        else:
            lines += _kernel_call(prog, step, ind, reusable)
    return lines


def _loop(prog: Program, loop: Loop, ind: str) -> list[str]:
    """``while``: state variables, the first test, then body and next test per iteration."""
    lines = [f"{ind}{v} = {_carry(i, set())}" for v, i in zip(loop.state, loop.init)]
    lines += _steps(prog, loop.cond.steps, ind)
    test = f"{loop.outs[0]}_test" if loop.outs else "_test"
    lines.append(f"{ind}{test} = {loop.cond.results[0]}[()]")
    lines.append(f"{ind}while {test}:")
    inner = ind + IND
    lines += _steps(prog, loop.body.steps, inner)
    fresh = _fresh(loop.body.steps) | set(loop.state)
    *new, nxt = loop.body.results
    targets = ", ".join(loop.state)
    values = ", ".join(v if v in loop.state else _carry(v, fresh) for v in new)
    if loop.state:
        lines.append(f"{inner}{targets}{',' if len(new) == 1 else ''} = {values}"
                     f"{',' if len(new) == 1 else ''}")
    lines.append(f"{inner}{test} = {nxt}[()]")
    lines += [f"{ind}{o} = {v}" for o, v in zip(loop.outs, loop.state)]
    return lines


def _branch(prog: Program, br: Branch, ind: str) -> list[str]:
    """``if``/``else`` on a 0-d bool array; both branches bind the same result names."""
    lines = [f"{ind}if {br.cond}[()]:"]
    for block in (br.then, br.orelse):
        inner = ind + IND
        lines += _steps(prog, block.steps, inner)
        fresh = _fresh(block.steps)
        lines += [f"{inner}{o} = {_carry(v, fresh)}" for o, v in zip(br.outs, block.results)]
        if not block.steps and not br.outs:
            lines.append(f"{inner}pass")
        if block is br.then:
            lines.append(f"{ind}else:")
    return lines


def _kernel_call(prog: Program, step: Kernel, ind: str, reusable: dict) -> list[str]:
    lines = []
    slot = reusable.get(step.buffer) if step.buffer is not None else None
    if slot and slot[1:] == (step.shape, step.dtype) and slot[0] not in step.operands:
        lines.append(f"{ind}{step.out} = {slot[0]}  # reuses buffer {step.buffer}")
    else:
        lines.append(f"{ind}{step.out} = np.empty({dims(step.shape)}, "
                     f"np.{np.dtype(step.dtype).name})")
    if step.buffer is not None:
        reusable[step.buffer] = (step.out, step.shape, step.dtype)
    for array, _ in step.stores:   # side outputs: fresh arrays (never planned buffers)
        lines.append(f"{ind}{array} = np.empty({dims(prog.shapes[array])}, "
                     f"np.{np.dtype(prog.dtypes[array]).name})")
    loop_dims = step.reduce["source_shape"] if step.kind == "reduction" else step.shape
    operands = [_operand(prog, o, step) for o in dict.fromkeys(step.operands)]
    sizes = [str(d) for d in loop_dims]
    call_args = ", ".join(step.outs + operands + sizes)
    if has_parallel_variant(step):
        elements = " * ".join(f"({d})" for d in sizes)
        lines.append(f"{ind}if par and {elements} >= {PARALLEL_MIN_ELEMENTS}:")
        lines.append(f"{ind}{IND}{step.name}_par({call_args})")
        lines.append(f"{ind}else:")
        lines.append(f"{ind}{IND}{step.name}({call_args})")
    else:
        lines.append(f"{ind}{step.name}({call_args})")
    return lines


def _operand(prog: Program, name: str, step: Kernel) -> str:
    if name in prog.scalars:  # literal scalars are inlined in the kernel body
        value, dtype = prog.scalars[name]
        return literal(value, dtype)
    if step.kind == "gemm" and name in step.gemm["args"]:
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
    lines = [f"# Generated by fusionnet {__version__} for graph {prog.name!r}. Do not edit.",
             f"# numba {numba.__version__}, NumPy {np.__version__}, kernels {kernels_hash()} "
             f"as {kernel_module_name('numba_kernels')}",
             "import math", "", "import numba", "import numpy as np", "",
             "from fusionnet._kernels import kernel_module", "",
             "_k = kernel_module('numba_kernels')",
             "dot_nt, dot_nn = _k.dot_nt, _k.dot_nn",
             "dot_nt_int, dot_nn_int = _k.dot_nt_int, _k.dot_nn_int",
             "int_pow, stable_sigmoid = _k.int_pow, _k.stable_sigmoid",
             "_c = kernel_module('numba_conv')",
             "conv2d_nchw, max_pool2d_nchw = _c.conv2d_nchw, _c.max_pool2d_nchw", "", ""]
    kernel_sources = {}
    for step in walk_steps(prog.steps):
        if isinstance(step, Kernel):
            variants = (False, True) if has_parallel_variant(step) else (False,)
            for parallel in variants:
                text = render_kernel(step, parallel)
                kernel_sources[step.name + ("_par" if parallel else "")] = text
                lines += [text, "", ""]
    driver = "\n".join(_driver(prog))
    kernel_sources["forward"] = driver
    return "\n".join(lines + [driver, ""]), kernel_sources
