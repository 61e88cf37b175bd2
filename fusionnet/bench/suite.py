"""Run the grid: for each model, batch size and implementation, check the result against
fusionnet eager, then time it (forward only, under ``fusionnet.no_grad()``).

A row whose result is wrong is marked ``FAILED`` and never timed; an implementation
that cannot run here is ``skipped`` with a note; a fused model that runs eagerly
keeps its row, with the fallback reason in ``fallback`` (the warning is recorded,
not printed).
"""
from __future__ import annotations

import datetime
import sys
import warnings

import numpy as np

import fusionnet

from .compile_probe import compile_times
from .machine import blas_info, environment, load_average, machine_info, versions
from .models import MODELS, build
from .peers import BUILDERS, Skip
from .timing import measure
from ..runtime.signature import batch_of

__all__ = ["run_suite", "check", "MODELS", "IMPLS", "BATCH_SIZES", "QUICK", "SCHEMA"]

#: Version of the results.json layout (see docs/benchmarks.md).
SCHEMA = 1
BATCH_SIZES = (1, 2, 64, 1024, 4096)
IMPLS = tuple(BUILDERS)
DEFAULT_IMPLS = IMPLS
#: ``--quick``: a subset that finishes in under a minute on two cores, compiles included.
QUICK = {"models": ("MLP", "NestMLP", "Chimera"), "batch_sizes": (2, 64),
         "impls": ("eager", "fused", "numpy", "njit"), "repeats": 5, "min_sample_s": 0.01}
RTOL, ATOL = 1e-4, 1e-5


def check(got, want) -> str:
    """'' when ``got`` matches ``want`` (float32 tolerances), else what is wrong."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    if np.allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True):
        return ""
    err = np.abs(got.astype(np.float64) - want)
    return (f"max abs error {np.nanmax(err):.3g} (rtol {RTOL}, atol {ATOL}); "
            f"{int(np.sum(~np.isclose(got, want, rtol=RTOL, atol=ATOL)))} of {want.size} differ")


def _row(model, batch, impl, status, note="", **extra) -> dict:
    row = {"model": model, "batch": batch, "impl": impl, "status": status,
           "correct": None, "median_us": None, "iqr_us": None, "q1_us": None, "q3_us": None,
           "min_us": None, "max_us": None, "samples": 0, "inner_loops": 0, "note": note,
           "fallback": None, "compile_cold_s": None, "compile_cached_s": None, "warnings": []}
    row.update(extra)
    return row


def _fallback_of(fused, batch: int) -> str | None:
    """The reason the fused module ran this batch size eagerly, or None if it ran compiled."""
    runner = fused._fusion_runner
    for key, entry in runner.exact.items():
        if batch_of(key) == batch and entry.fn is None:
            return entry.reason + (f" (at {entry.source})" if entry.source else "")
    return None


def _run_one(impl, X, want, batch, timing) -> dict:
    """Check then time one implementation at one batch size; returns the row's fields."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # record every fallback warning, show none
        try:
            arg = impl.prepare(X)
            wrong = check(impl.to_numpy(impl.call(arg)), want)
        except Exception as err:  # noqa: BLE001 - an implementation crashing is a FAILED row
            wrong = f"raised {type(err).__name__}: {err}"
        fields = {"warnings": sorted({str(w.message) for w in caught})}
        if impl.fused is not None:
            fields["fallback"] = _fallback_of(impl.fused, batch)
        if wrong:
            return dict(fields, status="FAILED", correct=False,
                        note="; ".join(filter(None, [impl.note, wrong])))
        t = measure(impl.call, arg, **timing)
    return dict(fields, status="ok", correct=True, median_us=t.median_us, iqr_us=t.iqr_us,
                q1_us=t.q1_us, q3_us=t.q3_us, min_us=t.min_us, max_us=t.max_us,
                samples=t.samples, inner_loops=t.inner)


def _progress_line(i: int, total: int, text: str, stream) -> None:
    if stream is None:
        return
    if getattr(stream, "isatty", lambda: False)():
        stream.write(f"\r\033[K[{i}/{total}] {text}")  # one line, rewritten in place
    else:
        stream.write(f"[{i}/{total}] {text}\n")  # a log file gets plain lines
    stream.flush()


def run_suite(models=None, batch_sizes=BATCH_SIZES, impls=DEFAULT_IMPLS, repeats: int = 7,
              min_sample_s: float = 0.02, warmup: int = 3, measure_compile: bool = True,
              progress=sys.stderr, seed: int = 0, argv=None) -> dict:
    """Run the grid and return the results (the content of ``results.json``)."""
    models = list(models or MODELS)
    unknown = [m for m in models if m not in MODELS] + [i for i in impls if i not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown model or implementation: {', '.join(unknown)} "
                         f"(models: {', '.join(MODELS)}; impls: {', '.join(BUILDERS)})")
    timing = {"repeats": repeats, "min_sample_s": min_sample_s, "warmup": warmup}
    machine = machine_info()  # load average before the run, and after (below)
    total = len(models) * len(batch_sizes) * len(impls)
    step, records, per_model = 0, [], {}
    rng = np.random.default_rng(seed)
    for name in models:
        spec = MODELS[name]
        net = build(spec, seed)
        info = per_model[name] = {"in_features": spec.in_features, "compile": None}
        built, skipped = {}, {}
        for impl in impls:
            _progress_line(step, total, f"{name}: preparing {impl}", progress)
            try:
                built[impl] = BUILDERS[impl](spec, net)
            except Skip as why:
                skipped[impl] = str(why)
        if "fused" in built and measure_compile:
            _progress_line(step, total, f"{name}: compile time (cold, cached)", progress)
            info["compile"] = compile_times(name, min(batch_sizes))
        for batch in batch_sizes:
            X = rng.random((batch, *spec.sample_shape), dtype=np.float32)
            if spec.max_batch is not None and batch > spec.max_batch:
                for impl in impls:
                    step += 1
                    records.append(_row(name, batch, impl, "skipped",
                                        f"{name} runs at batch sizes up to {spec.max_batch}"))
                continue
            with fusionnet.no_grad():
                want = net(fusionnet.from_numpy(X.copy())).numpy().copy()
                for impl in impls:
                    step += 1
                    _progress_line(step, total, f"{name} b={batch} {impl}", progress)
                    if impl in skipped:
                        records.append(_row(name, batch, impl, "skipped", skipped[impl]))
                        continue
                    record = _row(name, batch, impl, "ok", built[impl].note)
                    record.update(_run_one(built[impl], X, want, batch, timing))
                    _compile_fields(record, built[impl], info["compile"])
                    records.append(record)
        if "fused" in built:
            runner = built["fused"].fused._fusion_runner
            info["fused_compiles"] = list(runner.compiles)
            info["fallback"] = sorted({e.reason for e in runner.exact.values() if e.fn is None})
    if progress is not None and getattr(progress, "isatty", lambda: False)():
        progress.write("\r\033[K")
        progress.flush()
    return {"schema": SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="seconds"), "command": argv,
            "config": {"models": models, "batch_sizes": list(batch_sizes), "impls": list(impls),
                       **timing, "measure_compile": measure_compile, "seed": seed,
                       "rtol": RTOL, "atol": ATOL, "grad": "forward under fusionnet.no_grad()"},
            "machine": dict(machine, load_average_end=load_average()),
            "versions": versions(), "blas": blas_info(),
            "environment": environment(), "models": per_model, "records": records}


def _compile_fields(record: dict, impl, compile_info) -> None:
    if impl.compile_s is not None:
        record["compile_cold_s"] = impl.compile_s
    if impl.name == "fused" and compile_info is not None:
        record["compile_cold_s"] = compile_info["cold_s"]
        record["compile_cached_s"] = compile_info["cached_s"]
