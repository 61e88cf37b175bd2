"""Find the kernel library (``kernels/`` in the repository, ``fusionnet/kernels`` in a wheel).

Generated code imports ``fusionnet.kernels.<name>``. In an installed wheel
that package exists; in a source checkout (editable install) the kernels live
in the top-level ``kernels/`` folder, so we register them under the same name.
The numba functions of a kernel module get the checked on-disk cache of
``fusionnet/codegen/numba_cache.py`` when it is first imported here.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import sys

__all__ = ["kernel_module", "kernels_dir", "kernels_hash"]

_HERE = os.path.dirname(os.path.abspath(__file__))


def kernels_dir() -> str:
    """The folder that holds the kernel sources."""
    packaged = os.path.join(_HERE, "kernels")
    if os.path.isdir(packaged):
        return packaged
    return os.path.join(os.path.dirname(_HERE), "kernels")


def kernel_module(name: str):
    """Import ``fusionnet.kernels.<name>`` from wherever the kernels live, its numba
    functions cached on disk with checksums."""
    full = f"fusionnet.kernels.{name}"
    if full in sys.modules:
        return sys.modules[full]
    folder = kernels_dir()
    if "fusionnet.kernels" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "fusionnet.kernels", os.path.join(folder, "__init__.py"),
            submodule_search_locations=[folder])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules["fusionnet.kernels"] = pkg
        if os.path.exists(os.path.join(folder, "__init__.py")):
            spec.loader.exec_module(pkg)
    module = importlib.import_module(full)
    from .codegen.numba_cache import install  # noqa: PLC0415 - numba loads lazily
    install(module)
    return module


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
