"""``FusionRunner``: the per-module cache of compiled signatures and the call path.

On the first call for a signature (see ``signature.py``) the runner compiles it
(``compiler.py``); later calls with that signature go straight to the compiled
driver. Parameters are passed in at call time, so weight updates are seen without
recompiling; sizes are symbolic where the graph allows (``symbolic.py``).

Never wrong silently: a graph break or an op without an emitter runs the block
eagerly with one warning naming the reason (or raises with ``fallback=False``);
what the trace read from Python is re-checked (``guards.py``); every compile and its
reason is counted and shown by ``explain``.
"""
from __future__ import annotations

import operator
import threading
import warnings
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from .. import autograd
from ..autograph.record import grad_class, trips_lead_to
from ..nn.module import _ROUTES, STRUCTURE_VERSION
from ..passes import optimize
from ..pystate import first_failure
from ..structure import flatten, unflatten
from ..tensor import DATA_VERSION, Tensor
from .backward import attach, graph_at, run_with_grad
from .joint_module import attach_joint
from .compiler import Entry, Fallback, compile_signature
from .guards import resolve, resolve_or_none, snapshot, user_stacklevel
from .signature import (batch_of, describe_args, describe_key, generic_key, placement,
                        signature)
from .symbolic import check_at

_MAIN_THREAD = threading.main_thread().ident


class _EagerResult:
    """What a call that ran eagerly returned (the first call of a module with lazy
    layers), as opposed to a compiled driver's raw result."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _has_lazy(module) -> bool:
    return any(getattr(m, "has_uninitialized_params", lambda: False)() for m in module.modules())

__all__ = ["FusionRunner", "FusionFallbackWarning", "FuseInputError", "in_eager_region",
           "eager_region"]

class _RunnerState(threading.local):
    """Per-thread runtime state (class attributes are each thread's defaults)."""

    depth = 0      # > 0 while tracing or falling back: nested fused blocks run inline
    replays = 0    # recompiles triggered by a state change, to stop a runaway loop


# Per thread: another thread calling a fused block while this one compiles must wait for
# the compile (the runner's lock), not run the block eagerly beside it (lazy layers
# would materialise twice at once).
_local = _RunnerState()
_GRAD = autograd._state
_DATA = operator.attrgetter("_data")


class FusionFallbackWarning(UserWarning):
    """A fused block runs eagerly; the message says why and where."""


class FuseInputError(TypeError):
    """A fused block was called with an argument the compiled path cannot take and the
    block would not accept either (a NumPy array where a Tensor is expected)."""


def in_eager_region() -> bool:
    """True while the runtime itself is tracing or falling back (nested blocks run inline)."""
    return _local.depth > 0


@contextmanager
def eager_region():
    """Inside: fused blocks run their original forward (tracing, fallbacks, explain), and
    no call is routed to a child's compiled code."""
    _local.depth += 1
    routes, _ROUTES.table = _ROUTES.table, None
    try:
        yield
    finally:
        _local.depth -= 1
        _ROUTES.table = routes


def _same_grad_class(guards, flags) -> bool:
    """Whether this call's trip counts and branches (the hidden selector outputs) give
    every region's results the requires_grad the traced call's gave them."""
    for pos, spec, taken in guards:
        now = flags[pos]
        if spec[0] == "trips":
            _, classes, start = spec
            if grad_class(classes, start, int(now)) != grad_class(classes, start, taken):
                return False
        elif bool(now) != taken and spec[1] != spec[2]:
            return False
    return True


def _holds(flag, when) -> bool:
    """Whether a selector output says its case happened (see ``_with_selection``): a
    branch was taken (``flag`` its condition), or a loop's trip count ``flag`` leads
    result ``k`` back to ``target`` (``("walk", k, target, body_map)``)."""
    if isinstance(when, tuple):
        _, k, target, body_map = when
        return trips_lead_to(body_map, k, int(flag)) == target
    return bool(flag) == (when == "then")


class FusionRunner:
    """The per-module compile cache and call path behind ``fuse``.

    ``wrapper`` says how to run the module eagerly: ``True`` for a ``fuse(module)``
    wrapper (the module's own ``__call__``), ``False`` for a ``@fuse`` class (the plain
    ``Module.__call__``, since the class's ``__call__`` is this runner)."""

    def __init__(self, module, name: str, *, wrapper: bool, backend: str = "auto",
                 passes=None, fallback: bool = True, cache_size: int = 32):
        if backend not in ("auto", "numba", "cuda", "eager"):
            raise ValueError("fuse: backend must be 'auto', 'numba', 'cuda' or 'eager', got "
                             f"{backend!r}")
        self.module = module
        self.wrapper = wrapper
        self.name = name
        self.options = {"backend": backend, "passes": passes, "fallback": fallback,
                        "cache_size": cache_size}
        self.backend, self.passes, self.fallback = backend, passes, fallback
        self.cache_size = cache_size
        self.exact: OrderedDict = OrderedDict()
        self.generic: dict = {}
        self.lock = threading.RLock()
        self.compiles: list[str] = []     # one reason per compile
        self.last = None                  # (training, shape, dtype, grad, rg, entry)
        self.pending_reason = ""          # why the next compile happens, when known early
        self.evictions = 0
        self.warned: set = set()
        self.materialised = False
        self.backward_graphs: OrderedDict = OrderedDict()
        self.children: dict = {}          # id(child) -> its runner, when this module's own
        self.quiet = False                # forward runs eagerly (see _run_partial)

    def eager_call(self, *args, **kwargs):
        """Run the module's original forward (with its hooks), uncompiled."""
        from ..nn import Module  # noqa: PLC0415 - nn imports the runtime lazily

        if self.wrapper:
            return self.module(*args, **kwargs)
        return Module.__call__(self.module, *args, **kwargs)

    def optimize(self, graph):
        """The pass pipeline this runner uses."""
        return optimize(graph, passes=self.passes)

    # ---- the call path ------------------------------------------------------------------

    def __call__(self, args, kwargs):
        # The hot path: kept short on purpose, since at small batch sizes this wrapper,
        # not the kernels, is what a fused call costs.
        if _local.depth:
            return self.eager_call(*args, **kwargs)
        last = self.last
        if last is not None and len(args) == 1 and not kwargs:
            # Same single input signature as the previous call, nothing re-wired or
            # re-bound since, no per-call guards: skip the general lookup (a monomorphic
            # inline cache).
            x = args[0]
            a = getattr(x, "_data", None)
            entry = last[5]
            if (a is not None and a.shape == last[1] and a.dtype is last[2]
                    and type(a) is np.ndarray and self.module.training is last[0]
                    and _GRAD.enabled is last[3] and x.requires_grad is last[4]
                    and entry.version == STRUCTURE_VERSION[0]
                    and entry.data_version == DATA_VERSION[0]
                    and (not entry.parallel or threading.get_ident() == _MAIN_THREAD)):
                # ``main_tail``: the tail plus, for a driver with parallel loops, its
                # "may launch threads" flag, which only the main thread may set.
                if not last[3]:
                    return Tensor._wrap(entry.fn(a, *entry.main_tail))
                if self._grads_fit(entry):
                    out = Tensor._wrap(entry.fn(a, *entry.main_tail))
                    if entry.out_grad[0]:
                        attach(self, entry, [out], args)
                    return out
        if kwargs:
            self._warn_once("keyword arguments are not traced (pass tensors positionally)")
            return self._run_eager(args, kwargs)
        try:
            arrays = [t._data for t in args]
        except AttributeError:
            return self._non_tensor_call(args)
        key = signature(self.module.training, arrays, args)
        entry = self.exact.get(key)
        first = None
        if entry is None:
            entry, first = self._lookup_or_compile(args, key)
            if type(first) is _EagerResult:
                return first.value
        if entry.fn is None:
            if entry.partial:
                return self._run_partial(args)
            return self._run_eager(args)
        if first is None:
            if not self._still_valid(entry):
                return self._state_changed(args, entry)
            result = entry.call(arrays)
        else:
            result = first
        if len(arrays) == 1 and entry.single and entry.fast:  # the inline cache's entries
            self.last = (key[0], arrays[0].shape, arrays[0].dtype, key[1], key[2][3], entry)
        return self._outputs(entry, result, args)

    def _still_valid(self, entry: Entry) -> bool:
        """Re-check what the entry assumed, cheaply when nothing moved."""
        if entry.version != STRUCTURE_VERSION[0] or entry.data_version != DATA_VERSION[0]:
            # Some module was re-wired or some storage replaced since the last check.
            if not self._same_objects(entry):
                return False
            params = list(map(_DATA, entry.params))
            if not self._params_still_fit(entry, params):
                return False
            entry.data_version = DATA_VERSION[0]
        if entry.per_call and first_failure(entry.per_call):
            return False
        return not entry.grad_enabled or self._grads_fit(entry)

    def _grads_fit(self, entry: Entry) -> bool:
        """Under grad mode, which parameters require grad decides which outputs do."""
        params = entry.params
        for p, rg in zip(params, entry.param_grad):
            if p.requires_grad is not rg:
                return False
        return True

    def _outputs(self, entry: Entry, result, args):
        if entry.joint is not None:  # forward-with-saves: the output runs a compiled backward
            return attach_joint(self, entry, result, args)
        if entry.hidden:
            return self._with_selection(entry, result, args)
        if entry.passthrough:
            return self._with_passthrough(entry, result, args)
        if entry.single:
            out = Tensor._wrap(result)
            if entry.out_grad and entry.out_grad[0]:
                attach(self, entry, [out], args)
            return out
        outs = [Tensor._wrap(r) for r in result]
        if any(entry.out_grad):
            # Several outputs that need grad: run the graph itself, so each output gets
            # its own history (the values are the same; this is the slow path).
            return run_with_grad(self, entry, args)
        return unflatten(entry.spec, outs)

    def _with_passthrough(self, entry: Entry, result, args):
        """Outputs where some leaves are the caller's inputs or parameters themselves."""
        arrays = [result] if entry.single else list(result)
        outs = []
        for i, r in enumerate(arrays):
            how = entry.passthrough.get(i)
            if how is None:
                outs.append(Tensor._wrap(r))
            else:
                outs.append(args[how[1]] if how[0] == "input" else how[1])
        computed = [i for i in range(len(outs)) if i not in entry.passthrough]
        if any(entry.out_grad[i] for i in computed):
            if entry.single:
                attach(self, entry, outs, args)
            else:
                return run_with_grad(self, entry, args)
        return outs[0] if entry.single else unflatten(entry.spec, outs)

    def _with_selection(self, entry: Entry, result, args):
        """Outputs where a leaf may be the caller's object itself, as the hidden selector
        outputs say (a loop ran no trip, a branch handed an input on): eager's object
        when it is, a new tensor otherwise."""
        arrays = list(result)
        n = len(arrays) - entry.hidden
        flags = arrays[n:]
        if entry.grad_guards and not _same_grad_class(entry.grad_guards, flags):
            # Another trip count or branch whose results require grad differently from
            # the traced one's: eager's outputs, with eager's requires_grad.
            return self._run_eager(args)
        outs, fresh = [], []
        for i, r in enumerate(arrays[:n]):
            obj = next((args[what] if kind == "input" else what
                        for conds, (kind, what) in entry.selected.get(i, ())
                        if all(_holds(flags[pos], when) for pos, when in conds)), None)
            how = entry.passthrough.get(i)
            if obj is None and how is not None:
                obj = args[how[1]] if how[0] == "input" else how[1]
            if obj is None:
                obj = Tensor._wrap(r)
                fresh.append(i)
            outs.append(obj)
        if any(entry.out_grad[i] for i in fresh):
            if entry.spec == "T":
                attach(self, entry, outs, args)
            else:  # each output its own history: run the graph, keep the caller's objects
                leaves, _ = flatten(run_with_grad(self, entry, args),
                                    lambda v: isinstance(v, Tensor))
                outs = [leaves[i] if i in fresh else o for i, o in enumerate(outs)]
        return unflatten(entry.spec, outs)

    def _non_tensor_call(self, args):
        """Only tensors are traced: other arguments run the block eagerly, with a warning
        (a NumPy array, a likely mistake, is refused outright)."""
        i, t = next((i, t) for i, t in enumerate(args) if not isinstance(t, Tensor))
        if isinstance(t, np.ndarray):
            raise FuseInputError(f"{self.name}: argument {i} must be a Tensor, got a NumPy "
                                 "array (wrap it with fusionnet.from_numpy)")
        self._warn_once(f"argument {i} is a {type(t).__name__}, not a Tensor; only tensor "
                        "arguments are traced")
        return self._run_eager(args)

    def _params_still_fit(self, entry: Entry, params) -> bool:
        """New parameter arrays (``p.data = ...``): fine if shape, dtype and device match."""
        for a, (shape, dtype) in zip(params, entry.param_specs):
            if placement(a) != entry.placement or a.shape != shape or a.dtype != dtype:
                return False
        if not entry.set_tail(tuple(params) + tuple(entry.constants)):
            return False  # e.g. a storage that is no longer C-contiguous
        entry.param_arrays = params
        return True

    def _run_partial(self, args):
        """The largest blocks that compile: run this module's own forward in Python and
        route each direct child's call to the child's own compiled runner."""
        table = {}
        for name, child in self.module.named_children():
            if "_fusion_runner" in child.__dict__:
                continue  # already fused by the user
            runner = self.children.get(id(child))
            if runner is None:
                runner = FusionRunner(child, f"{self.name}.{name}", wrapper=True,
                                      **self.options)
                runner.quiet = True  # its fallbacks are reported through this runner
                self.children[id(child)] = runner
            table[id(child)] = runner
        routes, _ROUTES.table = _ROUTES.table, table
        try:
            return self.eager_call(*args)
        finally:
            _ROUTES.table = routes

    def _run_eager(self, args, kwargs=None):
        with eager_region():
            return self.eager_call(*args, **(kwargs or {}))

    def _same_objects(self, entry: Entry) -> bool:
        """After any module was re-wired: do the compiled references still point at the
        module's current parameters, buffers and constants, with the same settings?"""
        try:
            same = all(kind == "external" or resolve(self.module, kind, target) is p
                       for p, (kind, target) in zip(entry.params, entry.param_paths))
        except (AttributeError, KeyError, TypeError):
            same = False
        same = same and snapshot(self.module) == entry.snapshot
        same = same and not first_failure(entry.on_move)
        if same:
            entry.version = STRUCTURE_VERSION[0]
        return same

    def _state_changed(self, args, entry: Entry):
        changed = self._what_changed(entry)
        with self.lock:
            self.exact.clear()
            self.generic.clear()
            self.backward_graphs.clear()
            self.last = None
            self.pending_reason = "module state changed: " + ("; ".join(changed) or
                                                              "a guarded value changed")
        depth = _local.replays
        if depth >= 2:  # state keeps moving under us: do not recompile forever
            self._warn_once("module state keeps changing between compiles")
            return self._run_eager(args)
        _local.replays = depth + 1
        try:
            return self(args, {})
        finally:
            _local.replays = depth

    def _what_changed(self, entry: Entry) -> list[str]:
        changed = [f"{tuple(p._data.shape)} {p._data.dtype} on {p.device} (was {shape} {dtype})"
                   for p, (shape, dtype) in zip(entry.params, entry.param_specs)
                   if p._data.shape != shape or p._data.dtype != dtype
                   or placement(p._data) != entry.placement]
        changed += [f"the storage of {target!r} is no longer C-contiguous" for p, (_, target)
                    in zip(entry.params, entry.param_paths)
                    if p._data.ndim and not p._data.flags.c_contiguous]
        changed += [f"{kind} {target!r} was replaced" for p, (kind, target)
                    in zip(entry.params, entry.param_paths)
                    if kind != "external" and resolve_or_none(self.module, kind, target) is not p]
        now = snapshot(self.module)
        changed += [f"{'forward hooks of' if k[1] == '<hooks>' else 'attribute'} "
                    f"{'.'.join(x for x in k if x and x != '<hooks>')!r} changed"
                    for k in sorted(set(now) | set(entry.snapshot), key=str)
                    if now.get(k) != entry.snapshot.get(k)]
        changed += [f"{c.what} changed" for c in entry.per_call + entry.on_move
                    if not c.holds()]
        changed += [f"requires_grad of {target!r} changed" for p, rg, (_, target)
                    in zip(entry.params, entry.param_grad, entry.param_paths)
                    if bool(p.requires_grad) is not rg]
        return changed

    # ---- compiling ----------------------------------------------------------------------

    def _lookup_or_compile(self, args, key) -> tuple[Entry, object]:
        with self.lock:
            entry = self.exact.get(key)
            if entry is not None:
                return entry, None
            gkey = generic_key(key)
            entry = self.generic.get(gkey)
            first = None
            batch = batch_of(key)
            why_not = "" if entry is not None and batch is not None else "no generic entry"
            if not why_not:
                why_not = check_at(entry.optimized, batch)
            if why_not:
                reason = self._why_compile(args, key, why_not if entry is not None else "")
                entry, first = self._compile(args, reason)
                if entry.generic:
                    self.generic[gkey] = entry
            self.exact[key] = entry
            if len(self.exact) > self.cache_size:
                _, evicted = self.exact.popitem(last=False)
                self.evictions += 1
                if self.last is not None and self.last[5] is evicted:
                    self.last = None
            return entry, first

    def _why_compile(self, args, key, generic_refused: str = "") -> str:
        """The reason shown by ``explain`` for compiling ``key`` now."""
        if self.pending_reason:
            reason, self.pending_reason = self.pending_reason, ""
            return reason
        if not self.compiles:
            return "first call"
        if any(k[1:] == key[1:] for k in self.exact):
            return f"training mode changed to {key[0]}"
        if any(k[0] == key[0] and k[2:] == key[2:] for k in self.exact):
            return f"grad mode changed to {key[1]}"
        extra = f"; the batch-generic entry does not apply: {generic_refused}" \
            if generic_refused else ""
        return f"new input signature ({describe_args(args)}){extra}"

    def _compile(self, args, reason: str) -> tuple[Entry, object]:
        self.compiles.append(reason)
        if self.backend == "eager":
            return Entry(reason="backend='eager' was requested"), None
        first = None
        if not self.materialised and _has_lazy(self.module):
            # The call that creates lazy parameters is eager's own first call: weights and
            # any random numbers forward draws come from the stream in eager's order, and
            # its result is this call's. The compile below then traces the built module.
            first = _EagerResult(self._run_eager(args))
            self.materialised = True
        entry, compiled_first = self._compile_now(args)
        return entry, first if first is not None else compiled_first

    def _compile_now(self, args) -> tuple[Entry, object]:
        with eager_region():
            try:
                return compile_signature(self, args)
            except Fallback as fb:
                entry = Entry(reason=fb.reason, source=fb.source, traced=fb.traced,
                              partial=fb.partial)
                if not self.fallback:
                    if fb.error is not None:
                        raise fb.error
                    raise RuntimeError(f"fusionnet.fuse: {self.name} cannot be compiled: "
                                       f"{fb.reason}") from None
                self._warn_once(fb.reason, fb.source, partial=fb.partial)
                return entry, None

    def describe_compiled(self) -> str:
        """The signatures compiled so far, each once, with dtypes (for messages)."""
        seen = []
        for key, entry in self.exact.items():
            text = describe_key(key) if not entry.generic else ", ".join(
                f"(B, {', '.join(map(str, shape))}) {dtype}" if rank else f"() {dtype}"
                for shape, rank, dtype, *_ in generic_key(key)[2:])
            text += "" if entry.fn is not None else " [eager]"
            if text not in seen:
                seen.append(text)
        return "; ".join(seen)

    def _warn_once(self, reason: str, source: str = "", partial: bool = False) -> None:
        if reason in self.warned or self.quiet:
            return
        self.warned.add(reason)
        where = f" at {source}" if source else ""
        how = "runs its own forward eagerly (its children compiled)" if partial and any(
            True for _ in self.module.children()) else "runs eagerly"
        warnings.warn(f"fusionnet.fuse: {self.name} {how}: {reason}{where}",
                      FusionFallbackWarning, stacklevel=user_stacklevel())

    # ---- gradients and copies -----------------------------------------------------------

    def graph_for(self, args):
        """The exact traced graph for these inputs (for backward), cached per signature."""
        return graph_at(self, args)

    def __deepcopy__(self, memo):
        """A fresh runner for the copied module (compiled code is not copied)."""
        module = memo.get(id(self.module), self.module)
        return FusionRunner(module, self.name, wrapper=self.wrapper, **self.options)

    def __getstate__(self):
        raise TypeError("a FusionRunner cannot be pickled; pickle the module instead")
