"""The interface every code generator implements, and the registry of backends."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .lower import Program, Unsupported

__all__ = ["Backend", "CompiledProgram", "CompileCacheWarning", "get_backend"]


class CompileCacheWarning(UserWarning):
    """The compile cache could not be used as is: a folder that cannot be written, or a
    damaged or edited cache file that was discarded and rebuilt. Results are unaffected."""


@dataclass
class CompiledProgram:
    """A compiled forward: ``fn(*inputs, *params, *constants)`` returns the output array(s)."""

    fn: Callable
    program: Program
    source: str
    kernel_sources: dict = field(default_factory=dict)  # kernel name -> its source
    path: str = ""
    parallel: bool = False  # fn takes a trailing ``par`` flag: may it launch threads?

    def compile_stats(self) -> dict:
        """Compilation counters from the backend (cache hits and misses)."""
        return {}


class Backend:
    """Renders a :class:`Program` and compiles it. Subclasses fill in the emitter."""

    name = "abstract"

    def available(self) -> bool:
        """Whether this backend can run here."""
        return False

    def compile(self, program: Program) -> CompiledProgram:
        """Generate source for ``program`` and compile it."""
        raise Unsupported(f"backend {self.name!r} cannot compile")


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (``"numba"``; ``"cuda"`` is not built yet)."""
    if name == "numba":
        from .numba_backend import NumbaBackend  # noqa: PLC0415 - numba loads lazily
        return NumbaBackend()
    raise Unsupported(f"no code generator for backend {name!r} yet")
