"""The :class:`Builder` that op generators write a block into, and the generator registry.

A generator is a function ``fn(builder) -> bool`` registered with :func:`generator`: it
picks operands from the builder's pool of live values, emits one or a few source lines
(into ``forward``, and into ``__init__`` for layers, parameters and constants) and adds
the values it made to the pool. It returns False when nothing in the pool fits, and the
block generator then tries another one. Each registration names the op-table rows the
generator's code reaches (``ops``), so a test can check that every row is exercised.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .model import Bat, Shape, Val, at_batch, is_float, is_int, numel_at

__all__ = ["Builder", "Generator", "GENERATORS", "generator", "DTYPE_SRC", "NOT_REACHABLE"]

#: How each dtype is spelled in generated source.
DTYPE_SRC = {"float32": "torch.float32", "float64": "torch.float64", "int32": "torch.int32",
             "int64": "torch.int64", "bool": "torch.bool"}

#: Op-table rows no generator can reach on a CPU-only machine, and why. The coverage
#: test accepts a row only if a generator names it or it is listed here.
NOT_REACHABLE = {
    "to_device": "a CPU-only run has one device: .cpu() / .to('cpu') / .to(x.device) on a "
                 "CPU tensor apply no op (the `device_noop` generator writes them anyway)",
    "detach": "a graph-only row: the tracer records detach() / .data of a traced value as "
              "it, eager detach() dispatches nothing (the `detach` generator writes both)",
}

#: Largest number of elements a value may have at the largest batch size of a case.
MAX_ELEMENTS = 1_100_000


@dataclass(frozen=True)
class Generator:
    """One way of adding code to a block.

    Attributes:
        name: shown in a case's header comment (which generators built it).
        ops: the op-table rows its code dispatches (directly, or in its backward).
        weight: relative probability of being tried.
        fusable: False when its code can never be compiled (the op has no emitter, such
            as indexing or concatenation), so "fusable-only" cases skip it.
        fn: ``fn(builder) -> bool``.
    """

    name: str
    ops: tuple
    weight: float
    fusable: bool
    fn: Callable


GENERATORS: list[Generator] = []


def generator(name: str, ops: tuple, weight: float = 1.0, fusable: bool = True):
    """Register ``fn(builder) -> bool`` as a generator (a decorator)."""
    def register(fn):
        GENERATORS.append(Generator(name, tuple(ops), weight, fusable, fn))
        return fn
    return register


class Builder:
    """A block under construction: ``__init__`` lines, ``forward`` lines, live values."""

    def __init__(self, rng: random.Random, fdt: str, batches: tuple, fusable_only: bool):
        self.rng = rng
        self.fdt = fdt                     # the float dtype of layers and parameters
        self.batches = tuple(batches)
        self.fusable_only = fusable_only
        self.pool: list[Val] = []
        self.init: list[str] = []
        self.body: list[str] = []
        self.indent = 0
        self.no_grad = False               # inside `with torch.no_grad():`
        self.random_ops = False            # forward draws random numbers (dropout)
        self.counts: dict[str, int] = {}
        self.used: list[str] = []          # generator names, in order

    # ---- names and lines --------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        """A new name ``prefix<k>``."""
        k = self.counts.get(prefix, 0)
        self.counts[prefix] = k + 1
        return f"{prefix}{k}"

    def emit(self, text: str) -> None:
        """Append a line to forward at the current indentation."""
        self.body.append("    " * self.indent + text)

    def attr(self, prefix: str, expr: str) -> str:
        """``self.<prefix>k = expr`` in ``__init__``; returns ``self.<prefix>k``."""
        name = self.fresh(prefix)
        self.init.append(f"self.{name} = {expr}")
        return f"self.{name}"

    def buffer(self, prefix: str, expr: str) -> str:
        """A registered buffer; returns ``self.<name>``."""
        name = self.fresh(prefix)
        self.init.append(f'self.register_buffer("{name}", {expr})')
        return f"self.{name}"

    def new(self, expr: str, shape: Shape, dtype: str, grad: bool = False, **flags) -> Val:
        """``h<k> = expr`` as a new pool value."""
        v = Val(self.fresh("h"), tuple(shape), dtype, grad=grad and not self.no_grad
                and is_float(dtype), **flags)
        self.emit(f"{v.name} = {expr}")
        self.add(v)
        return v

    def add(self, v: Val) -> Val:
        """Put a value (whose code is already written) into the pool."""
        self.pool.append(v)
        return v

    # ---- choosing ---------------------------------------------------------------------

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return self.rng.random() < p

    def choice(self, seq):
        """A uniformly random element."""
        return seq[self.rng.randrange(len(seq))]

    def pick(self, pred=lambda v: True, recent: float = 0.6) -> Val | None:
        """A pool value satisfying ``pred``, favouring the most recent ones (so blocks
        grow chains, not only fans of the inputs)."""
        cands = [v for v in self.pool if not v.ragged and pred(v)]
        if not cands:
            return None
        weights = [recent ** (len(cands) - 1 - i) + 0.05 for i in range(len(cands))]
        return self.rng.choices(cands, weights)[0]

    def pick_float(self, **kw) -> Val | None:
        """A float value."""
        return self.pick(lambda v: is_float(v.dtype), **kw)

    # ---- sizes ------------------------------------------------------------------------

    @property
    def biggest_batch(self) -> int:
        """The largest leading size the block will see (the engine's probes included)."""
        return max(self.batches + (113,))

    def fits(self, shape: Shape) -> bool:
        """Whether a value of ``shape`` stays small enough at every batch size."""
        return numel_at(shape, self.biggest_batch) <= MAX_ELEMENTS and all(
            d >= 0 for d in at_batch(shape, 1))

    def static_dims(self, v: Val) -> list[int]:
        """Indices of ``v``'s static dimensions."""
        return [i for i, d in enumerate(v.shape) if not isinstance(d, Bat)]

    # ---- literals ---------------------------------------------------------------------

    def float_literal(self) -> str:
        """A Python float literal (sometimes zero, negative zero, tiny, huge or inf)."""
        r = self.rng.random()
        if r < 0.03:
            return self.choice(['float("inf")', '-float("inf")', "-0.0", "1e30", "1e-30"])
        if r < 0.08:
            return "0.0"
        return repr(self.choice([0.5, -0.5, 2.0, -1.5, 0.1, 3.0, 1.25, -2.0, 0.01, 10.0]))

    def int_literal(self, low: int = -3, high: int = 7) -> str:
        """A Python int literal."""
        return str(self.rng.randint(low, high))

    def scalar_for(self, v: Val) -> tuple[str, str]:
        """(literal, kind) of a scalar operand suited to ``v``'s dtype."""
        if is_float(v.dtype) or (v.dtype != "bool" and self.chance(0.3)):
            return self.float_literal(), "float"
        return self.int_literal(), "int"

    def values_literal(self, shape: tuple, dtype: str) -> str:
        """Nested list literal of random values of a static ``shape``."""
        def draw():
            if dtype == "bool":
                return self.choice(["True", "False"])
            if is_int(dtype):
                return str(self.rng.randint(-4, 6))
            return repr(round(self.rng.gauss(0, 1.5), 3))

        def nest(dims):
            if not dims:
                return draw()
            return "[" + ", ".join(nest(dims[1:]) for _ in range(dims[0])) + "]"
        return nest(list(shape))

    def tensor_literal(self, shape: tuple, dtype: str) -> str:
        """``torch.tensor(<values>[, dtype=...])`` of a static ``shape``."""
        body = self.values_literal(shape, dtype)
        if dtype in ("float32", "int64", "bool"):
            if dtype == "float32" and "." not in body and "e" not in body:
                return f"torch.tensor({body}, dtype=torch.float32)"
            return f"torch.tensor({body})"
        return f"torch.tensor({body}, dtype={DTYPE_SRC[dtype]})"

    def dtype_kw(self, dtype: str | None = None) -> str:
        """``, dtype=torch.float64`` where the dtype is not the default float32."""
        dtype = dtype or self.fdt
        return "" if dtype == "float32" else f", dtype={DTYPE_SRC[dtype]}"
