"""Run one case: eager vs fused, call by call, and report every difference.

The case's ``Block`` is built twice from the same seed: one copy runs eagerly, the other
through ``fusionnet.fuse``. The phases, in order:

1. ``call1``: the first call at ``BATCHES[0]`` with grad enabled (inputs that the spec
   marks ``requires_grad``), then ``grad1``: backward of a random weighting of the float
   outputs, comparing every input's and parameter's ``.grad``;
2. ``call2`` at ``BATCHES[1]`` (a new batch size; under ``no_grad`` for some seeds),
   then ``grad2`` when grad was on;
3. the ``MUTATIONS`` applied to both copies alike (``p.data.mul_``, ``no_grad`` +
   ``p.add_``, a replaced ``Parameter``, ``load_state_dict``, ``p.data = ...``, an SGD
   step, buffer/constant writes), then ``call3`` at ``BATCHES[0]`` (+ ``grad3``) and
   ``call4`` at ``BATCHES[1]`` under ``no_grad``: the fused module must see the changes.

Each call compares the output structure, every tensor's dtype, shape, values,
``requires_grad`` and ``grad_fn is None``, and the inputs afterwards (a forward may write
into them). If eager raises, fused must raise an exception of the same kind
(:func:`compare.same_kind`) and the phases that depend on the call are skipped.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import itertools
import linecache
import math
import re
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

import fusionnet

from .compare import (ROUNDING, case_flips, case_rtol, compare_arrays, compare_outputs,
                      describe_exception, flatten,
                      same_kind)
from .data import make_arrays
from .mutate import apply_mutations

__all__ = ["Mismatch", "CaseResult", "run_case", "load_case", "main_for_file",
           "normalise_reason", "KINDS"]

#: Mismatch kinds, as counted in the summary.
KINDS = ("forward", "grad", "mutation", "exception", "torch")

_counter = itertools.count()


@dataclass
class Mismatch:
    """One difference: its kind (see :data:`KINDS`), the phase and what differed."""

    kind: str
    phase: str
    detail: str


@dataclass
class CaseResult:
    """What running one case found."""

    seed: int
    mismatches: list = field(default_factory=list)
    fallback_reasons: list = field(default_factory=list)
    eager_errors: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    compiled: bool = False
    compiles: int = 0
    seconds: float = 0.0
    harness_error: str = ""

    def as_dict(self) -> dict:
        """Plain data (for the pipe to the driver and ``results.jsonl``)."""
        return asdict(self)


def load_case(path: str, source: str | None = None, name: str | None = None):
    """Import a case file as a fresh module (never cached in ``sys.modules``)."""
    name = name or f"fusionnet_fuzz_case_{next(_counter)}"
    if source is not None:
        module = type(sys)(name)
        module.__file__ = path
        exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 - generated code
        module.__fusionnet_source__ = source
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(path) as f:
        module.__fusionnet_source__ = f.read()
    return module


_SOURCE_REF = re.compile(r"(\S+?\.py):(\d+): ")


def normalise_reason(message: str) -> str:
    """A fallback warning's reason without the block name, file paths, line numbers and
    source text, so that equal reasons group in the histogram."""
    text = message.split(" runs eagerly: ", 1)[-1]
    out, pos = [], 0
    for m in _SOURCE_REF.finditer(text):
        if m.start() < pos:
            continue
        line = linecache.getline(m.group(1), int(m.group(2))).strip()
        end = m.end()
        if line and text.startswith(line, end):
            end += len(line)
        out.append(text[pos:m.start()] + "<source>")
        pos = end
    text = "".join(out) + text[pos:]
    text = text.replace(" (at <source>)", "").replace(" at <source>", "")
    return text.splitlines()[0][:200] if text else text


class _Capture:
    """Runs a call, keeping its result or exception and any fallback warnings."""

    def __init__(self):
        self.reasons: list[str] = []

    def __call__(self, fn):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", fusionnet.FusionFallbackWarning)
            try:
                out = fn(), None
            except Exception as exc:  # noqa: BLE001 - the block's error is data here
                out = None, exc
        self.reasons += [normalise_reason(str(w.message)) for w in seen
                         if issubclass(w.category, fusionnet.FusionFallbackWarning)]
        return out


class CaseRunner:
    """The eager and fused copies of one case's block and the comparisons between them."""

    def __init__(self, module, result: CaseResult, fuse=fusionnet.fuse):
        self.mod = module
        self.result = result
        self.seed, self.batches = module.SEED, tuple(module.BATCHES)
        self.specs = module.INPUTS
        self.rtol = case_rtol(module)
        self.flips = case_flips(getattr(module, "__fusionnet_source__", ""))
        self.capture = _Capture()
        fusionnet.manual_seed(self.seed)
        self.eager = module.Block()
        fusionnet.manual_seed(self.seed)
        self.base = module.Block()
        self.fused = fuse(self.base)
        self.rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 7])

    # ---- bookkeeping --------------------------------------------------------------------

    def mismatch(self, kind: str, phase: str, detail: str) -> None:
        """Record a difference."""
        self.result.mismatches.append(Mismatch(kind, phase, detail))

    def inputs(self, batch: int, call: int, grad: bool):
        """Two independent copies of the call's input tensors."""
        arrays = make_arrays(self.specs, batch, self.seed, call)
        pair = []
        for _ in range(2):
            ts = []
            for a, spec in zip(arrays, self.specs):
                t = fusionnet.from_numpy(a.copy())
                if grad and spec.get("requires_grad"):
                    t.requires_grad_(True)
                ts.append(t)
            pair.append(ts)
        return pair

    # ---- phases ---------------------------------------------------------------------------

    def call(self, phase: str, batch: int, call: int, grad: bool, kind: str):
        """One forward on both copies; returns (eager out, fused out, inputs) or None."""
        xe, xf = self.inputs(batch, call, grad)
        with fusionnet.set_grad_enabled(grad):
            fusionnet.manual_seed(self.seed + 1 + call)
            out_e, err_e = self.capture(lambda: self.eager(*xe))
            fusionnet.manual_seed(self.seed + 1 + call)
            out_f, err_f = self.capture(lambda: self.fused(*xf))
        if not self.exceptions_agree(phase, err_e, err_f):
            return None
        diffs = compare_outputs(out_e, out_f, rtol=self.rtol, flips=self.flips)
        noise = bool(diffs) and all(_numeric(d, self.flips) for d in diffs) and \
            self.ill_conditioned(batch, call, grad, out_e, out_f)
        for diff in diffs:
            if diff.partition(": ")[2].startswith(ROUNDING) or diff.startswith(ROUNDING):
                self.result.notes.append(f"{phase}: {diff}")
            elif noise:
                self.result.notes.append(f"{phase}: ill-conditioned (eager itself moves as "
                                         f"much under a 1e-6 nudge of its inputs or "
                                         f"another valid product or summation order): "
                                         f"{diff}")
            else:
                self.mismatch(kind, phase, diff)
        for i, (a, b) in enumerate(zip(xe, xf)):
            diff = compare_arrays(a.detach().numpy(), b.detach().numpy(), rtol=self.rtol)
            if diff:
                self.mismatch(kind, phase, f"input {i} after the call: {diff}")
        return out_e, out_f, xe, xf

    def ill_conditioned(self, batch: int, call: int, grad: bool, out_e, out_f) -> bool:
        """Whether the difference is rounding noise eager itself shows. Eager runs again
        on a copy of the block (a probe) four ways: (a) its float inputs nudged by a
        relative 1e-6 (a few float32 ulps: a float32 sum that cancels to a tiny value,
        where summation order alone decides the digits left); (b, c) its matrix products
        computed in float64, with each element whose positive terms sum past float32's
        range set to +inf, then likewise -inf for negative terms (there float32 BLAS
        kernels give NaN, +inf or -inf depending on their order and on fused
        multiply-adds, all valid); (e) its sums added in index order, as generated code
        adds them (``_sums_in_order``). Every element fused changed must be one some probe
        changed as much. In a float32 case a fifth probe, (d) the whole block in
        float64, may explain finite differences only (fused no further from it than
        eager is: ``1 + tanh(x)`` near -1 cancels, and a tanh 1 ulp apart moves it by a
        large relative amount that input nudges cannot show when a ``sign()`` comes
        first)."""
        probes = [self._probe(batch, call, grad, nudge=True),
                  self._probe(batch, call, grad, overflow=np.inf),
                  self._probe(batch, call, grad, overflow=-np.inf),
                  self._probe(batch, call, grad, in_order=True)]
        wide = self._probe(batch, call, grad, widen=True)
        return _explained(out_e, out_f, [p for p in probes if p is not None],
                          wide=[wide] if wide is not None else [])

    def _probe(self, batch: int, call: int, grad: bool, nudge: bool = False,
               overflow: float | None = None, widen: bool = False, in_order: bool = False):
        """Eager's output on a copy of the block, with nudged inputs, float64 matrix
        products or everything in float64 (see :meth:`ill_conditioned`); None when the
        probe itself fails (or ``widen`` in a float64 case)."""
        try:
            probe = copy.deepcopy(self.eager)
            xp, _ = self.inputs(batch, call, grad)
            if widen:
                if self.rtol is None:
                    return None  # a float64-only case: nothing wider to compare with
                probe.double()
                xp = _widened(xp)
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 99, call])
            for t in xp:
                a = t._data
                if nudge and a.dtype.kind == "f":
                    t._data = (a * (1 + 1e-6 * rng.standard_normal(a.shape))).astype(a.dtype)
            with fusionnet.set_grad_enabled(grad), _wide_products(overflow), \
                    (_sums_in_order() if in_order else contextlib.nullcontext()), \
                    np.errstate(all="ignore"):
                fusionnet.manual_seed(self.seed + 1 + call)
                return probe(*xp)
        except Exception:  # noqa: BLE001 - no probe, no excuse: the mismatch stands
            return None

    def exceptions_agree(self, phase: str, err_e, err_f) -> bool:
        """Record a mismatch if only one side raised or the kinds differ; True when
        neither raised."""
        if err_e is None and err_f is None:
            return True
        if err_e is not None and err_f is not None:
            if same_kind(err_e, err_f):
                self.result.eager_errors.append(f"{phase}: {describe_exception(err_e)}")
            else:
                self.mismatch("exception", phase, f"fused raised {describe_exception(err_f)}"
                                                  f"; eager raised {describe_exception(err_e)}")
        elif err_e is not None:
            self.mismatch("exception", phase, "fused returned a result; eager raised "
                                              f"{describe_exception(err_e)}")
        else:
            self.mismatch("exception", phase, f"fused raised {describe_exception(err_f)}; "
                                              "eager returned a result")
        return False

    def backward(self, phase: str, got, batch: int, call: int) -> None:
        """Backward of the same random weighting of the outputs on both copies; compare
        the gradients of the inputs and of every parameter."""
        out_e, out_f, xe, xf = got
        _, te = flatten(out_e)
        _, tf = flatten(out_f)
        chosen = [i for i, t in enumerate(te) if t.requires_grad and t.is_floating_point()]
        if not chosen:
            return
        weights = [self.rng.standard_normal(tuple(te[i].shape)).astype(
            str(te[i].dtype).rpartition(".")[2]) for i in chosen]
        for m in (self.eager, self.base):
            m.zero_grad(set_to_none=True)

        def run(ts):
            loss = None
            for i, w in zip(chosen, weights):
                term = (ts[i] * fusionnet.from_numpy(w.copy())).sum()
                loss = term if loss is None else loss + term
            loss.backward()

        _, err_e = self.capture(lambda: run(te))
        if any(not tf[i].requires_grad for i in chosen):
            return  # already reported as a forward mismatch
        _, err_f = self.capture(lambda: run(tf))
        if not self.exceptions_agree(phase, err_e, err_f):
            return
        fused_params = dict(self.base.named_parameters())
        pairs = [(f"input {i}", a.grad, b.grad) for i, (a, b) in enumerate(zip(xe, xf))]
        pairs += [(f"parameter {name}", p.grad, getattr(fused_params.get(name), "grad", None))
                  for name, p in self.eager.named_parameters()]
        reference = max([_largest(ge) for _, ge, _ in pairs] + [0.0])
        probes = None
        for k, (what, ge, gf) in enumerate(pairs):
            diff = self.grad_diff(what, ge, gf, reference)
            if diff and ge is not None and gf is not None:
                if probes is None:
                    probes = [self._grad_probe(batch, call, chosen, weights, how)
                              for how in ("rounded", "wide", "nudged")]
                why = _grad_noise(k, len(pairs), ge, gf, probes)
                if why:
                    self.result.notes.append(f"{phase}: ill-conditioned gradient ({why}): "
                                             f"{diff}")
                    continue
            if diff:
                self.mismatch("grad", phase, diff)

    def _grad_probe(self, batch: int, call: int, chosen: list, weights: list, how: str):
        """Eager's gradients (inputs', then parameters') on a copy of the block, or None
        when the probe itself fails. ``how``:

        * ``"rounded"``: its one-input float32 elementwise rows compute in float64 and
          round once, as the generated code does (``_rounded_unary``). A forward value
          1 ulp off decides a tie of ``maximum`` or the side of a ``clamp`` bound, where
          the gradient jumps: fused may then be right where eager rounds.
        * ``"wide"``: parameters and float inputs in float64 (a float32 case only). A
          gradient that cancels to far below its terms (a softmax over the batch of
          saturated rows) keeps only rounding noise: fused is then no further from the
          float64 gradient than eager is, and is accepted.
        * ``"nudged"``: float inputs moved by a random relative 8 ulps of their dtype
          (float64 cases have nothing wider): a gradient that is only noise (``h / -h``
          has an exact zero gradient, computed as ``1/-h + h/h**2``) moves with them.
        """
        try:
            probe = copy.deepcopy(self.eager)
            probe.zero_grad(set_to_none=True)
            xp, _ = self.inputs(batch, call, True)
            widen = how == "wide"
            if widen:
                if self.rtol is None:
                    return None  # a float64-only case: nothing wider to compare with
                probe.double()
                xp = _widened(xp)
            elif how == "nudged":
                rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 98, call])
                for t in xp:
                    a = t._data
                    if a.dtype.kind == "f":
                        eps = np.finfo(a.dtype).eps
                        t._data = (a * (1 + 8 * eps * rng.standard_normal(a.shape))
                                   ).astype(a.dtype)
            with (_rounded_unary() if how == "rounded" else contextlib.nullcontext()), \
                    np.errstate(all="ignore"):
                fusionnet.manual_seed(self.seed + 1 + call)
                _, tp = flatten(probe(*xp))
                loss = None
                for i, w in zip(chosen, weights):
                    w = fusionnet.from_numpy(w.astype(tp[i].detach().numpy().dtype))
                    term = (tp[i] * w).sum()
                    loss = term if loss is None else loss + term
                loss.backward()
            return [t.grad for t in xp] + [p.grad for _, p in probe.named_parameters()]
        except Exception:  # noqa: BLE001 - no probe, no excuse: the mismatch stands
            return None

    def grad_diff(self, what: str, ge, gf, reference: float = 0.0) -> str:
        """How two ``.grad`` values (either may be None) differ; "" when they agree."""
        if (ge is None) != (gf is None):
            return (f"{what}: .grad is {'None' if gf is None else 'set'} fused, "
                    f"{'None' if ge is None else 'set'} eager")
        if ge is None:
            return ""
        diff = compare_arrays(ge.numpy(), gf.numpy(), rtol=self.rtol, reference=reference)
        return f"{what}.grad: {diff}" if diff else ""

    def run(self) -> None:
        """All phases (see the module docstring)."""
        b1, b2 = self.batches
        got = self.call("call1", b1, 0, True, "forward")
        if got is not None:
            self.backward("grad1", got, b1, 0)
        grad2 = self.seed % 3 != 0
        got = self.call("call2", b2, 1, grad2, "forward")
        if got is not None and grad2:
            self.backward("grad2", got, b2, 1)
        self.result.notes += apply_mutations(self.mod.MUTATIONS, self.eager, self.base,
                                             self.seed)
        got = self.call("call3", b1, 2, True, "mutation")
        if got is not None:
            self.backward("grad3", got, b1, 2)
        self.call("call4", b2, 3, False, "mutation")

    def finish(self) -> None:
        """Fill in the fallback reasons and the runner's compile statistics."""
        self.result.fallback_reasons = sorted(set(self.capture.reasons))
        runner = getattr(self.fused, "_fusion_runner", None)
        if runner is not None:
            self.result.compiles = len(runner.compiles)
            self.result.compiled = any(e.fn is not None for e in runner.exact.values()) or \
                any(e.fn is not None for e in runner.generic.values())


def _largest(grad) -> float:
    """The largest finite magnitude of a gradient (0 for None or nothing finite)."""
    if grad is None:
        return 0.0
    a = np.abs(grad.numpy().astype(np.float64))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def run_case(path: str, source: str | None = None, torch_peer: bool = False,
             fuse=fusionnet.fuse) -> CaseResult:
    """Run every phase of the case in ``path`` (or ``source``, reported as ``path``)."""
    start = time.perf_counter()
    module = load_case(path, source)
    result = CaseResult(seed=int(module.SEED))
    try:
        runner = CaseRunner(module, result, fuse=fuse)
        try:
            runner.run()
        finally:
            runner.finish()
        if torch_peer:
            from .peer import compare_with_torch  # noqa: PLC0415 - torch only when asked
            for m in compare_with_torch(module, path, source):
                result.mismatches.append(m)
    except Exception:  # noqa: BLE001 - a failure of the harness itself, not of the block
        result.harness_error = traceback.format_exc(limit=8)
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def format_result(result: CaseResult) -> str:
    """A readable report of one case."""
    lines = [f"case {result.seed}: {len(result.mismatches)} mismatch(es), "
             f"{'compiled' if result.compiled else 'not compiled'} ({result.compiles} "
             f"compile(s)), {result.seconds:.1f} s"]
    for m in result.mismatches:
        m = m if isinstance(m, Mismatch) else Mismatch(**m)
        lines.append(f"  [{m.kind}] {m.phase}: {m.detail}")
    for r in result.fallback_reasons:
        lines.append(f"  fallback: {r}")
    for e in result.eager_errors:
        lines.append(f"  raised in both: {e}")
    if result.harness_error:
        lines.append("  harness error:\n" + result.harness_error)
    return "\n".join(lines)


def main_for_file(path: str, torch_peer: bool | None = None) -> int:
    """Entry point of a saved case: run it, print the report; exit status 1 on any
    mismatch (``--torch`` on the command line adds the PyTorch comparison)."""
    if torch_peer is None:
        torch_peer = "--torch" in sys.argv[1:]
    result = run_case(path, torch_peer=torch_peer)
    print(format_result(result))
    return 1 if result.mismatches or result.harness_error else 0



def _grad_noise(k: int, n: int, ge, gf, probes) -> str:
    """Why gradient ``k`` of ``n`` differing (eager ``ge``, fused ``gf``) is rounding
    noise, from the gradient probes (``_grad_probe`` rounded, wide, nudged); "" if not."""
    reasons = ("eager with correctly rounded float32 transcendentals gives fused's",
               "fused is no further from eager's float64 gradient than eager is",
               "eager itself moves as much when its inputs move by 8 ulps")
    for i, (probe, why) in enumerate(zip(probes, reasons)):
        if probe is None or len(probe) != n or probe[k] is None:
            continue
        found = [[probe[k]]]
        if _explained([ge], [gf], [] if i == 1 else found, wide=found if i == 1 else []):
            return why
    return ""


def _widened(tensors) -> list:
    """Float64 copies of the float tensors (keeping ``requires_grad``), others as are."""
    return [fusionnet.from_numpy(t._data.astype(np.float64)).requires_grad_(t.requires_grad)
            if t.is_floating_point() else t for t in tensors]


def _numeric(diff: str, flips: bool) -> bool:
    """Whether a difference is one of values (not of structure, dtype, shape or flags)
    that rounding noise could explain: float values (finite, NaN or infinite), or, in a
    case that turns floats into discrete values, integers and bools."""
    return any(k in diff for k in ("values differ", "NaN positions differ",
                                   "infinities differ", ROUNDING)) or \
        (flips and "elements differ" in diff)


def _explained(out_e, out_f, probes, wide=()) -> bool:
    """Whether the probes' outputs explain every fused-vs-eager difference, tensor by
    tensor: each integer or bool element fused changed, and each float element whose
    NaN or infinity fused changed, some probe changed too; finite float differences are
    within half of the largest change of a probe. ``wide`` probes (the block in
    float64) count for finite differences only: a float32 overflow they do not have
    must not excuse a NaN."""
    if not probes and not wide:
        return False
    _, te = flatten(out_e)
    _, tf = flatten(out_f)
    tps = [flatten(p)[1] for p in probes]
    tws = [flatten(p)[1] for p in wide]
    if any(len(tp) != len(te) for tp in tps + tws) or len(tf) != len(te):
        return False
    for i, (e, f) in enumerate(zip(te, tf)):
        e64, f64 = (np.asarray(t.detach().numpy(), np.float64) for t in (e, f))
        ps = [np.asarray(tp[i].detach().numpy(), np.float64) for tp in tps]
        ws = [np.asarray(tw[i].detach().numpy(), np.float64) for tw in tws]
        if e64.shape != f64.shape or any(p.shape != e64.shape for p in ps + ws):
            return False
        if not e.is_floating_point():
            unexplained = f64 != e64
            for p in ps:
                unexplained &= p == e64
            if unexplained.any():
                return False
            continue
        unexplained = _class_changed(e64, f64)
        for p in ps:
            unexplained &= ~_class_changed(e64, p)
        if unexplained.any():
            return False
        with np.errstate(invalid="ignore"):
            gap = np.nanmax(np.where(np.isfinite(e64 - f64), np.abs(f64 - e64), 0.0),
                            initial=0.0)
            moved = max((np.nanmax(np.where(np.isfinite(p - e64), np.abs(p - e64), 0.0),
                                   initial=0.0) for p in ps + ws), default=0.0)
        if gap > 0 and not moved >= 0.5 * gap:
            return False
    return True


def _class_changed(e: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Where ``f`` is NaN, +inf, -inf or finite and ``e`` is another of these."""
    def cls(a):
        return np.where(np.isnan(a), 3, np.where(np.isposinf(a), 1, np.where(np.isneginf(a),
                                                                             2, 0)))
    return cls(e) != cls(f)


def _patched_eager(kind, arity: int, wrap):
    """While active, every op-table row of ``kind`` and ``arity`` runs ``wrap(eager)``
    instead of its own eager implementation (restored on exit)."""
    from fusionnet.ops.registry import OPS
    return _patched_rows([op for op in OPS.values() if op.kind is kind and op.arity == arity],
                         lambda op: wrap(op.eager))


def _rounded_unary():
    """While active, every one-input ``Kind.ELEMENTWISE`` row given a float32/float16
    array computes from a float64 copy and rounds once to that dtype (what the
    generated code does: ``np.float32(math.tanh(np.float64(x)))``), where NumPy's own
    float32 loops may be 1-2 ulps off. Rows whose result is a view or has another
    dtype (casts, tests) run as they are."""
    from fusionnet.ops.registry import Kind

    def rounded(eager):
        def run(xp, a, *rest, **attrs):
            out = eager(xp, a, *rest, **attrs)
            if getattr(a, "dtype", None) is None or a.dtype.kind != "f" or \
                    a.dtype.itemsize >= 8 or getattr(out, "dtype", None) != a.dtype or \
                    np.may_share_memory(out, a):
                return out
            return np.asarray(eager(xp, a.astype(np.float64), *rest, **attrs)).astype(a.dtype)
        return run

    return _patched_eager(Kind.ELEMENTWISE, 1, rounded)


def _sums_in_order():
    """While active, every reduction row that adds (sum, mean) adds its float elements
    one after another in index order, in float64, and rounds once: the order generated
    code uses, where NumPy sums pairwise. Both are valid; near a threshold (a loop that
    halves until ``sum() <= 1`` of a softmax whose sum is 1 up to rounding) the order
    alone decides a trip count."""
    from fusionnet.ops.registry import Kind

    def in_order(eager, facts):
        def run(xp, a, dim=None, keepdim=False, **attrs):
            if getattr(a, "dtype", None) is None or a.dtype.kind != "f" or a.ndim == 0:
                return eager(xp, a, dim=dim, keepdim=keepdim, **attrs)
            out = eager(xp, a, dim=dim, keepdim=keepdim, **attrs)
            dims = tuple(range(a.ndim)) if dim is None else tuple(
                d % a.ndim for d in ((dim,) if isinstance(dim, int) else dim))
            kept = [d for d in range(a.ndim) if d not in dims]
            moved = xp.transpose(a, kept + list(dims)).astype(np.float64)
            n = math.prod(a.shape[d] for d in dims)
            flat = moved.reshape(tuple(a.shape[d] for d in kept) + (n,))
            total = xp.cumsum(flat, axis=-1)[..., -1] if n else xp.zeros(flat.shape[:-1])
            if facts.divide_by_count:
                total = total / n if n else total * np.nan
            return xp.asarray(total).reshape(np.shape(out)).astype(out.dtype)
        return run

    from fusionnet.ops.registry import OPS

    return _patched_rows([op for op in OPS.values() if op.kind is Kind.REDUCTION and
                          op.reduction is not None and op.reduction.combine == "add"],
                         lambda op: in_order(op.eager, op.reduction))


@contextlib.contextmanager
def _patched_rows(rows, wrap):
    """While active, each row in ``rows`` runs ``wrap(row)`` as its eager implementation."""
    saved = [(op, op.eager) for op in rows]
    try:
        for op, _ in saved:
            object.__setattr__(op, "eager", wrap(op))
        yield
    finally:
        for op, eager in saved:
            object.__setattr__(op, "eager", eager)


def _wide_products(overflow: float | None):
    """While active (``overflow`` is +inf or -inf), every two-input ``Kind.MATMUL`` row
    (matmul, conv2d: bilinear in its inputs) computes from float64 copies of its
    float32/float16 inputs and rounds once to their dtype, and each output element whose
    terms of ``overflow``'s sign sum past that dtype's range (so some float32 summation
    order reaches that infinity) is set to ``overflow``; with ``overflow`` None, nothing
    changes."""
    from fusionnet.ops.registry import Kind

    def widened(eager):
        def run(xp, a, b, **attrs):
            if a.dtype.kind != "f" or b.dtype.kind != "f":
                return eager(xp, a, b, **attrs)
            target = np.result_type(a.dtype, b.dtype)
            if target.itemsize >= 8:
                return eager(xp, a, b, **attrs)
            a, b = a.astype(np.float64), b.astype(np.float64)
            result = eager(xp, a, b, **attrs)
            pa, na, pb, nb = (xp.maximum(v, 0.0) for v in (a, -a, b, -b))
            if overflow > 0:   # positive terms: same-sign factors
                terms = eager(xp, pa, pb, **attrs) + eager(xp, na, nb, **attrs)
            else:
                terms = eager(xp, pa, nb, **attrs) + eager(xp, na, pb, **attrs)
            result = xp.where(terms > np.finfo(target).max, overflow, result)
            return result.astype(target)
        return run

    if overflow is None:
        return contextlib.nullcontext()
    return _patched_eager(Kind.MATMUL, 2, widened)
