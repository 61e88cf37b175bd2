"""Compile time of ``fusionnet.fuse``, cold and from the disk cache, measured in subprocesses.

In-process figures would be wrong both ways: the generated module stays imported
in ``sys.modules`` after the first compile, and numba's own start-up is paid only
once per process. So each measurement is a fresh interpreter that builds the
model, imports numba (not counted), fuses it and times its first call:

* **cold**: ``FUSIONNET_CACHE_DIR`` and ``NUMBA_CACHE_DIR`` point at a new empty
  temporary folder, so tracing, optimizing, code generation and every numba
  compile (the kernel library's included) are paid;
* **cached**: a second interpreter with the same folders, so the generated code
  and numba's machine code load from disk (the numba cache hits are recorded).

Run directly: ``python -m fusionnet.bench.compile_probe MODEL BATCH`` prints one JSON line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

__all__ = ["compile_times"]


def _probe(model: str, batch: int) -> dict:
    import numba  # noqa: F401, PLC0415 - imported before the clock starts, on purpose

    import fusionnet  # noqa: PLC0415

    from .models import MODELS, build  # noqa: PLC0415

    spec = MODELS[model]
    net = build(spec)
    X = fusionnet.rand(batch, *spec.sample_shape)
    with warnings.catch_warnings(record=True) as caught, fusionnet.no_grad():
        warnings.simplefilter("always")
        fused = fusionnet.fuse(net)
        start = time.perf_counter()
        fused(X)
        took = time.perf_counter() - start
    runner = fused._fusion_runner
    stats = [e.compiled.compile_stats() for e in dict.fromkeys(runner.exact.values())
             if e.compiled is not None]
    return {"first_call_s": took, "compiles": list(runner.compiles),
            "cache_hits": sum(s["cache_hits"] for s in stats),
            "cache_misses": sum(s["cache_misses"] for s in stats),
            "fallback": [e.reason for e in runner.exact.values() if e.fn is None],
            "warnings": [str(w.message) for w in caught]}


def _run(model: str, batch: int, cache: str, timeout: float) -> dict:
    import fusionnet  # noqa: PLC0415

    env = dict(os.environ, FUSIONNET_CACHE_DIR=cache, NUMBA_CACHE_DIR=cache)
    # The child must import this very fusionnet (a checkout need not be installed).
    root = os.path.dirname(os.path.dirname(os.path.abspath(fusionnet.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "fusionnet.bench.compile_probe", model,
                           str(batch)], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                           else f"exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compile_times(model: str, batch: int, timeout: float = 300.0) -> dict:
    """Cold and cached first-call seconds of the fused ``model`` at ``batch``, with details.

    Never raises: a failed probe gives ``None`` times and an ``error``."""
    out = {"batch": batch, "cold_s": None, "cached_s": None,
           "method": "first fused call in a fresh subprocess; cold = new empty "
                     "FUSIONNET_CACHE_DIR and NUMBA_CACHE_DIR, cached = a second subprocess "
                     "on the same folders; numba import and model build not counted"}
    try:
        with tempfile.TemporaryDirectory(prefix="fusionnet-bench-cache-") as cache:
            cold = _run(model, batch, cache, timeout)
            cached = _run(model, batch, cache, timeout)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, OSError) as err:
        out["error"] = f"{type(err).__name__}: {err}"
        return out
    out.update(cold_s=cold["first_call_s"], cached_s=cached["first_call_s"],
               cold=cold, cached=cached)
    return out


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1], int(sys.argv[2]))))
