"""The numba backend: everything numba in one folder.

* ``emitters.py``: how numba spells each op (the table the backend's ``supports``
  answers from), layout steps and GEMM kernels; literals and conversions;
* ``kernels.py``: the source of one kernel (elementwise, GEMM + epilogue, reduction);
* ``driver.py``: the module header and the ``forward`` driver;
* ``loader.py``: the compile cache folder (write, verify, execute generated modules);
* ``cache.py``: numba's on-disk cache with a checksum on every file;
* ``backend.py``: :class:`NumbaBackend` and the compiled program's ``call``.

The hand-written kernels generated code calls are in the kernel library (``kernels/`` in
the repository, ``fusionnet/kernels`` in a wheel), loaded by ``fusionnet._kernels``.
Importing this package does not import numba; compiling does.
"""
from __future__ import annotations

from .backend import NumbaBackend, NumbaCompiled
from .emitters import literal
from .kernels import PARALLEL_MIN_ELEMENTS
from .loader import cache_dir

__all__ = ["NumbaBackend", "NumbaCompiled", "PARALLEL_MIN_ELEMENTS", "cache_dir", "literal"]
