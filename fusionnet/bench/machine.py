"""What a result was measured on: machine, library versions, BLAS and relevant env vars."""
from __future__ import annotations

import importlib
import os
import platform
import sys

__all__ = ["machine_info", "versions", "blas_info", "environment", "load_average"]

# Variables that change BLAS or numba threading, and so the figures.
_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMBA_NUM_THREADS", "NUMBA_CACHE_DIR", "FUSIONNET_CACHE_DIR")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """Platform, CPU model (from /proc/cpuinfo where there is one) and core counts."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": usable,
            "load_average": load_average()}


def load_average():
    """The 1/5/15-minute load averages (None where unsupported): other work on the machine
    during a run skews the figures, multithreaded BLAS most of all."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def versions() -> dict:
    """Versions of Python, fusionnet and every library the suite may use (None if absent)."""
    out = {"python": sys.version.split()[0]}
    for name in ("fusionnet", "numpy", "numba", "scipy", "llvmlite", "torch", "jax", "jaxlib",
                 "matplotlib", "threadpoolctl"):
        mod = sys.modules.get(name)
        if mod is None and name in ("fusionnet", "numpy", "numba", "scipy", "llvmlite"):
            mod = importlib.import_module(name)  # cheap and always installed
        out[name] = getattr(mod, "__version__", None) if mod is not None else _dist(name)
    return out


def _dist(name: str):
    # The version of an installed but not (yet) imported package, without importing it:
    # importing torch or jax just to print a version would cost seconds.
    from importlib import metadata  # noqa: PLC0415
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def blas_info() -> dict:
    """The BLAS behind NumPy (and SciPy, whose BLAS numba's ``np.dot`` calls)."""
    info: dict = {"source": None, "libraries": []}
    try:
        threadpoolctl = importlib.import_module("threadpoolctl")
        info["source"] = "threadpoolctl"
        info["libraries"] = [{k: lib.get(k) for k in ("internal_api", "version", "num_threads",
                                                      "architecture", "filepath")}
                             for lib in threadpoolctl.threadpool_info()]
    except ImportError:
        info["source"] = "numpy.show_config / scipy.show_config (threadpoolctl not installed)"
    for name in ("numpy", "scipy"):
        try:
            deps = importlib.import_module(name).show_config(mode="dicts")["Build Dependencies"]
            blas = deps.get("blas", {})
            info[f"{name}_blas"] = {k: blas.get(k) for k in ("name", "version",
                                                             "openblas configuration")}
        except Exception as err:  # noqa: BLE001 - old NumPy/SciPy: no dict mode
            info[f"{name}_blas"] = {"error": f"{type(err).__name__}: {err}"}
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    return info


def environment() -> dict:
    """The environment variables that affect the figures (unset ones are None)."""
    return {k: os.environ.get(k) for k in _ENV_VARS}
