"""``fuse(step)``: a whole training step (forward, loss, backward, update) as one native call.

``step(X, Y)`` is a plain function that uses modules and optimisers it finds in its
globals and closure (``opt.zero_grad(); loss = loss_fn(net(X), Y); loss.backward();
opt.step(); return loss``). It is traced once per signature as the body of a module
(:class:`StepModule`) whose children are those modules, so parameters are live
references as in any fused forward, and two calls behave differently while tracing:

* ``loss.backward()`` records the backward into the trace (``joint.backward_in_trace``)
  and sets each parameter's ``.grad`` to its traced gradient;
* ``opt.step()`` records the optimiser's update (``updates.py``) on those gradients.

The traced graph's inputs are the step's tensors, then the optimiser's runtime
scalars and state tensors (0-d ``lr``...; momentum buffers, Adam moments); its outputs
are what ``step`` returned, then every new parameter, state and gradient value. The
graph goes through the ordinary passes, lowering and backend, and the compiled
driver's results are written back in place (:class:`StepEntry`), so the optimiser's
state and the parameters are exactly where eager leaves them. Anything the trace or
the backend cannot handle runs the step eagerly, with one warning naming the reason.
"""
from __future__ import annotations

import threading
import warnings

import numpy as np

from .. import autograd
from ..codegen import Unsupported, lower
from ..codegen.backend import default_backend
from ..graph import GraphBreak
from ..nn import Module
from ..nn.module import STRUCTURE_VERSION
from ..optim.optimizer import Optimizer
from ..passes import optimize
from ..pystate import fingerprint, first_failure
from ..structure import leaf_count, unflatten
from ..tensor import DATA_VERSION, Tensor
from ..tracer import TraceError, trace
from .compiler import draws, random_inputs
from .guards import python_guards, user_stacklevel
from .step_trace import NotCompilable, Plan, StepModule, Trace, Tracing, find_state
from .symbolic import PROBES, MIN_GENERIC_BATCH, _agrees, _annotate, _probe, check_at

__all__ = ["FusedStep", "StepModule", "NotCompilable", "find_state"]


_MAIN_THREAD = threading.main_thread().ident


# ---- compiled entries --------------------------------------------------------------------


class StepEntry:
    """One compiled signature of a step: the driver, what it reads, what it writes."""

    def __init__(self, compiled, program, graph, writes, spec, n_results, generic, plan_key):
        self.compiled = compiled
        self.fn = compiled.fn
        self.params = [p.ref for p in program.params]
        self.arrays = [p.ref._data for p in program.params]
        self.constants = [v for _, v in program.constants]
        self.graph = graph
        self.writes = writes
        self.spec = spec
        self.n_results = n_results
        self.generic = generic
        self.plan_key = plan_key
        self.per_call, self.on_move = [], []
        self.grad_tensors: list = []   # (parameter, its .grad tensor over the buffer)
        self.grad_arrays: list = []
        self.version = STRUCTURE_VERSION[0]
        self.data_version = DATA_VERSION[0]
        self.packed = None             # tail() as last packed

    def tail(self):
        """The live parameter arrays and the constants, packed as the driver takes them
        (``CompiledProgram.pack``: an address table); None when a parameter's storage was
        replaced by one the code does not fit (another shape, dtype or layout: the step
        must be compiled again)."""
        if self.packed is None or DATA_VERSION[0] != self.data_version:
            arrays = [p._data for p in self.params]  # some storage was replaced: re-read
            for a, b in zip(arrays, self.arrays):
                if type(a) is not np.ndarray or a.shape != b.shape or a.dtype != b.dtype:
                    return None
            packed = self.compiled.pack(arrays + self.constants)
            if packed is None:
                return None
            self.arrays, self.packed = arrays, list(packed)
            self.data_version = DATA_VERSION[0]
        return self.packed

    def run(self, args, extras, tail):
        """Call the driver and write its results back; returns what the step returned."""
        if self.compiled.parallel:  # only the main thread may launch parallel loops
            tail = tail + [threading.get_ident() == _MAIN_THREAD]
        out = self.fn(*[t._data for t in args], *extras, *self.grad_arrays, *tail)
        for p, g in self.grad_tensors:  # the driver wrote this step's gradients into them
            p.grad = g
        if not isinstance(out, tuple):
            out = (out,)
        n = self.n_results
        grew = False
        for what, value in zip(self.writes, out[n:]):
            kind = what[0]
            if kind == "param":
                np.copyto(what[1]._data, value)
            elif kind == "state":
                _, opt, p, name = what
                state = opt.state[p]
                if name in state:
                    np.copyto(state[name]._data, value)
                else:
                    state[name] = Tensor._wrap(value)
                    grew = True
            elif kind == "grad":
                what[1].grad = Tensor._wrap(value)
            else:  # an argument's gradient, accumulated as eager does
                t = args[what[1]]
                t.grad = Tensor._wrap(value) if t.grad is None else t.grad + Tensor._wrap(value)
        if self.spec == "T":
            return Tensor._wrap(out[0]), grew
        return unflatten(self.spec, [Tensor._wrap(r) for r in out[:n]]), grew


class FusedStep:
    """What ``fuse(fn)`` returns for a plain function: call it like ``fn``."""

    def __init__(self, fn, *, fallback: bool = True, passes=None, cache_size: int = 32,
                 backend: str = "auto"):
        self.fn = fn
        self.backend = backend
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", "step")
        self.__doc__ = getattr(fn, "__doc__", None)
        self.name = self.__name__
        self.fallback, self.passes, self.cache_size = fallback, passes, cache_size
        self.exact: dict = {}
        self.generic: dict = {}
        self.compiles: list = []       # one reason per compile
        self.reasons: list = []        # why a signature runs eagerly
        self.warned: set = set()
        self.lock = threading.RLock()
        self.traced = None             # the last traced graph (explain)
        self.found = None              # (modules, optimisers) the step names
        self.fast = None               # (entry, plan, signature, plan.quick()) of the last call
        self.pending = ""              # why the next compile happens, when known early

    # -- the call path --

    def __call__(self, *args, **kwargs):
        fast = self.fast
        if fast is not None and not kwargs:
            # The last call's entry, if nothing it depends on moved (the common case).
            entry, plan, sig, quick = fast
            if (len(args) == len(sig) - 1 and autograd._state.enabled is sig[0][0] and all(
                    type(t._data) is np.ndarray and t._data.shape == s[0] and
                    t._data.dtype is s[1] and t.requires_grad is s[2]
                    for t, s in zip(args, sig[1:]))
                    and entry.version == STRUCTURE_VERSION[0]
                    and not (entry.per_call and first_failure(entry.per_call))
                    and plan.quick() == quick):
                return self._run(entry, plan, args)
            self.fast = None
        if self.backend == "eager":
            return self.fn(*args, **kwargs)
        if kwargs or not args or not all(isinstance(a, Tensor) for a in args):
            bad = next((i for i, a in enumerate(args) if isinstance(a, np.ndarray)), None)
            if bad is not None:  # a likely mistake, refused as a fused module refuses it
                from .runner import FuseInputError  # noqa: PLC0415

                raise FuseInputError(f"step {self.name}: argument {bad} must be a Tensor, "
                                     "got a NumPy array (wrap it with fusionnet.from_numpy)")
            self._warn("only positional Tensor arguments are compiled")
            return self.fn(*args, **kwargs)
        found = self.found
        if found is None:  # the names the step uses; re-read when a guard fails
            found = self.found = self._state()
        modules, opts = found
        try:
            plan = Plan(opts)
        except NotCompilable as err:
            return self._eager(args, str(err))
        key = (autograd.is_grad_enabled(), plan.key,
               *[(t._data.shape, t._data.dtype, type(t._data), t.requires_grad) for t in args])
        entry = self.exact.get(key)
        if entry is None:
            entry = self._lookup_or_compile(args, key, plan, modules)
        if isinstance(entry, str):
            return self._eager(args, entry)
        if entry.per_call and first_failure(entry.per_call) or (
                entry.version != STRUCTURE_VERSION[0] and first_failure(entry.on_move)):
            self.exact.clear()
            self.generic.clear()
            self.found = None
            self.fast = None
            self.pending = "a value the step read from Python changed"
            return self(*args)
        entry.version = STRUCTURE_VERSION[0]
        sig = ((autograd._state.enabled,),) + tuple(
            (t._data.shape, t._data.dtype, t.requires_grad) for t in args)
        self.fast = (entry, plan, sig, plan.quick())
        return self._run(entry, plan, args)

    def _run(self, entry, plan, args):
        tail = entry.tail()
        if tail is None:  # `p.data = ...` of another shape: compile again
            self.exact.clear()
            self.generic.clear()
            self.fast = None
            self.pending = "a parameter's storage changed shape, dtype or layout"
            return self(*args)
        extras = plan.prepare(advance=True)   # (moves Adam's step count on: after checks)
        if entry.random:
            extras += draws(entry.random, [args[0]._data])
        if entry.scaled:
            b = args[0]._data.shape[0]
            extras += [np.array(k * b, dtype) for k, dtype in entry.scaled]
        result, grew = entry.run(args, extras, tail)
        if grew:  # a first step made optimiser state: the next call has another key
            self.fast = None
        return result

    def _state(self):
        modules, opts = find_state(self.fn)
        return modules, opts

    def _eager(self, args, reason: str):
        self._warn(reason)
        return self.fn(*args)

    def _warn(self, reason: str) -> None:
        if not self.fallback:
            raise RuntimeError(f"fusionnet.fuse: step {self.name} cannot be compiled: {reason}")
        if reason in self.warned:
            return
        self.warned.add(reason)
        from .runner import FusionFallbackWarning  # noqa: PLC0415

        warnings.warn(f"fusionnet.fuse: step {self.name} runs eagerly: {reason}",
                      FusionFallbackWarning, stacklevel=user_stacklevel())

    # -- explain --

    def explain(self, *args):
        """A :class:`fusionnet.explain.Report` of the step at ``args``: the traced and
        optimized graphs, the forward, backward and update kernels, what the backward
        reads from the forward (bytes), compiles and the generated source. Compiles the
        signature if needed; runs no step."""
        from ..explain import Report  # noqa: PLC0415
        from .phases import phase_lines  # noqa: PLC0415

        modules, opts = self.found or self._state()
        plan = Plan(opts)
        key = (autograd.is_grad_enabled(), plan.key,
               *[(t._data.shape, t._data.dtype, type(t._data), t.requires_grad) for t in args])
        entry = self.exact.get(key) or self._lookup_or_compile(args, key, plan, modules)
        traced = self.traced
        if isinstance(entry, str):
            report = Report(self.name, traced) if traced is not None else None
            if report is None:
                from ..graph import Graph  # noqa: PLC0415

                report = Report(self.name, Graph(self.name))
            report.add_section("training step", f"runs eagerly: {entry}")
            return report
        report = Report(self.name, traced, list(traced.breaks), entry.graph)
        batch = args[0]._data.shape[0] if entry.generic else None
        lines = [f"one native call per step ({'symbolic batch size' if entry.generic else 'exact sizes'})",
                 f"modules: {', '.join(type(m).__name__ for m in modules)}; optimisers: "
                 f"{', '.join(type(o).__name__ for o in opts)}"]
        lines += phase_lines(entry.graph, traced, batch)
        lines.append(f"written in place: {len(entry.in_place)} arrays (parameters and "
                     f"optimiser state); returned: {len(entry.writes)} more (gradients, new "
                     "state)")
        lines += [f"compiles: {len(self.compiles)}"] + [
            f"  compile {i + 1}: {why}" for i, why in enumerate(self.compiles)]
        report.add_section("training step", "\n".join(lines))
        report.kernel_sources.update(entry.compiled.kernel_sources)
        report.add_section("generated source", "\n\n".join(entry.compiled.kernel_sources.values()))
        return report

    # -- compiling --

    def _lookup_or_compile(self, args, key, plan, modules):
        with self.lock:
            gkey = key[:2] + tuple((shape[1:], len(shape), *rest)
                                   for shape, *rest in key[2:])
            entry = self.generic.get(gkey)
            batch = {t._data.shape[0] if t._data.ndim else None for t in args}
            batch = batch.pop() if len(batch) == 1 else None
            if entry is not None and batch is not None and not check_at(entry.graph, batch):
                self.exact[key] = entry
                return entry
            reason = "first call" if not self.compiles else \
                f"new signature ({', '.join(f'{tuple(t.shape)} {t._data.dtype}' for t in args)})"
            if self.pending:
                reason, self.pending = self.pending, ""
            self.compiles.append(reason)
            try:
                entry = self._compile(args, plan, modules)
            except NotCompilable as err:
                entry = str(err)
            if not isinstance(entry, str) and entry.generic:
                self.generic[gkey] = entry
            self.exact[key] = entry
            if len(self.exact) > self.cache_size:
                self.exact.pop(next(iter(self.exact)))
            if isinstance(entry, str):
                self.reasons.append(entry)
            return entry

    def _trace(self, module, args, plan, extras):
        ctx = Trace(plan, len(args))
        plan.params = list(module.parameters())
        from .runner import eager_region  # noqa: PLC0415 - runner imports the runtime

        with Tracing(ctx, plan.params), eager_region():
            try:
                graph = trace(module, *args, *[Tensor._wrap(a) for a in extras])
            except GraphBreak as brk:
                raise NotCompilable(f"{brk.reason} at {brk.source}") from None
            except TraceError as err:
                raise NotCompilable(str(err)) from None
            except NotCompilable:
                raise
            except Exception as err:
                # The step rejects these inputs, as eager would: the same exception, noted.
                if hasattr(err, "add_note"):
                    err.add_note(f"fusionnet.fuse: step {self.name} was called with ("
                                 + ", ".join(f"{tuple(t.shape)} {t._data.dtype}"
                                             for t in args) + ")")
                raise
        return graph, ctx

    def _compile(self, args, plan, modules) -> StepEntry:
        if any(type(t._data) is not np.ndarray for t in args):
            raise NotCompilable("inputs are not NumPy arrays (CUDA steps run eagerly)")
        module = StepModule(self.fn, modules)
        extras = plan.prepare(advance=False)
        traced, ctx = self._trace(module, args, plan, extras)
        self.traced = traced
        if getattr(traced, "grad_guards", None):
            raise NotCompilable("whether a loop's or a branch's results require grad depends "
                                "on its trip count or the branch taken (only a fused module "
                                "checks that per call)")
        if traced.node(traced.output).get("hidden") or getattr(traced, "output_alias", ""):
            raise NotCompilable("the step may return its own input itself (a loop that "
                                "runs no trip, a branch that hands it on)")
        result_spec = traced.node(traced.output)["spec"][1][0]
        n_results = leaf_count(result_spec)
        graph, generic, scaled = self._analyse(module, args, plan, extras, traced)
        try:
            program = lower(graph, {"B": ("x0", 0)} if generic else {})
            writes = _in_place(program, ctx.writes, n_results, len(args), plan)
            grad_bufs = _grad_buffers(program, ctx.writes, n_results, writes)
            program.writes = {i: target for i, (target, _) in writes.items()}
            program.table = True  # every tail reaches the driver through StepEntry.tail
            compiled = default_backend().compile(program)
        except Unsupported as err:
            raise NotCompilable(str(err)) from None
        kept = [w for i, w in enumerate(ctx.writes) if n_results + i not in writes]
        entry = StepEntry(compiled, program, graph, kept, result_spec, n_results,
                          generic, plan.key)
        entry.in_place = [what for _, what in writes.values() if what[0] != "grad"]
        entry.grad_arrays = [b for _, b in grad_bufs]
        entry.grad_tensors = [(p, Tensor._wrap(b)) for p, b in grad_bufs]
        per_call, entry.on_move = python_guards(traced)
        entry.per_call = [_by_identity(c) for c in per_call]
        entry.scaled = scaled
        entry.random = random_inputs(graph)
        return entry

    def _analyse(self, module, args, plan, extras, traced):
        """The optimized graph, batch-generic (``sym_shape`` set) when two probe batch
        sizes agree with the real trace, as for a fused module (``symbolic.py``); and the
        literal scalars that scale with the batch, made inputs (see :func:`_batch_scalars`)."""
        opt = lambda g: optimize(g, passes=self.passes)  # noqa: E731
        real = opt(traced)
        batch = {t._data.shape[0] if t._data.ndim else None for t in args}
        if len(batch) != 1 or None in batch or next(iter(batch)) < MIN_GENERIC_BATCH:
            return real, False, []
        batch = next(iter(batch))
        try:
            g1, _ = self._trace(module, [_probe(t, PROBES[0]) for t in args], plan, extras)
            g2, _ = self._trace(module, [_probe(t, PROBES[1]) for t in args], plan, extras)
        except NotCompilable:
            return real, False, []
        if g1.shape_reads or g2.shape_reads or traced.shape_reads:
            return real, False, []
        scaled = _batch_scalars(g1, g2, traced, batch)
        if scaled is None:
            return real, False, []
        o1, o2 = opt(g1), opt(g2)
        if _annotate(o1, o2, *PROBES) or _agrees(o1, opt(traced), batch):
            return real, False, []
        return o1, True, scaled


def _in_place(program, writes, n_results: int, n_user: int, plan) -> dict:
    """``{output index: (driver argument, what)}`` for the new values the driver can write
    into the arrays they replace: parameters and existing optimiser state (a state the
    first step creates is returned and stored by the runtime)."""
    param_names = {id(p.ref): p.name for p in program.params}
    state_pos = {(k[1], k[2]): n_user + i for i, k in enumerate(plan.extra_keys)
                 if k[0] == "state"}
    out = {}
    for i, what in enumerate(writes):
        target = None
        if what[0] == "param":
            target = param_names.get(id(what[1]))
        elif what[0] == "state":
            pos = state_pos.get((id(what[2]), what[3]))
            target = None if pos is None else program.inputs[pos]
        if target is not None:
            out[n_results + i] = (target, what)
    return out


def _grad_buffers(program, writes, n_results: int, in_place: dict) -> list:
    """Parameter gradients go into one buffer per parameter, kept by the entry and
    written by the driver (new driver arguments after the inputs): boxing a returned
    array costs more than the small gradients of a small model."""
    bufs = []
    for i, what in enumerate(writes):
        if what[0] != "grad":
            continue
        p = what[1]
        name = f"gbuf{len(bufs)}"
        program.inputs.append(name)
        in_place[n_results + i] = (name, what)
        bufs.append((p, np.zeros(p._data.shape, p._data.dtype)))
    return bufs


class _Same:
    """A guard that a name still refers to the same optimiser: its settings are runtime
    inputs or part of the plan's key (``step_trace.Plan``), so a changed ``lr`` is no reason to
    compile again, and comparing the whole object every call would cost more than the step."""

    __slots__ = ("what", "read", "obj")

    def __init__(self, check, obj):
        self.what, self.read, self.obj = check.what, check.read, obj

    def holds(self) -> bool:
        """Whether the name still refers to the same object."""
        return self.read() is self.obj


class _SameItems(_Same):
    """A list, tuple or dict holding optimisers or modules: the same container with the
    same objects in it (their settings are checked as for :class:`_Same`)."""

    __slots__ = ("items",)

    def __init__(self, check, obj):
        super().__init__(check, obj)
        self.items = _items(obj)

    def holds(self) -> bool:
        """Whether the name refers to the same container holding the same objects."""
        value = self.read()
        return value is self.obj and _items(value) == self.items


def _items(obj) -> tuple:
    values = obj.values() if type(obj) is dict else obj
    return tuple(id(v) if isinstance(v, (Optimizer, Module)) else fingerprint(v)
                 for v in values)


def _by_identity(check):
    value = check.read()
    if isinstance(value, (Optimizer, Module)):
        return _Same(check, value)
    if type(value) in (list, tuple, dict) and any(
            isinstance(v, (Optimizer, Module))
            for v in (value.values() if type(value) is dict else value)):
        return _SameItems(check, value)
    return check


def _batch_scalars(g1, g2, real, batch: int):
    """Literal 0-d constants whose value is ``k * B`` (a mean's element count, which its
    gradient divides by) in the probe traces ``g1``, ``g2`` and the real trace: each
    becomes a new input of all three graphs, and ``[(k, dtype), ...]`` (in input order)
    says what the runtime passes for it. None when the traces differ otherwise."""
    if list(g1.order()) != list(g2.order()) or list(g1.order()) != list(real.order()):
        return None
    out = []
    for n in g1.order():
        a, b, r = g1.node(n), g2.node(n), real.node(n)
        if "value" not in a or "value" not in b or "value" not in r:
            continue
        v1, v2, vr = (np.asarray(d["value"]) for d in (a, b, r))
        if v1.shape != () or v1.dtype.kind != "f" or v1 == v2:
            continue
        k = float(v1) / PROBES[0]
        if k != int(k) or float(v2) != k * PROBES[1] or float(vr) != k * batch:
            return None
        position = len(g1.inputs)
        for g in (g1, g2, real):
            _as_input(g, n, position)
        out.append((int(k), v1.dtype))
    return out


def _as_input(graph, nid: int, position: int) -> None:
    """Turn literal constant ``nid`` into input ``position`` (its value is passed at
    call time)."""
    d = graph.node(nid)
    d.pop("value", None)
    d["kind"], d["target"], d["requires_grad"], d["device"] = "input", position, False, "cpu"
    graph._inputs.add(nid)
    graph._order = None
