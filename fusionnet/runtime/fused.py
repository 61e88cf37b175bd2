"""``fuse``: run a block's whole forward as one compiled call, with guards and fallbacks.

On the first call for an input signature (shapes, dtypes, device, ``training``)
the runner traces, optimizes, lowers and compiles; later calls with that
signature go straight to the compiled driver. Parameters are passed in at
call time, so weight updates are seen without recompiling. Sizes are symbolic
where the graph allows (see ``symbolic.py``): a new batch size reuses the code.

Never wrong silently: a graph break or an op without an emitter runs the block
eagerly with one warning naming the reason (or raises with ``fallback=False``);
every compile and its reason is counted and shown by ``explain``.
"""
from __future__ import annotations

import operator
import threading
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .. import autograd
from ..codegen import Unsupported, get_backend, lower
from ..graph import Graph, GraphBreak
from ..interpreter import run as run_graph
from ..nn.module import STRUCTURE_VERSION
from ..ops import Kind, Op
from ..passes import optimize
from ..tensor import DATA_VERSION, Tensor
from ..tracer import TraceError, materialise_lazy, trace
from .guards import on_main_thread, resolve, resolve_or_none, snapshot, user_stacklevel
from .symbolic import analyse_batch

__all__ = ["FusionRunner", "FusionFallbackWarning", "FuseInputError", "in_eager_region"]

_local = threading.local()
_DATA = operator.attrgetter("_data")


class FusionFallbackWarning(UserWarning):
    """A fused block runs eagerly; the message says why and where."""


class FuseInputError(ValueError):
    """Inputs that no compiled signature admits and that the block itself rejects.

    Raised as a subclass that is also the error eager raised (TypeError,
    RuntimeError, IndexError...), so code catching eager's exception still does.
    """


_INPUT_ERRORS = {kind: type(f"FuseInput{kind.__name__}", (FuseInputError, kind), {})
                 for kind in (TypeError, RuntimeError, IndexError)}


def _input_error(err: Exception, message: str) -> FuseInputError:
    for kind, cls in _INPUT_ERRORS.items():
        if isinstance(err, kind):
            return cls(message)
    return FuseInputError(message)


def in_eager_region() -> bool:
    """True while the runtime itself is tracing or falling back (nested blocks run inline)."""
    return getattr(_local, "depth", 0) > 0


@contextmanager
def _eager_region():
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


@dataclass(eq=False)
class _Entry:
    """One compiled signature (or the reason it runs eagerly)."""

    fn: object = None
    compiled: object = None
    params: list = field(default_factory=list)        # live tensors, in driver order
    param_arrays: list = field(default_factory=list)  # their arrays when last checked
    data_version: int = -1                            # DATA_VERSION when checked
    param_paths: list = field(default_factory=list)   # (kind, dotted target) of each
    snapshot: dict = field(default_factory=dict)      # module settings baked into the code
    tail: tuple = ()                                  # param arrays + constants, as passed
    parallel: bool = False                            # the driver takes a ``par`` flag
    version: int = -1                                 # STRUCTURE_VERSION when checked
    param_specs: list = field(default_factory=list)   # (shape, dtype) guarded per call
    constants: list = field(default_factory=list)
    generic: bool = False
    structure: str = "tensor"
    reason: str = ""
    source: str = ""
    optimized: Graph | None = None
    traced: Graph | None = None
    batch_note: str = ""


def _describe(args) -> str:
    return ", ".join(f"{tuple(t.shape)} {t._data.dtype}" for t in args)


class FusionRunner:
    """The per-module compile cache and call path behind ``fuse``."""

    def __init__(self, module, eager_call, name: str, backend: str = "auto", passes=None,
                 fallback: bool = True, cache_size: int = 32):
        if backend not in ("auto", "numba", "eager"):
            raise ValueError(f"fuse: backend must be 'auto', 'numba' or 'eager', got {backend!r}")
        self.module = module
        self.eager_call = eager_call
        self.name = name
        self.backend = backend
        self.passes = passes
        self.fallback = fallback
        self.cache_size = cache_size
        self.exact: OrderedDict = OrderedDict()
        self.generic: dict = {}
        self.lock = threading.RLock()
        self.compiles: list[str] = []     # one reason per compile
        self.last = None                  # (training, shape, dtype, entry) of the last call
        self.pending_reason = ""          # why the next compile happens, when known early
        self.evictions = 0
        self.warned: set = set()
        self.backward_graphs: OrderedDict = OrderedDict()
        self.grad_op = Op(f"fused_{name}", Kind.OPAQUE, None, None, None, None, _fused_grad,
                          f"the compiled forward of {name}",
                          saves=lambda needs: (tuple(range(len(needs))), False))

    # ---- the call path ------------------------------------------------------------------

    def __call__(self, args, kwargs):
        # The hot path: kept short on purpose, since at small batch sizes this wrapper,
        # not the kernels, is what a fused call costs.
        if getattr(_local, "depth", 0):
            return self.eager_call(*args, **kwargs)
        last = self.last
        if last is not None and len(args) == 1 and not kwargs:
            # Same single input signature as the previous call, nothing re-wired or
            # re-bound since: skip the general lookup (a monomorphic inline cache).
            entry = last[3]
            a = getattr(args[0], "_data", None)
            if (a is not None and a.shape == last[1] and a.dtype is last[2]
                    and type(a) is np.ndarray and self.module.training is last[0]
                    and entry.version == STRUCTURE_VERSION[0]
                    and entry.data_version == DATA_VERSION[0]):
                out = Tensor._wrap(entry.fn(a, *entry.tail) if not entry.parallel else
                                   entry.fn(a, *entry.tail, on_main_thread()))
                if autograd.is_grad_enabled() and self._needs_grad(args, entry):
                    self._attach(out, args)
                return out
        if kwargs:
            self._warn_once("keyword arguments are not traced (pass tensors positionally)")
            return self._run_eager(None, args, kwargs)
        try:
            arrays = [t._data for t in args]
        except AttributeError:
            return self._non_tensor_call(args)
        # The signature is the guard: shapes, dtypes and array types (the device).
        if len(arrays) == 1:  # the common case, spelled out: this line is on the hot path
            a = arrays[0]
            key = (self.module.training, (a.shape, a.dtype, type(a)))
        else:
            key = (self.module.training, *[(a.shape, a.dtype, type(a)) for a in arrays])
        entry = self.exact.get(key)
        if entry is None:
            entry = self._lookup_or_compile(args, key)
        if entry.fn is None:
            return self._run_eager(entry, args)
        if entry.version != STRUCTURE_VERSION[0] or entry.data_version != DATA_VERSION[0]:
            # Some module was re-wired or some storage replaced since the last check.
            if not self._same_objects(entry):
                return self._state_changed(args, entry)
            params = list(map(_DATA, entry.params))
            if not self._params_still_fit(entry, params):
                return self._state_changed(args, entry)
            entry.data_version = DATA_VERSION[0]
        # Non-contiguous inputs are fine: numba compiles a strided variant for them.
        result = (entry.fn(*arrays, *entry.tail) if not entry.parallel else
                  entry.fn(*arrays, *entry.tail, on_main_thread()))
        if len(arrays) == 1 and entry.structure == "tensor":
            a = arrays[0]
            self.last = (key[0], a.shape, a.dtype, entry)
        grad = autograd.is_grad_enabled() and self._needs_grad(args, entry)
        if entry.structure == "tensor":
            out = Tensor._wrap(result)
            if grad:
                self._attach(out, args)
            return out
        if grad:  # several outputs: run the graph itself so each gets its own gradient
            return self._interpret(args)
        outs = [Tensor._wrap(r) for r in result]
        return tuple(outs) if entry.structure == "tuple" else outs

    def _non_tensor_call(self, args):
        """Only tensors are traced: other arguments run the block eagerly, with a warning
        (a NumPy array, a likely mistake, is refused outright)."""
        i, t = next((i, t) for i, t in enumerate(args) if not isinstance(t, Tensor))
        if isinstance(t, np.ndarray):
            raise FuseInputError(f"{self.name}: argument {i} must be a Tensor, got "
                                 f"{type(t).__name__} (wrap it with fusionnet.from_numpy)")
        self._warn_once(f"argument {i} is a {type(t).__name__}, not a Tensor; only tensor "
                        "arguments are traced")
        return self._run_eager(None, args)

    def _params_still_fit(self, entry, params) -> bool:
        """New parameter arrays (``p.data = ...``): fine if shape, dtype and device match."""
        for a, (shape, dtype) in zip(params, entry.param_specs):
            if type(a) is not np.ndarray or a.shape != shape or a.dtype != dtype:
                return False
        entry.param_arrays = params
        entry.tail = tuple(params) + tuple(entry.constants)
        return True

    def _needs_grad(self, args, entry) -> bool:
        return any(t.requires_grad for t in args) or any(p.requires_grad for p in entry.params)

    def _run_eager(self, entry, args, kwargs=None):
        with _eager_region():
            return self.eager_call(*args, **(kwargs or {}))

    def _same_objects(self, entry) -> bool:
        """After any module was re-wired: do the compiled references still point at the
        module's current parameters, buffers and constants?"""
        try:
            same = all(resolve(self.module, kind, target) is p
                       for p, (kind, target) in zip(entry.params, entry.param_paths))
        except (AttributeError, KeyError):
            same = False
        same = same and snapshot(self.module) == entry.snapshot
        if same:
            entry.version = STRUCTURE_VERSION[0]
        return same

    def _state_changed(self, args, entry):
        changed = [f"{tuple(p._data.shape)} {p._data.dtype} on {p.device} (was {shape} {dtype})"
                   for p, (shape, dtype) in zip(entry.params, entry.param_specs)
                   if p._data.shape != shape or p._data.dtype != dtype
                   or type(p._data) is not np.ndarray]
        changed += [f"{kind} {target!r} was replaced" for p, (kind, target)
                    in zip(entry.params, entry.param_paths)
                    if resolve_or_none(self.module, kind, target) is not p]
        now = snapshot(self.module)
        changed += [f"{'forward hooks of' if k[1] == '<hooks>' else 'attribute'} "
                    f"{'.'.join(x for x in k if x and x != '<hooks>')!r} changed"
                    for k in sorted(set(now) | set(entry.snapshot), key=str)
                    if now.get(k) != entry.snapshot.get(k)]
        with self.lock:
            self.exact.clear()
            self.generic.clear()
            self.backward_graphs.clear()
            self.last = None
            self.pending_reason = "module state changed: " + "; ".join(changed)
        depth = getattr(_local, "replays", 0)
        if depth >= 2:  # state keeps moving under us: do not recompile forever
            self._warn_once("module state keeps changing between compiles")
            return self._run_eager(None, args)
        _local.replays = depth + 1
        try:
            return self(args, {})
        finally:
            _local.replays = depth

    # ---- compiling ----------------------------------------------------------------------

    def _lookup_or_compile(self, args, key) -> _Entry:
        with self.lock:
            entry = self.exact.get(key)
            if entry is not None:
                return entry
            gkey = (key[0],) + tuple((shape[1:], len(shape), dtype, kind)
                                     for shape, dtype, kind in key[1:])
            entry = self.generic.get(gkey)
            batches = {t._data.shape[0] for t in args if t.ndim}
            if entry is None or len(batches) != 1:
                entry = self._compile(args, self._why_compile(args, key))
                if entry.generic:
                    self.generic[gkey] = entry
            self.exact[key] = entry
            if len(self.exact) > self.cache_size:
                _, evicted = self.exact.popitem(last=False)
                self.evictions += 1
                if self.last is not None and self.last[3] is evicted:
                    self.last = None
            return entry

    def _why_compile(self, args, key) -> str:
        """The reason shown by ``explain`` for compiling ``key`` now."""
        if self.pending_reason:
            reason, self.pending_reason = self.pending_reason, ""
            return reason
        if not self.compiles:
            return "first call"
        if any(k[1:] == key[1:] for k in self.exact):
            return f"training mode changed to {key[0]}"
        return f"new input signature ({_describe(args)})"

    def _compile(self, args, reason: str) -> _Entry:
        self.compiles.append(reason)
        with _eager_region():
            if any(type(t._data) is not np.ndarray for t in args):
                return self._fallback(_Entry(), "inputs are on a CUDA device and the CUDA code "
                                                "generator is not built yet")
            if self.backend == "eager":
                return _Entry(reason="backend='eager' was requested")
            try:
                materialise_lazy(self.module, args)
                before = STRUCTURE_VERSION[0]
                traced = trace(self.module, *args)
            except GraphBreak as brk:
                return self._fallback(_Entry(), brk.reason, brk.source, brk)
            except TraceError as err:
                return self._fallback(_Entry(), str(err))
            except (RuntimeError, ValueError, TypeError, IndexError) as err:
                known = "; ".join(_describe_entry(e) for e in self.exact.values()) or "nothing yet"
                raise _input_error(err, f"{self.name}: inputs ({_describe(args)}) do not fit "
                                   f"this module (compiled for: {known}): {err}") from err
            if STRUCTURE_VERSION[0] != before:
                return self._fallback(_Entry(traced=traced), "forward assigns module attributes "
                                      "(side effects the compiled code would not repeat)")
            if traced.input_mutations:
                return self._fallback(_Entry(traced=traced), "forward writes into its input "
                                      "in place (the compiled code would not)",
                                      traced.input_mutations[0])
            analysis = analyse_batch(self.module, args, traced)
            # Taken after every trace: what the compiled code assumes from here on.
            version, data_version = STRUCTURE_VERSION[0], DATA_VERSION[0]
            state = snapshot(self.module)
            graph, dim_of, symbols = traced, (lambda d: d), {}
            if analysis.generic:
                graph, dim_of, symbols = analysis.graph, analysis.dim_of, {"B": ("x0", 0)}
            try:
                optimized = optimize(graph, passes=self.passes)
                program = lower(optimized, dim_of, symbols)
                compiled = get_backend("numba").compile(program)
            except Unsupported as err:
                return self._fallback(_Entry(traced=traced), str(err))
            entry = self._entry(compiled, program, analysis, optimized, traced, version,
                                data_version)
            entry.snapshot = state
            entry.tail = tuple(entry.param_arrays) + tuple(entry.constants)
            entry.parallel = compiled.parallel
            try:  # numba compiles on the first call: do it now, so a failure falls back
                entry.fn(*[t._data for t in args], *entry.tail,
                         *((on_main_thread(),) if entry.parallel else ()))
            except Exception as err:  # noqa: BLE001 - any compiler error means "run eagerly"
                return self._fallback(_Entry(traced=traced), f"code generation failed: "
                                      f"{type(err).__name__}: {str(err).splitlines()[0]}")
        return entry

    def _entry(self, compiled, program, analysis, optimized, traced, version,
               data_version) -> _Entry:
        return _Entry(fn=compiled.fn, compiled=compiled,
                      params=[p.ref for p in program.params],
                      param_arrays=[p.ref._data for p in program.params],
                      data_version=data_version,
                      param_paths=[(p.kind, p.target) for p in program.params],
                      version=version,
                      param_specs=[(tuple(p.ref._data.shape), p.ref._data.dtype)
                                   for p in program.params],
                      constants=[v for _, v in program.constants], generic=analysis.generic,
                      structure=program.structure, optimized=optimized, traced=traced,
                      batch_note="" if analysis.generic else analysis.reason)

    def _fallback(self, entry: _Entry, reason: str, source: str = "", error=None) -> _Entry:
        entry.reason, entry.source = reason, source
        if not self.fallback:
            if error is not None:
                raise error
            raise RuntimeError(f"fusionnet.fuse: {self.name} cannot be compiled: {reason}")
        self._warn_once(reason, source)
        return entry

    def _warn_once(self, reason: str, source: str = "") -> None:
        if reason in self.warned:
            return
        self.warned.add(reason)
        where = f" at {source}" if source else ""
        warnings.warn(f"fusionnet.fuse: {self.name} runs eagerly: {reason}{where}",
                      FusionFallbackWarning, stacklevel=user_stacklevel())

    # ---- gradients ----------------------------------------------------------------------

    def _attach(self, out: Tensor, args):
        needs = tuple(t.requires_grad for t in args)
        saved = tuple((t, t._version[0], f"input {i}") for i, t in enumerate(args))
        out.requires_grad = True
        out._ctx = autograd.Node(self.grad_op, tuple(args), {"runner": self}, None, saved,
                                 needs)

    def graph_for(self, args) -> Graph:
        """The exact traced graph for these input shapes (for backward), cached."""
        key = (self.module.training, *[(t._data.shape, t._data.dtype, type(t._data))
                                       for t in args])
        graph = self.backward_graphs.get(key)
        if graph is None:
            with _eager_region():
                graph = trace(self.module, *args)
            self.backward_graphs[key] = graph
            if len(self.backward_graphs) > self.cache_size:
                self.backward_graphs.popitem(last=False)
        return graph

    def _interpret(self, args):
        return run_graph(self.graph_for(args), *args)


def _fused_grad(g, *inputs, needs, runner, **_):
    """Backward of a compiled forward: replay the traced graph through the op table's
    eager implementations with autograd on, then back-propagate ``g`` through it.
    Parameter gradients accumulate into their ``.grad`` directly."""
    graph = runner.graph_for(inputs)
    leaves = [Tensor._wrap(t._data).requires_grad_(True) if need else Tensor._wrap(t._data)
              for t, need in zip(inputs, needs)]
    with autograd.enable_grad():
        out = run_graph(graph, *leaves)
        if out.requires_grad:
            autograd.backward(out, g)
    return tuple(leaf.grad if need else None for leaf, need in zip(leaves, needs))


def _describe_entry(entry: _Entry) -> str:
    if entry.fn is None:
        return f"eager ({entry.reason})"
    prog = entry.compiled.program
    shapes = ", ".join(str(prog.shapes[x]) for x in prog.inputs)
    return shapes.replace("'", "")
