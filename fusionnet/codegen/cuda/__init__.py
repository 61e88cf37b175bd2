"""The CUDA backend: its spellings (``spellings.py``) exist, its code generator does not.

:class:`CudaBackend` answers ``supports`` from its tables like every backend, so passes
and tests can ask it; ``compile`` raises :class:`~fusionnet.codegen.lower.Unsupported`, and
``fuse`` runs CUDA inputs eagerly (with a warning). Nothing here imports CuPy.
"""
from __future__ import annotations

from ..backend import Backend, CompiledProgram
from ..lower import Program, Unsupported
from .spellings import ELEMENTWISE, LAYOUT, UNSUPPORTED

__all__ = ["CudaBackend"]


class CudaBackend(Backend):
    """CUDA code generation (**planned**): the spelling tables, no compiler yet."""

    name = "cuda"
    elementwise = ELEMENTWISE
    layout = LAYOUT
    gemm: dict = {}
    unsupported = UNSUPPORTED

    def compile(self, program: Program) -> CompiledProgram:
        """Not built yet: always raises :class:`Unsupported`."""
        raise Unsupported("the CUDA code generator is not built yet")
