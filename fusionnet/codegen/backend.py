"""The interface every code generator implements, and the registry of backends.

A backend owns how ops are *spelled* (its tables); the op rows own what they mean. Passes
and the runtime ask :meth:`Backend.supports` instead of reading any spelling, and a
backend answers from its tables and the rows' facts:

* an elementwise op is supported when the backend spells it;
* a reduction when its row says how it accumulates (``Op.reduction``) and the backend
  spells the elementwise op it combines with: a new reduction needs no spelling;
* a layout op when its row decomposes into layout steps (``Op.layout``) and the backend
  spells every step: a new view op needs no spelling either;
* a matmul when the backend names a GEMM kernel for it.

Whatever a backend does not support is *stated*, with the reason, in its ``unsupported``
table (``tests/test_backends.py`` walks the op table and fails on an op that is neither).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from ..ops import LAYOUT_STEPS, Kind, Op, get_op
from .lower import Program, Unsupported

__all__ = ["Backend", "CompiledProgram", "CompileCacheWarning", "BACKENDS", "get_backend",
           "default_backend"]


class CompileCacheWarning(UserWarning):
    """The compile cache could not be used as is: a folder that cannot be written, or a
    damaged or edited cache file that was discarded and rebuilt. Results are unaffected."""


@dataclass
class CompiledProgram:
    """A compiled forward: ``call(arrays, tail)`` runs it on the input arrays and the tail
    (parameter arrays, then constants) and returns the output array(s)."""

    fn: Callable
    program: Program
    source: str
    kernel_sources: dict = field(default_factory=dict)  # kernel name -> its source
    path: str = ""
    parallel: bool = False  # fn takes a trailing flag: may it launch threads now?
    stats_label = "compile stats"  # what explain calls compile_stats()

    def call(self, arrays, tail):
        """Run the compiled forward on a tail from :meth:`pack`. Where ``parallel`` is
        False this is exactly ``fn(*arrays, *tail)``, which a hot path may call itself."""
        return self.fn(*arrays, *tail)

    def pack(self, tail) -> tuple | None:
        """The tail (parameter arrays, then constants) as ``fn`` takes it; None when an
        array no longer fits what the code was compiled for (compile again)."""
        return tuple(tail)

    def compile_stats(self) -> dict:
        """Compilation counters from the backend (cache hits and misses)."""
        return {}


class Backend:
    """Renders a :class:`Program` and compiles it; says which ops it can generate.

    Subclasses fill in the tables (op name or layout step -> spelling) and ``compile``."""

    name = "abstract"
    #: elementwise op name -> spelling (a format string or a function; backend-specific)
    elementwise: dict = {}
    #: layout step (:data:`fusionnet.ops.LAYOUT_STEPS`) -> spelling
    layout: dict = {}
    #: matmul-kind op name -> the GEMM kernel the backend calls for it
    gemm: dict = {}
    #: op name -> why this backend runs it eagerly (stated, so never silently missing)
    unsupported: dict = {}
    #: whether the backend copies arrays side by side into a new one (``Op.joins`` rows,
    #: lowered to :class:`~fusionnet.codegen.lower.Join` steps)
    joins: bool = False
    #: whether the backend generates basic indexing (``Op.selects``/``Op.places`` rows,
    #: lowered to :class:`~fusionnet.codegen.lower.Index` steps)
    indexes: bool = False
    #: whether the backend finds the index of an extreme (``Op.index_of`` rows, lowered
    #: to :class:`~fusionnet.codegen.lower.ArgIndex` steps)
    finds_indices: bool = False

    def why_unsupported(self, op: Op) -> str:
        """Why this backend cannot generate ``op`` (a row), or ``""`` when it can."""
        if op.name in self.unsupported:
            return self.unsupported[op.name]
        if op.decompose is not None:
            return ""  # a trace records the ops it is made of, never the row itself
        if op.joins is not None:
            return "" if self.joins else f"{self.name} does not join arrays"
        if op.index_of is not None:
            return "" if self.finds_indices else \
                f"{self.name} does not find indices ({op.name} returns an index)"
        if op.selects is not None or op.places is not None or op.assigns is not None:
            return "" if self.indexes else f"{self.name} does not index arrays"
        if op.kind is Kind.ELEMENTWISE:
            return "" if op.name in self.elementwise else \
                f"{self.name} has no spelling for elementwise op {op.name!r}"
        if op.kind is Kind.REDUCTION:
            if op.reduction is None:
                return (f"reduction {op.name!r} does not say how it accumulates "
                        "(Op.reduction)")
            why = self.why_unsupported(get_op(op.reduction.combine))
            return f"reduction {op.name!r} combines with {why}" if why else ""
        if op.kind is Kind.MATMUL:
            return "" if op.name in self.gemm else f"{self.name} has no GEMM kernel for {op.name!r}"
        if op.layout is not None:
            missing = [s for s in LAYOUT_STEPS if s not in self.layout]
            return f"{self.name} does not spell the layout steps {missing}" if missing else ""
        return f"{self.name} has no code for {op.kind.value} op {op.name!r}"

    def supports(self, op: Op) -> bool:
        """Whether this backend can generate ``op`` (a row of the op table)."""
        return not self.why_unsupported(op)

    def check(self, program: Program) -> None:
        """Raise :class:`Unsupported`, with the reason, for any op or layout step in
        ``program`` this backend does not generate."""
        from .lower import ArgIndex, Branch, Index, Join, Loop, View, walk_steps  # noqa: PLC0415

        for step in walk_steps(program.steps):
            if isinstance(step, (Loop, Branch)):
                continue
            if isinstance(step, Join):
                if not self.joins:
                    raise Unsupported(f"{self.name} does not join arrays (cat, stack)")
                continue
            if isinstance(step, Index):
                if not self.indexes:
                    raise Unsupported(f"{self.name} does not index arrays")
                continue
            if isinstance(step, ArgIndex):
                if not self.finds_indices:
                    raise Unsupported(f"{self.name} does not find indices (argmax, argmin)")
                continue
            if isinstance(step, View):
                if step.step not in self.layout:
                    raise Unsupported(f"{self.name} does not spell the layout step "
                                      f"{step.step!r}")
                continue
            for name in dict.fromkeys(step.ops):
                why = self.why_unsupported(get_op(name))
                if why:
                    raise Unsupported(f"kernel {step.name} ({' + '.join(step.ops)}): {why}")

    def compile(self, program: Program) -> CompiledProgram:
        """Generate source for ``program`` and compile it."""
        raise Unsupported(f"backend {self.name!r} cannot compile")


#: backend name -> "module:class", imported on first use (numba loads only to compile).
_REGISTRY = {"numba": "fusionnet.codegen.numba:NumbaBackend",
             "cuda": "fusionnet.codegen.cuda:CudaBackend"}
#: Every backend's name.
BACKENDS = tuple(_REGISTRY)
_instances: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (one of :data:`BACKENDS`)."""
    backend = _instances.get(name)
    if backend is None:
        if name not in _REGISTRY:
            raise Unsupported(f"no code generator for backend {name!r}; known: {BACKENDS}")
        module, cls = _REGISTRY[name].split(":")
        backend = _instances[name] = getattr(importlib.import_module(module), cls)()
    return backend


def default_backend() -> Backend:
    """The backend fusion plans for and ``fuse`` compiles with (numba, on the CPU)."""
    return get_backend("numba")
