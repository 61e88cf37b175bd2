"""Find and load the kernel library (``kernels/`` in the repository, ``fusionnet/kernels``
in a wheel).

Generated numba code calls ``kernel_module("numba_kernels").dot_nt`` and friends. The
module is loaded from its file, wherever the library lives, under a private module name
(``_fusionnet_kernels.<name>``): no package is faked, and the same code runs in a source
checkout and in an installed wheel. Its numba functions get the checked on-disk cache of
``fusionnet/codegen/numba/cache.py``.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import threading

__all__ = ["kernel_module", "kernel_module_name", "kernels_dir", "kernels_hash"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_PREFIX = "_fusionnet_kernels."
_LOCK = threading.Lock()
_loaded: dict = {}


def kernels_dir() -> str:
    """The folder that holds the kernel sources."""
    packaged = os.path.join(_HERE, "kernels")
    if os.path.isdir(packaged):
        return packaged
    return os.path.join(os.path.dirname(_HERE), "kernels")


def kernel_module_name(name: str) -> str:
    """The private module name kernel module ``name`` is loaded under. Compiled code that
    calls the kernels refers to them by it, so generated modules name it (a change of name
    must not reuse machine code compiled against the old one)."""
    return _PREFIX + name


def kernel_module(name: str):
    """The kernel-library module ``<name>.py``, loaded once per process from its file, its
    numba functions cached on disk with checksums."""
    module = _loaded.get(name)
    if module is not None:
        return module
    with _LOCK:
        if name not in _loaded:
            path = os.path.join(kernels_dir(), f"{name}.py")
            spec = importlib.util.spec_from_file_location(kernel_module_name(name), path)
            if spec is None or not os.path.isfile(path):
                raise ImportError(f"fusionnet: no kernel module {name!r} in {kernels_dir()}")
            module = importlib.util.module_from_spec(spec)
            # Registered under its own private name: numba rebuilds a cached function's
            # globals by importing the function's module by name.
            sys.modules[spec.name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[spec.name]
                raise
            from .codegen.numba.cache import install  # noqa: PLC0415 - numba loads lazily
            install(module)
            _loaded[name] = module
    return _loaded[name]


@functools.lru_cache(maxsize=None)
def kernels_hash() -> str:
    """A hash of every kernel source, part of the compile-cache key (read once a process)."""
    h = hashlib.sha256()
    folder = kernels_dir()
    for fname in sorted(os.listdir(folder)):
        if fname.endswith((".py", ".cu")):
            with open(os.path.join(folder, fname), "rb") as fh:
                h.update(fname.encode() + fh.read())
    return h.hexdigest()[:16]
