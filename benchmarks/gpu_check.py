"""The whole GPU check in one command, for a session that has an NVIDIA GPU.

    python benchmarks/gpu_check.py --out "$OUT"            # install, tests, benchmark
    python benchmarks/gpu_check.py --out "$OUT" --skip-install --wheelhouse wheels/

Steps, each written under ``--out`` as it finishes (a step that fails is recorded and the
next one still runs):

1. ``machine.json``: GPU (``nvidia-smi``), driver, Python, NumPy, CuPy, torch versions.
2. install: ``pip install -e .`` (no dependencies fetched) unless ``--skip-install``;
   CuPy from ``--wheelhouse`` (``pip install --no-index --find-links``) if it does not
   import (the device machine has no network).
3. ``gpu_tests.xml`` / ``gpu_tests.txt``: ``pytest -m gpu`` (the GPU tests, with
   ``-rs`` so every skip says why), plus the CPU-side CUDA tests.
4. ``gpu_bench.json`` / ``gpu_bench.md``: MLP batch 2 fused (one graph launch per forward)
   vs fusionnet eager on CuPy vs hand-written CuPy vs PyTorch CUDA (when torch sees a
   GPU); the runner's modes (graph + tiled GEMM, no graph, cuBLAS); FixedHiddenMLP's loop
   on the device vs on the host; a 4096x4096 Linear+ReLU fused vs cuBLAS alone
   (``cupy.matmul``) with the ratio (target: at most 1.25); whether this CuPy allows cuBLAS
   during stream capture.

Times are microseconds per call: the mean over ``reps`` calls (the GPU synchronised at
the end of each round), median of ``rounds`` rounds; ``latency`` rows synchronise after
every call.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd, timeout, **kw) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              **kw)
        return proc.returncode, proc.stdout + proc.stderr
    except (OSError, subprocess.TimeoutExpired) as err:
        return -1, f"{type(err).__name__}: {err}"


def machine(out: str) -> dict:
    """What the numbers were measured on."""
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": sys.version.split()[0],
            "platform": platform.platform(), "command": " ".join(sys.argv)}
    rc, text = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                     "--format=csv,noheader"], 30)
    info["nvidia_smi"] = text.strip() if rc == 0 else f"unavailable: {text.strip()[:200]}"
    for mod in ("numpy", "cupy", "torch", "numba"):
        try:
            info[mod] = importlib.import_module(mod).__version__
        except Exception as err:  # noqa: BLE001 - recorded, not fatal
            info[mod] = f"not importable: {type(err).__name__}: {err}"[:200]
    try:
        import cupy
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["gpu_name"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception as err:  # noqa: BLE001
        info["gpu_name"] = f"unavailable: {err}"[:200]
    _write(out, "machine.json", json.dumps(info, indent=2))
    return info


def install(out: str, wheelhouse: str | None) -> None:
    """The project (editable, no network) and, if needed, CuPy from a wheelhouse."""
    log = []
    rc, text = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                     "-e", ROOT], 600)
    log.append(f"$ pip install --no-deps -e . -> {rc}\n{text[-2000:]}")
    try:
        importlib.import_module("cupy")
    except Exception:  # noqa: BLE001
        if wheelhouse:
            rc, text = _run([sys.executable, "-m", "pip", "install", "--no-index",
                             "--find-links", wheelhouse, "cupy-cuda13x", "cupy-cuda12x"], 600)
            log.append(f"$ pip install cupy from {wheelhouse} -> {rc}\n{text[-2000:]}")
        else:
            log.append("CuPy does not import and no --wheelhouse was given")
    _write(out, "install.log", "\n\n".join(log))


def tests(out: str) -> int:
    """The GPU tests, then the CPU-side CUDA tests (codegen, emulation)."""
    rc, text = _run([sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu",
                     f"--junitxml={os.path.join(out, 'gpu_tests.xml')}", "tests/"], 480,
                    env=dict(os.environ, PYTHONPATH=ROOT))
    rc2, text2 = _run([sys.executable, "-m", "pytest", "-q", "-s", "tests/test_cuda_gpu.py",
                       "-k", "capture_of_cublas"], 120, env=dict(os.environ, PYTHONPATH=ROOT))
    _write(out, "gpu_tests.txt", f"pytest -m gpu -> {rc}\n{text}\n\n"
                                 f"cuBLAS capture probe -> {rc2}\n{text2[-3000:]}")
    return rc


# ---- the benchmark ------------------------------------------------------------------------


def _time(f, sync, reps: int, rounds: int = 5) -> float:
    for _ in range(10):
        f()
    sync()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        sync()
        times.append((time.perf_counter() - t) / reps * 1e6)
    return statistics.median(times)


def _latency(f, sync, reps: int) -> float:
    def one():
        f()
        sync()
    return _time(one, lambda: None, reps)


def bench(out: str) -> dict:
    """The rows of ``gpu_bench.json`` (see the module docstring)."""
    sys.path.insert(0, ROOT)
    import cupy
    import numpy as np

    import fusionnet as fn
    from fusionnet import nn, zoo
    from fusionnet.runtime import fuse

    sync = cupy.cuda.Device().synchronize
    rows: list = []
    result = {"rows": rows}

    def row(name, us, **extra):
        rows.append({"name": name, "us_per_call": round(us, 2), **extra})
        print(f"{name:58s} {us:10.2f} us", flush=True)

    def with_env(env, make):
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return make()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    # -- MLP batch 2 -----------------------------------------------------------------------
    fn.manual_seed(0)
    mlp = zoo.MLP()
    x_cpu = fn.randn(2, 20)
    mlp(x_cpu)
    mlp.cuda()
    x = x_cpu.cuda()
    with fn.no_grad():
        for label, env in (("fused: graph + tiled GEMM (default)", {}),
                           ("fused: no graph, tiled GEMM", {"FUSIONNET_CUDA_GRAPHS": "0",
                                                           "FUSIONNET_CUDA_GEMM": "tiled"}),
                           ("fused: no graph, cuBLAS + epilogue", {"FUSIONNET_CUDA_GEMM": "cublas"})):
            fused = fuse(mlp, fallback=False)

            def call(fused=fused):
                return fused(x)
            with_env(env, lambda: [call() for _ in range(3)])  # plan made under env
            entry = next(iter(fused._fusion_runner.exact.values()))
            row(f"MLP b2 {label}", _time(call, sync, 2000),
                stats=entry.compiled.compile_stats(), notes=entry.compiled.notes[-1:])
            row(f"MLP b2 {label} [latency]", _latency(call, sync, 500))
        row("MLP b2 fusionnet eager (CuPy)", _time(lambda: mlp(x), sync, 1000))
        w1, b1 = mlp.hidden.weight._data, mlp.hidden.bias._data
        w2, b2 = mlp.out.weight._data, mlp.out.bias._data
        xa = x._data
        row("MLP b2 hand-written CuPy", _time(
            lambda: cupy.maximum(xa @ w1.T + b1, 0) @ w2.T + b2, sync, 2000))
    try:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no GPU")
        tm = torch.nn.Sequential(torch.nn.Linear(20, 256), torch.nn.ReLU(),
                                 torch.nn.Linear(256, 10)).cuda()
        tx = torch.randn(2, 20, device="cuda")
        with torch.no_grad():
            row("MLP b2 PyTorch CUDA eager", _time(lambda: tm(tx), torch.cuda.synchronize, 2000))
            g = torch.cuda.CUDAGraph()
            static_out = None
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    tm(tx)
            torch.cuda.current_stream().wait_stream(s)
            with torch.cuda.graph(g):
                static_out = tm(tx)
            row("MLP b2 PyTorch CUDA graph replay", _time(g.replay, torch.cuda.synchronize, 2000))
            del static_out
        result["torch"] = torch.__version__
    except Exception as err:  # noqa: BLE001 - a missing peer is a note, not a failure
        result["torch"] = f"skipped: {type(err).__name__}: {err}"[:300]

    # -- the data-dependent loop -------------------------------------------------------------
    fn.manual_seed(1)
    fh = zoo.FixedHiddenMLP()
    xf = fn.randn(2, 20) * 1000  # about ten halvings
    fh(xf)
    fh.cuda()
    fh.rand_weight = fh.rand_weight.cuda()
    xf = xf.cuda()
    with fn.no_grad():
        for loops in ("device", "host"):
            fused = fuse(fh, fallback=False)
            with_env({"FUSIONNET_CUDA_LOOPS": loops}, lambda: [fused(xf) for _ in range(3)])
            entry = next(iter(fused._fusion_runner.exact.values()))
            row(f"FixedHiddenMLP b2 loop on the {loops}", _time(lambda: fused(xf), sync, 500),
                stats=entry.compiled.compile_stats())
        row("FixedHiddenMLP b2 fusionnet eager (CuPy)", _time(lambda: fh(xf), sync, 200))

    # -- 4096 x 4096 ----------------------------------------------------------------------
    n = 4096
    fn.manual_seed(2)
    big = nn.Sequential(nn.Linear(n, n), nn.ReLU()).cuda()
    xb = fn.randn(n, n).cuda()
    wa, xba = big[0].weight._data, xb._data
    outb = cupy.empty((n, n), cupy.float32)
    with fn.no_grad():
        cublas = _time(lambda: cupy.matmul(xba, wa.T, out=outb), sync, 20, rounds=5)
        row("4096x4096x4096 cuBLAS alone (cupy.matmul)", cublas)
        fused = fuse(big, fallback=False)
        fused(xb)
        t = _time(lambda: fused(xb), sync, 20, rounds=5)
        entry = next(iter(fused._fusion_runner.exact.values()))
        ratio = t / cublas
        row("4096 Linear+ReLU fused (cuBLAS + epilogue)", t, ratio_vs_cublas=round(ratio, 3),
            target=1.25, ok=ratio <= 1.25, notes=entry.compiled.notes[-1:])
        err = float(cupy.abs(fused(xb)._data - cupy.maximum(xba @ wa.T + big[0].bias._data, 0)).max())
        result["gemm_4096_max_abs_diff"] = err
        tiled = fuse(big, fallback=False)
        with_env({"FUSIONNET_CUDA_GEMM": "tiled", "FUSIONNET_CUDA_GRAPHS": "0"},
                 lambda: tiled(xb))
        row("4096 Linear+ReLU fused, tiled GEMM (for information)",
            _time(lambda: tiled(xb), sync, 3, rounds=3))

    # -- can cuBLAS run during capture here? ---------------------------------------------------
    a = cupy.ones((8, 8), cupy.float32)
    o = cupy.empty((8, 8), cupy.float32)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        try:
            cupy.matmul(a, a, out=o)
            result["cublas_during_capture"] = "allowed"
        except Exception as err:  # noqa: BLE001
            result["cublas_during_capture"] = f"refused: {type(err).__name__}: {err}"[:300]
        finally:
            try:
                stream.end_capture()
            except Exception:  # noqa: BLE001, S110
                pass
    return result


def _write(out: str, name: str, text: str) -> None:
    with open(os.path.join(out, name), "w") as fh:
        fh.write(text)


def _markdown(info: dict, result: dict) -> str:
    lines = [f"GPU: {info.get('gpu_name')} ({info.get('nvidia_smi')}); CuPy {info.get('cupy')}; "
             f"date {info.get('date')}; command `{info.get('command')}`", "",
             "| benchmark | us per call | notes |", "| --- | ---: | --- |"]
    for r in result.get("rows", []):
        extra = {k: v for k, v in r.items() if k not in ("name", "us_per_call")}
        lines.append(f"| {r['name']} | {r['us_per_call']} | {json.dumps(extra) if extra else ''} |")
    lines += ["", f"cuBLAS during stream capture: {result.get('cublas_during_capture')}",
              f"torch: {result.get('torch')}",
              f"4096 max abs diff vs CuPy: {result.get('gemm_4096_max_abs_diff')}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """Run the steps; the exit status is the GPU tests' (1 if the benchmark failed)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    p.add_argument("--skip-install", action="store_true")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--wheelhouse", default=None, help="folder of wheels (CuPy) to install from")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if not args.skip_install:
        install(args.out, args.wheelhouse)
    info = machine(args.out)
    status = 0 if args.skip_tests else tests(args.out)
    try:
        result = bench(args.out)
        _write(args.out, "gpu_bench.json", json.dumps({"machine": info, **result}, indent=2))
        _write(args.out, "gpu_bench.md", _markdown(info, result))
    except Exception:  # noqa: BLE001 - record it: the files already written stay useful
        _write(args.out, "gpu_bench_error.txt", traceback.format_exc())
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
