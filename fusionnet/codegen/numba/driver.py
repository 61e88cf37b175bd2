"""numba source for a whole :class:`~fusionnet.codegen.lower.Program`: the module header,
its kernels and the ``forward`` driver that allocates (or reuses, following
``plan_buffers``) the intermediates, builds the layout views and calls the kernels, so a
forward call crosses from Python into native code once.
"""
from __future__ import annotations

import numpy as np

from ... import __version__
from ..._kernels import kernel_module_name, kernels_hash
from ..lower import ArgIndex, Branch, Index, Join, Kernel, Loop, Program, View, walk_steps
from .emitters import INDEX_OF, dims, literal, render_layout
from .kernels import (IND, PARALLEL_MIN_ELEMENTS, has_parallel_variant, header, render_kernel,
                      uses_parallel)
from .table import arguments, unpack_lines

__all__ = ["render"]


def _driver(prog: Program, table: tuple) -> list[str]:
    args = prog.inputs + arguments(prog, table)
    if uses_parallel(prog):
        args.append("par")
    lines = [header(False), f"def forward({', '.join(args)}):"]
    lines += unpack_lines(table, IND)
    for sym, (array, dim) in sorted(prog.symbols.items()):
        lines.append(f"{IND}{sym} = {array}.shape[{dim}]")
    inplace = _computed_in_place(prog)
    lines += _steps(prog, prog.steps, IND, set(prog.outputs), inplace=inplace)
    # Never hand out an input, parameter or constant (or a view of one) itself: eager
    # would have returned a fresh tensor for `x * 1`, which simplification turned into x.
    fresh = _fresh(prog.steps)
    # In-place results last, once nothing reads the old values any more.
    lines += [f"{IND}{target}[...] = {prog.outputs[i]}" for i, target in
              sorted(prog.writes.items()) if prog.outputs[i] not in inplace]
    outs = ", ".join(o if o in fresh else f"{o}.copy()" for i, o in enumerate(prog.outputs)
                     if i not in prog.writes)
    if prog.structure == "tensor":
        lines.append(f"{IND}return {outs}")
    else:
        lines.append(f"{IND}return ({outs},)" if outs else f"{IND}return ()")
    return lines


def _computed_in_place(prog: Program) -> dict:
    """Results written into an argument (``prog.writes``: a training step's parameter
    and optimiser-state updates) that their kernel may compute straight into it, as
    ``out -> target``: an elementwise kernel of the top level with no side outputs,
    of the target's shape and dtype, that reads the target only at the index it
    writes (``p - lr * g``) and no other operand that may share its storage, with no
    later step reading the target's old value. The others are copied in at the end."""
    views = {st.out: st.src for st in prog.steps if isinstance(st, (View, Index))
             and not getattr(st, "place", False)}

    def root(name):
        while name in views:
            name = views[name]
        return name

    out = {}
    steps = prog.steps
    for i, target in prog.writes.items():
        name = prog.outputs[i]
        at = next((k for k, st in enumerate(steps) if isinstance(st, Kernel)
                   and st.out == name), None)
        if at is None or name in out:
            continue
        k = steps[at]
        full = tuple(f"i{d}" for d in range(len(k.shape)))
        if (k.kind != "elementwise" or k.stores or prog.shapes.get(target) != k.shape
                or prog.dtypes.get(target) != k.dtype or name in prog.writes.values()):
            continue
        if any(st[0] == "load" and st[2] == target and tuple(st[3]) != full for st in k.body):
            continue
        if any(o != target and root(o) == target for o in k.operands):
            continue
        later = set().union(*[_reads(st) for st in steps[at + 1:]]) if at + 1 < len(steps) \
            else set()
        if target in later or any(root(r) == target for r in later):
            continue
        if list(prog.writes.values()).count(target) != 1:
            continue
        out[name] = target
    return out


def _fresh(steps) -> set:
    """Names of arrays these steps allocate themselves (kernel outputs, region results):
    C-contiguous and owned by the call, so they may be returned or carried as they are."""
    out = set()
    for step in steps:
        if isinstance(step, Kernel):
            out.update(step.outs)
        elif isinstance(step, (Loop, Branch)):
            out.update(step.outs)
        elif isinstance(step, (Join, ArgIndex)) or (isinstance(step, Index) and step.place):
            out.add(step.out)
    return out


def _carry(name: str, fresh: set) -> str:
    """``name`` as a loop variable or branch result: a C-contiguous array of its own, so
    numba sees one array type on every path (a view or an input is copied)."""
    return name if name in fresh else f"{name}.copy()"


class _LoopBuffers:
    """How a ``while`` body's kernels get their output arrays.

    A loop runs its body many times, and a fresh ``np.empty`` per output per trip is
    most of what a short loop costs. Values that die within a trip are allocated once,
    before the loop (``before``). A value that becomes the next state is written into a
    *spare*: the array the state held one trip earlier, dead once the state moved on
    (double buffering); only a value carried into exactly one state variable whose old
    value nothing else keeps qualifies, the others stay fresh per trip (``carried``)."""

    def __init__(self, carried: set, spares: dict):
        self.carried, self.spares = carried, spares
        self.before: list[str] = []

    def allocate(self, name: str, expr: str) -> str | None:
        """The body line that gives ``name`` its array (None: allocated before the loop)."""
        if name in self.spares:
            self.before.append(f"{self.spares[name]} = {expr}")
            return f"{name} = {self.spares[name]}"
        if name in self.carried:
            return f"{name} = {expr}"
        self.before.append(f"{name} = {expr}")
        return None


def _reads(step) -> set:
    """Every name ``step`` reads, inside its region bodies too (an over-approximation is
    safe: it only keeps more values alive)."""
    if isinstance(step, Kernel):
        return set(step.operands)
    if isinstance(step, View):
        return {step.src}
    if isinstance(step, Join):
        return set(step.srcs)
    if isinstance(step, Index):
        return {step.src} | ({step.base} if step.base else set())
    if isinstance(step, ArgIndex):
        return {step.src}
    blocks = ((step.cond, step.body) if isinstance(step, Loop) else (step.then, step.orelse))
    names = set(step.init) if isinstance(step, Loop) else {step.cond}
    for block in blocks:
        names.update(block.results)
        for inner in block.steps:
            names |= _reads(inner)
    return names


def _live_after(steps: list, live: set) -> list[set]:
    """For each step, the names read after it (by later steps or by ``live``, what the
    code after this step list reads)."""
    after = [set()] * len(steps)
    live = set(live)
    for k in range(len(steps) - 1, -1, -1):
        after[k] = set(live)
        live |= _reads(steps[k])
    return after


def _steps(prog: Program, steps: list, ind: str, live: set, buffers=None,
           inplace=None) -> list[str]:
    """The driver lines of ``steps`` at indent ``ind`` (region bodies recursively, each
    with its own buffer reuse: nothing is reused across iterations). ``live``: names read
    after these steps; ``buffers``: a loop body's allocation plan (see ``_LoopBuffers``)."""
    lines: list[str] = []
    reusable: dict[int, tuple] = {}  # buffer slot -> (var, shape, dtype) once its value is dead
    # Arrays a loop may take over: kernel results (each its own array; a region's
    # results may be one array under two names) that no view in this list aliases.
    takeable = {o for step in steps if isinstance(step, Kernel) for o in step.outs}
    takeable -= {step.src for step in steps if isinstance(step, (View, Index))}
    for step, after in zip(steps, _live_after(steps, live)):
        if isinstance(step, View):
            lines.append(f"{ind}{step.out} = {render_layout(step.step, step.src, step.arg)}")
        elif isinstance(step, Loop):
            owned = _owned_inits(step, takeable, after) if buffers is None else set()
            # An init handed over without a copy may be the loop's result (no trip) or a
            # spare (overwritten): its buffer slot must not be reused after the loop.
            for slot, held in list(reusable.items()):
                if held[0] in owned:
                    del reusable[slot]
            lines += _loop(prog, step, ind, owned)
        elif isinstance(step, Branch):
            lines += _branch(prog, step, ind, after)
        elif isinstance(step, Join):
            lines += _join(step, ind, buffers)
        elif isinstance(step, Index):
            lines += _index(step, ind, buffers)
        elif isinstance(step, ArgIndex):
            lines += _arg_index(step, ind, buffers)
        else:
            lines += _kernel_call(prog, step, ind, reusable, buffers, inplace or {})
    return lines


def _owned_inits(loop: Loop, takeable: set, after: set) -> set:
    """Initial values the loop may take over without a copy (its spare, then, or its
    result): ``takeable`` arrays of this step list, passed once and read by nothing else,
    neither after the loop nor inside it. Not in a loop body, whose arrays may be
    allocated once for all trips (``_LoopBuffers``)."""
    inside = set()
    for block in (loop.cond, loop.body):
        inside.update(block.results)
        for step in block.steps:
            inside |= _reads(step)
    once = [i for i in loop.init if loop.init.count(i) == 1]
    return {i for i in once if i in takeable and i not in after and i not in inside}


def _loop(prog: Program, loop: Loop, ind: str, owned: set = frozenset()) -> list[str]:
    """``while``: state variables, the first test, then body and next test per iteration."""
    lines = [f"{ind}{v} = {i if i in owned else _carry(i, set())}"
             for v, i in zip(loop.state, loop.init)]
    lines += _steps(prog, loop.cond.steps, ind, set(loop.cond.results))
    test = f"{loop.outs[0]}_test" if loop.outs else "_test"
    lines.append(f"{ind}{test} = {loop.cond.results[0]}[()]")
    *new, nxt = loop.body.results
    buffers = _LoopBuffers(set(new), _spares(prog, loop, new))
    inner = ind + IND
    body = _steps(prog, loop.body.steps, inner, set(loop.body.results), buffers)
    lines += [ind + line for line in buffers.before]
    lines.append(f"{ind}while {test}:")
    lines += body
    fresh = _fresh(loop.body.steps) | set(loop.state)
    # The state's old arrays become the spares the next trip writes into.
    lines += [f"{inner}{buffers.spares[v]} = {s}" for s, v in zip(loop.state, new)
              if v in buffers.spares]
    targets = ", ".join(loop.state)
    values = ", ".join(v if v in loop.state else _carry(v, fresh) for v in new)
    if loop.state:
        lines.append(f"{inner}{targets}{',' if len(new) == 1 else ''} = {values}"
                     f"{',' if len(new) == 1 else ''}")
    lines.append(f"{inner}{test} = {nxt}[()]")
    lines += [f"{ind}{o} = {v}" for o, v in zip(loop.outs, loop.state)]
    return lines


def _spares(prog: Program, loop: Loop, new: list) -> dict:
    """New state values that may be written into the array their state held a trip
    earlier: made by a kernel of the body itself, carried into one state variable of the
    same shape and dtype, and that variable's old value is carried nowhere."""
    made = set()
    for step in loop.body.steps:
        if isinstance(step, Kernel):
            made.update(step.outs)
    spares = {}
    for s, i, v in zip(loop.state, loop.init, new):
        if (v in made and new.count(v) == 1 and s not in new
                and prog.shapes.get(v) == prog.shapes.get(i) is not None
                and prog.dtypes.get(v) == prog.dtypes.get(i)):
            spares[v] = f"{v}_spare"
    return spares


def _branch(prog: Program, br: Branch, ind: str, live: set = frozenset()) -> list[str]:
    """``if``/``else`` on a 0-d bool array; both branches bind the same result names."""
    lines = [f"{ind}if {br.cond}[()]:"]
    for block in (br.then, br.orelse):
        inner = ind + IND
        lines += _steps(prog, block.steps, inner, set(block.results) | set(live))
        fresh = _fresh(block.steps)
        lines += [f"{inner}{o} = {_carry(v, fresh)}" for o, v in zip(br.outs, block.results)]
        if not block.steps and not br.outs:
            lines.append(f"{inner}pass")
        if block is br.then:
            lines.append(f"{ind}else:")
    return lines


def _kernel_call(prog: Program, step: Kernel, ind: str, reusable: dict,
                 buffers: _LoopBuffers | None = None, inplace=None) -> list[str]:
    lines = []
    slot = reusable.get(step.buffer) if step.buffer is not None else None
    # A loop-carried value never takes over another value's buffer: inside a loop body
    # that buffer may be one allocated once before the loop and rewritten every trip.
    # (plan_buffers gives body results no slot today; this keeps it so if that changes.)
    carried = buffers is not None and step.out in buffers.carried
    if inplace and step.out in inplace:  # an update computed into its target
        lines.append(f"{ind}{step.out} = {inplace[step.out]}  # in place")
    elif (slot and slot[1:] == (step.shape, step.dtype) and slot[0] not in step.operands
            and not carried):
        lines.append(f"{ind}{step.out} = {slot[0]}  # reuses buffer {step.buffer}")
    else:
        lines += _allocate(step.out, step.shape, step.dtype, ind, buffers)
    if step.buffer is not None:
        reusable[step.buffer] = (step.out, step.shape, step.dtype)
    for array, _ in step.stores:   # side outputs: fresh arrays (never planned buffers)
        lines += _allocate(array, prog.shapes[array], prog.dtypes[array], ind, buffers)
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


def _join(step: Join, ind: str, buffers) -> list[str]:
    """``cat``/``stack``: a fresh array, each source assigned to its slice of the axis
    (numba converts a source of another dtype as eager's promotion does: by value)."""
    lines = _allocate(step.out, step.shape, step.dtype, ind, buffers)
    start = "0"
    for k, (src, size) in enumerate(zip(step.srcs, step.sizes)):
        index = [":"] * len(step.shape)
        if step.stacked:
            index[step.axis] = str(k)
        else:
            end = f"{start} + ({size})" if start != "0" else f"({size})"
            index[step.axis] = f"{start}:{end}"
            start = end
        lines.append(f"{ind}{step.out}[{', '.join(index)}] = {src}")
    return lines


def _key_source(key: tuple) -> str:
    """A basic index as source text (``1:3, None, ..., -1``)."""
    def item(k):
        if k is None:
            return "None"
        if k is Ellipsis:
            return "..."
        if isinstance(k, slice):
            text = ("" if k.start is None else str(k.start)) + ":" + (
                "" if k.stop is None else str(k.stop))
            return text + ("" if k.step is None else f":{k.step}")
        return str(int(k))
    return ", ".join(item(k) for k in key) if key else "..."


def _index(step: Index, ind: str, buffers) -> list[str]:
    """Basic indexing: a view ``src[key]`` (numba returns a scalar, not a 0-d view, when
    ints pick one element: that case is a one-element slice, reshaped); or, for a
    ``place``, zeros (or a copy of ``base``: ``setitem``) with ``src`` written at ``key``
    (numba broadcasts it and converts it by value, as NumPy's assignment does)."""
    key = _key_source(step.key)
    if step.place:
        lines = _allocate(step.out, step.shape, step.dtype, ind, buffers)
        return lines + [f"{ind}{step.out}[...] = {step.base or 0}",
                        f"{ind}{step.out}[{key}] = {step.src}"]
    if not step.shape:
        ints = [k for k in step.key if k is not None and k is not Ellipsis]
        picks = ", ".join(f"{k}:{k + 1 if k != -1 else ''}" for k in ints)
        return [f"{ind}{step.out} = np.ascontiguousarray({step.src}[{picks}]).reshape(())"]
    return [f"{ind}{step.out} = {step.src}[{key}]"]


def _arg_index(step: ArgIndex, ind: str, buffers) -> list[str]:
    """``argmax``/``argmin``: NumPy's function, which numba compiles (first index, NaN
    counting as the extreme, as eager); an empty reduction raises eager's error (numba's
    own would be a ZeroDivisionError)."""
    fn, src = INDEX_OF[step.which], step.src
    lines = _allocate(step.out, step.shape, step.dtype, ind, buffers)
    if step.src_rank == 0:  # the only element's index
        return lines + [f"{ind}{step.out}[...] = 0"]
    empty = f"{src}.size == 0" if step.axis is None else f"{src}.shape[{step.axis}] == 0"
    lines += [f"{ind}if {empty}:",
              f'{ind}{IND}raise ValueError("{step.op}() of an empty tensor has no identity '
              'value")']
    if step.axis is None:
        return lines + [f"{ind}{step.out}[...] = {fn}({src})"]
    return lines + [f"{ind}{step.out}[...] = {fn}({src}, axis={step.axis}).reshape("
                    f"{dims(step.shape) if step.shape else '()'})"]


def _allocate(name: str, shape, dtype, ind: str, buffers) -> list[str]:
    expr = f"np.empty({dims(shape)}, np.{np.dtype(dtype).name})"
    line = f"{name} = {expr}" if buffers is None else buffers.allocate(name, expr)
    return [] if line is None else [ind + line]


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


def render(prog: Program, table: tuple = ()) -> tuple[str, dict]:
    """The module source for ``prog`` and the source of each kernel by name; the arrays
    in ``table`` (``table.slots``) reach the driver through one address table."""
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
             "pointer_at = _k.pointer_at",
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
    driver = "\n".join(_driver(prog, table))
    kernel_sources["forward"] = driver
    return "\n".join(lines + [driver, ""]), kernel_sources
