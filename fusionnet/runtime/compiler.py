"""Compiling one signature: the stages from a call to a compiled entry, in order.

:func:`compile_signature` is the whole pipeline, one named stage per line::

    trace once -> check side effects -> analyse sizes -> optimize -> lower -> build
               -> first run (its result is the caller's result)

Anything a stage cannot handle turns the entry into an *eager* entry that names the
reason (``Fallback``); a caller error (shapes that do not fit the block) propagates as
eager raised it, with a note naming what the block was compiled for.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..codegen import Unsupported, lower
from ..codegen.lower import BatchDependent
from ..codegen.backend import default_backend, get_backend
from ..graph import Graph, GraphBreak
from ..nn.module import STRUCTURE_VERSION
from ..tensor import DATA_VERSION
from ..tracer import TraceError, materialise_lazy, trace
from .guards import python_guards, snapshot
from .signature import describe_args, placement
from .symbolic import BatchAnalysis, analyse_batch

__all__ = ["Entry", "Fallback", "compile_signature"]


@dataclass(eq=False)
class Entry:
    """One compiled signature (or the reason it runs eagerly)."""

    fn: object = None
    compiled: object = None
    params: list = field(default_factory=list)        # live tensors, in driver order
    param_arrays: list = field(default_factory=list)  # their arrays when last checked
    data_version: int = -1                            # DATA_VERSION when checked
    param_paths: list = field(default_factory=list)   # (kind, dotted target) of each
    param_specs: list = field(default_factory=list)   # (shape, dtype) guarded on change
    param_grad: tuple = ()                            # requires_grad of each, at compile
    snapshot: dict = field(default_factory=dict)      # module settings baked into the code
    per_call: list = field(default_factory=list)      # Python guards checked every call
    on_move: list = field(default_factory=list)       # Python guards checked on a version move
    tail: tuple = ()                                  # param arrays + constants, as passed
    main_tail: tuple = ()                             # tail (+ ``par=True`` where parallel)
    parallel: bool = False                            # the driver takes a ``par`` flag
    fast: bool = False                                # no per-call guards: the runner's
                                                      # inline cache may take it
    version: int = -1                                 # STRUCTURE_VERSION when checked
    constants: list = field(default_factory=list)
    generic: bool = False
    spec: object = "T"                                # how outputs nest (structure.py)
    out_grad: tuple = ()                              # which outputs require grad
    grad_enabled: bool = False                        # grad mode of the signature
    reason: str = ""
    source: str = ""
    partial: bool = False                             # eager forward, children compiled
    optimized: Graph | None = None
    traced: Graph | None = None
    batch_note: str = ""
    placement: object = np.ndarray                    # where its arrays live (signature.py)
    random: list = field(default_factory=list)        # random inputs (random_inputs)
    joint: object = None                              # the compiled backward, if any
    hidden: int = 0                                   # selector outputs after the leaves
    selected: dict = field(default_factory=dict)      # leaf -> when it is a caller's object
    grad_guards: list = field(default_factory=list)   # (hidden pos, classes, traced class)
    joint_reason: str = ""                            # why the backward replays instead

    @property
    def single(self) -> bool:
        """The driver returns one array (forward returned one tensor, nothing hidden)."""
        return self.spec == "T" and not self.hidden

    def set_tail(self, tail: tuple) -> bool:
        """New parameter arrays and constants, packed as the driver takes them; False
        when they no longer fit the compiled code (a new layout: compile again)."""
        packed = self.compiled.pack(tail)
        if packed is None:
            return False
        self.tail = packed
        self.main_tail = packed + (True,) if self.parallel else packed
        return True

    def call(self, arrays):
        """Run the compiled driver on input arrays (the backend adds any flags it takes);
        random inputs are drawn here, fresh for every call (see :func:`draws`)."""
        if self.random:
            arrays = list(arrays) + draws(self.random, arrays)
        return self.compiled.call(arrays, self.tail)


class Fallback(Exception):
    """A stage cannot compile this signature: run eagerly, for ``reason`` (at ``source``)."""

    def __init__(self, reason: str, source: str = "", error: Exception | None = None,
                 traced: Graph | None = None, partial: bool = True):
        super().__init__(reason)
        self.reason, self.source, self.error, self.traced = reason, source, error, traced
        # Whether this module may still run its own forward eagerly with its children
        # compiled (not for inputs the engine cannot take at all, e.g. CUDA arrays).
        self.partial = partial


def compile_signature(runner, args) -> tuple[Entry, object]:
    """Compile ``runner``'s module for the signature of ``args``.

    Returns ``(entry, first_result)``: the result of running the new entry on ``args``
    (arrays, as the driver returns them). Raises :class:`Fallback` when it cannot."""
    where, backend = _backend_for(runner, args)
    traced = _trace(runner, args)
    _check_side_effects(traced)
    _check_output_views(traced)
    # The compiled backward is built for the numba backend only (CUDA: [gpu-1]).
    joint, joint_reason = _joint(runner, args, traced) if where is np.ndarray else (
        None, "the compiled backward is not built for CUDA yet")
    if joint is not None:  # forward-with-saves and a compiled backward (joint_module.py)
        graph, analysis, back = joint
    else:
        analysis = analyse_batch(runner.module, args, traced, runner.optimize)
        back = None
    # Taken after every trace: what the compiled code assumes from here on.
    version, data_version = STRUCTURE_VERSION[0], DATA_VERSION[0]
    if joint is None:
        graph = analysis.graph if analysis.generic else runner.optimize(traced)
    try:
        try:
            program = lower(graph, {"B": ("x0", 0)} if analysis.generic else {})
        except BatchDependent as err:  # compile for this exact batch size instead
            if not analysis.generic:
                raise
            if joint is not None:
                joint, back, joint_reason = None, None, str(err)
            analysis = BatchAnalysis(None, False, str(err))
            graph = runner.optimize(traced)
            program = lower(graph, {})
        program.table = True  # every tail reaches the driver through Entry.set_tail
        compiled = backend.compile(program)
    except Unsupported as err:
        raise Fallback(str(err), traced=traced) from None
    entry = _entry(runner.module, compiled, program, analysis, graph, traced)
    entry.placement = where
    entry.version, entry.data_version = version, data_version
    entry.snapshot = snapshot(runner.module)
    entry.per_call, entry.on_move = python_guards(traced)
    entry.passthrough = _passthrough(traced)
    entry.hidden, entry.selected = _hidden(traced), dict(getattr(traced, "selected", {}))
    entry.grad_guards = list(getattr(traced, "grad_guards", ()))
    entry.joint, entry.joint_reason = back, joint_reason
    entry.random = random_inputs(graph)
    if entry.random and entry.grad_guards:
        # A call outside the traced grad class reruns eagerly: it would draw twice.
        raise Fallback("random numbers inside forward with a loop or branch whose results "
                       "require grad only for some trip counts or branches", traced=traced)
    if entry.random and joint is None and any(traced.node(traced.output).get(
            "requires_grad", ())):
        # The replayed backward would need this call's draws: run eagerly instead.
        raise Fallback("random numbers inside forward with a backward that cannot be "
                       f"compiled ({joint_reason})", traced=traced)
    # The runner's inline cache takes NumPy inputs only: a device entry never goes there.
    entry.fast = not entry.per_call and not entry.passthrough and where is np.ndarray and \
        back is None and not entry.random and not entry.hidden
    try:  # numba compiles on the first call: do it now, so a failure falls back
        result = entry.call([t._data for t in args])
    except Exception as err:  # noqa: BLE001 - any compiler error means "run eagerly"
        raise Fallback(f"code generation failed: {type(err).__name__}: "
                       f"{str(err).splitlines()[0] if str(err) else ''}", traced=traced) from None
    if back is not None:
        from .joint_module import warm_backward  # noqa: PLC0415
        try:  # the backward too, before any backward() depends on it
            warm_backward(back, result, args)
        except Exception as err:  # noqa: BLE001
            raise Fallback(f"code generation of the backward failed: {type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}",
                           traced=traced) from None
    return entry, result


def _backend_for(runner, args):
    """``(placement, backend)`` for these inputs: numba for host arrays, CUDA for device
    arrays. Inputs on different devices run eagerly (eager raises, or copes); parameters on
    another device than the inputs make the trace itself raise eager's error."""
    places = {placement(t._data) for t in args}
    if len(places) > 1:
        raise Fallback("inputs are on different devices", partial=False)
    where = places.pop() if places else np.ndarray
    on_host = where is np.ndarray
    if runner.backend == ("cuda" if on_host else "numba"):
        raise Fallback(f"backend={runner.backend!r} was requested for inputs "
                       f"{'on the CPU' if on_host else 'on a CUDA device'}", partial=False)
    return where, default_backend() if on_host else get_backend("cuda")


def random_inputs(graph: Graph) -> list:
    """``[(shape or symbolic shape, kind, dtype, generator), ...]``: the random inputs of
    ``graph`` (``rand``/``randn`` inside forward), in input order."""
    out = []
    for n in graph.inputs:
        d = graph.node(n)
        if d.get("random"):
            kind, dtype = d["random"]
            out.append((d.get("sym_shape", d["shape"]), kind, np.dtype(dtype), d["ref"]))
    return out


def draws(specs, arrays) -> list:
    """The random input arrays of one call, drawn in trace order from their generators
    (so the stream moves on exactly as eager's ``rand``/``randn`` calls would move it)."""
    from ..random import draw  # noqa: PLC0415
    from .symbolic import evaluate  # noqa: PLC0415

    batch = arrays[0].shape[0] if arrays and arrays[0].ndim else 0
    return [draw(gen, kind, tuple(evaluate(d, batch) for d in shape), dtype)
            for shape, kind, dtype, gen in specs]


def _joint(runner, args, traced: Graph):
    """``((forward graph, analysis, backward), "")`` when the output requires grad and
    the backward compiles; ``(None, why not)`` otherwise (the backward then replays the
    traced graph eagerly, ``backward.py``)."""
    from .joint import NotDifferentiable  # noqa: PLC0415
    from .joint_module import build_joint  # noqa: PLC0415

    out = traced.node(traced.output)
    if not traced.grad_enabled or not any(out.get("requires_grad", ())):
        return None, ""
    if _passthrough(traced):
        return None, "an output is an input or a parameter itself"
    try:
        joint = build_joint(runner, args, traced, runner.optimize)
    except NotDifferentiable as err:
        return None, str(err)
    except Exception as err:  # noqa: BLE001 - the replayed backward still works
        return None, f"building the backward failed: {type(err).__name__}: {err}"
    if getattr(traced, "grad_guards", None):
        return None, ("whether an output requires grad depends on a loop's trip count or "
                      "the branch taken (checked on every call)")
    if _hidden(traced):
        return None, "an output may be an input or a parameter itself"
    return joint, ""


def _trace(runner, args) -> Graph:
    if not runner.materialised:
        materialise_lazy(runner.module, args)
        runner.materialised = True
    before = STRUCTURE_VERSION[0]
    try:
        traced = trace(runner.module, *args)
    except GraphBreak as brk:
        raise Fallback(brk.reason, brk.source, brk) from None
    except TraceError as err:
        raise Fallback(str(err)) from None
    except Exception as err:
        # The block rejects these inputs, as eager would: the same exception, with a note.
        known = runner.describe_compiled() or "nothing yet"
        if hasattr(err, "add_note"):
            err.add_note(f"fusionnet.fuse: {runner.name} was called with "
                         f"({describe_args(args)}); compiled for: {known}")
        raise
    if STRUCTURE_VERSION[0] != before:
        raise Fallback("forward assigns module attributes (side effects the compiled code "
                       "would not repeat)", traced=traced)
    return traced


def _check_side_effects(traced: Graph) -> None:
    if traced.backward_error and any(traced.node(traced.output).get("requires_grad", ())):
        # Eager raises this at backward(); running eagerly keeps that (a functional
        # compiled graph would give a gradient instead).
        raise Fallback("forward modifies in place a tensor its own backward needs (eager's "
                       f"backward raises: {traced.backward_error})", traced=traced)
    if traced.input_mutations:
        raise Fallback("forward writes into its input in place (the compiled code would "
                       "not)", traced.input_mutations[0], traced=traced)


def _check_output_views(traced: Graph) -> None:
    """Eager returns a view of an input or of module state (``nn.Flatten``, ``x.t()``,
    ``self.weight[0]``) sharing its storage, so a later in-place write into either one
    changes both; the compiled driver returns fresh arrays. Such a block runs eagerly
    (an output that *is* an input or a parameter is handed back as it is instead)."""
    from ..passes.plan_buffers import view_root  # noqa: PLC0415

    if getattr(traced, "output_alias", ""):
        raise Fallback(traced.output_alias, traced=traced)
    for i, leaf in enumerate(_leaves(traced)):
        nid, steps = view_root(traced, leaf)
        d = traced.node(nid)
        if steps and (d["kind"] == "input" or "ref" in d):
            what = f"input {d['target']}" if d["kind"] == "input" else "module state"
            raise Fallback(f"output {i} is a view of {what} (eager returns a tensor sharing "
                           "its storage; the compiled code would return a copy)",
                           traced=traced)


def _passthrough(traced: Graph) -> dict:
    """Output leaves that *are* an input or a parameter in the trace: eager returns that
    object itself (``return x.flatten()`` of a 1-D x), so the runtime does too."""
    out = {}
    for i, a in enumerate(_leaves(traced)):
        d = traced.node(a)
        if d["kind"] == "input":
            out[i] = ("input", d["target"])
        elif "ref" in d and not d.get("detach") and not d.get("external"):
            out[i] = ("ref", d["ref"])
    return out


def _hidden(traced: Graph) -> int:
    """How many selector outputs the driver returns after the leaves (tracer.py,
    ``_select_passthrough``)."""
    return traced.node(traced.output).get("hidden", 0)


def _leaves(traced: Graph) -> list:
    """The output leaves forward returned (without the hidden selectors)."""
    args = traced.node(traced.output)["args"]
    return list(args[:len(args) - _hidden(traced)])


def _entry(module, compiled, program, analysis, optimized, traced) -> Entry:
    out = traced.node(traced.output)
    entry = Entry(fn=compiled.fn, compiled=compiled,
                  params=[p.ref for p in program.params],
                  param_arrays=[p.ref._data for p in program.params],
                  param_paths=[(p.kind, p.target) for p in program.params],
                  param_specs=[(tuple(p.ref._data.shape), p.ref._data.dtype)
                               for p in program.params],
                  param_grad=tuple(bool(p.ref.requires_grad) for p in program.params),
                  constants=[v for _, v in program.constants], generic=analysis.generic,
                  parallel=compiled.parallel, spec=out.get("spec", "T"),
                  out_grad=tuple(out.get("requires_grad", ())),
                  grad_enabled=traced.grad_enabled, optimized=optimized, traced=traced,
                  batch_note="" if analysis.generic else analysis.reason)
    if not entry.set_tail(tuple(p.ref._data for p in program.params) + tuple(
            v for _, v in program.constants)):  # the table was planned from these arrays
        raise RuntimeError(f"fusionnet: {compiled.program.name}: the arrays compiled for "
                           "do not fit the compiled driver")
    return entry
