"""Code generation: optimized Graph -> backend-neutral Program -> backend source -> callable.

``lower`` (in ``lower.py``) is shared by every backend; each backend module
(``numba_backend.py``; a CUDA backend later) implements :class:`Backend`
and differs from the others only in how it renders a Program.
"""
from __future__ import annotations

from .backend import Backend, CompiledProgram, get_backend
from .lower import Program, Unsupported, lower

__all__ = ["Backend", "CompiledProgram", "get_backend", "Program", "Unsupported", "lower"]
