"""The CUDA backend: a lowered Program as CUDA C kernels run from CuPy.

* ``spellings.py``: how CUDA C spells each op (the tables ``supports`` answers from),
  literals and conversions;
* ``kernels.py``: the CUDA C of one kernel (elementwise, reduction, tiled GEMM with its
  epilogue, the epilogue after cuBLAS);
* ``loops.py``: a ``while`` region as one device-side kernel;
* ``module.py``: the whole module (one NVRTC compile per Program);
* ``runner.py``: the compiled program (``cupy.RawModule``; one plan per placement);
* ``plan.py``: a plan's preallocated buffers, views, bound launches (``cupy.matmul`` for
  big GEMMs) and CUDA graph; ``hostflow.py``: host loops and branches (read-backs).

``fuse`` compiles with this backend when a block's inputs and state are on a CUDA device.
Rendering needs neither CuPy nor a GPU (the tests compile the source with ``nvcc`` and
run it on the CPU through an emulation); running needs both.
"""
from __future__ import annotations

from ..backend import Backend, CompiledProgram
from ..lower import Program
from .spellings import ELEMENTWISE, GEMM, LAYOUT, UNSUPPORTED

__all__ = ["CudaBackend"]


class CudaBackend(Backend):
    """CUDA code generation: CUDA C per fused group, launched by a CuPy host runner."""

    name = "cuda"
    elementwise = ELEMENTWISE
    layout = LAYOUT
    gemm = GEMM
    unsupported = UNSUPPORTED

    def compile(self, program: Program, xp=None) -> CompiledProgram:
        """Render ``program`` as one CUDA C module; it is compiled (NVRTC) on the first
        call. ``xp``: the array module to run with (default CuPy, found on first call)."""
        from .module import render  # noqa: PLC0415
        from .runner import CudaCompiled  # noqa: PLC0415

        self.check(program)
        source, kernels = render(program)
        return CudaCompiled(program, source, kernels, xp=xp)
