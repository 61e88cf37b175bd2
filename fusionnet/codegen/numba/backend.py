"""The numba backend: which ops it generates (its tables) and how a Program becomes a
compiled ``forward``."""
from __future__ import annotations

import threading

from ..backend import Backend, CompiledProgram
from ..lower import Program, Unsupported, walk_steps
from .emitters import ELEMENTWISE, GEMM, GEMM_RANKS, LAYOUT, UNSUPPORTED, matmul_ranks_supported
from .table import pack, slots

__all__ = ["NumbaBackend", "NumbaCompiled"]

_MAIN_THREAD = threading.main_thread().ident


class NumbaCompiled(CompiledProgram):
    """A compiled numba module; ``compile_stats`` reads numba's cache counters."""

    stats_label = "numba cache"
    table: tuple = ()  # the tail arrays passed as one address table (table.py)

    def pack(self, tail) -> tuple | None:
        """The tail with the table's arrays replaced by their address table."""
        return pack(self.table, tail)

    def call(self, arrays, tail):
        """Run the driver. A driver with parallel loops takes a trailing flag: only the
        main thread may launch them (numba's default thread pool must not be entered from
        two threads at once)."""
        if self.parallel:
            return self.fn(*arrays, *tail, threading.get_ident() == _MAIN_THREAD)
        return self.fn(*arrays, *tail)

    def compile_stats(self) -> dict:
        """numba's cache hits and misses of the driver."""
        stats = self.fn.stats
        return {"cache_hits": sum(stats.cache_hits.values()),
                "cache_misses": sum(stats.cache_misses.values())}


class NumbaBackend(Backend):
    """CPU code generation with numba (loaded only when something is compiled)."""

    name = "numba"
    elementwise = ELEMENTWISE
    layout = LAYOUT
    gemm = GEMM
    unsupported = UNSUPPORTED
    joins = True  # cat, stack: slice assignments in the driver (driver.py, _join)
    indexes = True  # basic getitem and its gradient: indexing in the driver (_index)
    finds_indices = True  # argmax, argmin: NumPy's, which numba compiles (_arg_index)

    def check(self, program: Program) -> None:
        """The base checks (ops and layout steps), then the ranks each product kernel is
        generated for (``GEMM_RANKS``: 4-D conv2d and max_pool2d; matmul: 2-D, and the
        ranks ``matmul_ranks_supported`` allows)."""
        super().check(program)
        for step in walk_steps(program.steps):
            if getattr(step, "kind", None) != "gemm":
                continue
            (product,) = [op for op in step.ops if op in GEMM]
            ranks = GEMM_RANKS[product]
            if product == "matmul" and matmul_ranks_supported(step.gemm["ranks"]):
                continue
            if step.gemm["ranks"] != ranks:
                raise Unsupported(f"a {product} of ranks {step.gemm['ranks']} (output, "
                                  "operands) is not generated")

    def compile(self, program: Program) -> CompiledProgram:
        """Render ``program`` as a module, load it from the compile cache folder (writing
        it there first) and return its ``forward``; numba compiles on the first call."""
        from .driver import render  # noqa: PLC0415 - render imports numba
        from .kernels import uses_parallel  # noqa: PLC0415
        from .loader import load  # noqa: PLC0415

        self.check(program)
        table = slots(program)
        source, kernel_sources = render(program, table)
        module = load(source)
        compiled = NumbaCompiled(module.forward, program, source, kernel_sources,
                                 module.__file__, parallel=uses_parallel(program))
        compiled.table = table
        return compiled
