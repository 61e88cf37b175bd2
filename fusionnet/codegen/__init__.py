"""Code generation: optimized Graph -> backend-neutral Program -> backend source -> callable.

``lower`` (in ``lower.py``) is shared by every backend; each backend is a folder
(``numba/``; ``cuda/``, whose code generator is planned) that implements :class:`Backend`:
its tables say how it spells each op, and ``supports(op)`` answers from them and the op
rows' facts. Importing this package loads neither numba nor CuPy.
"""
from __future__ import annotations

from .backend import BACKENDS, Backend, CompiledProgram, default_backend, get_backend
from .lower import Program, Unsupported, lower

__all__ = ["Backend", "BACKENDS", "CompiledProgram", "default_backend", "get_backend",
           "Program", "Unsupported", "lower"]
