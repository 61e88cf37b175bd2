"""Random numbers: one counter-based stream behind ``rand``, ``randn``, ``nn.init``,
dropout and compiled code alike.

A :class:`Generator` is a 64-bit seed and a 64-bit counter. Draw ``n`` numbers and you
get ``bits(seed, counter + i)`` for ``i < n``, and the counter moves on by ``n``
(``randn`` uses two counters per value). ``bits`` is SplitMix64's output function on
``seed_key + (counter + 1) * golden``: every number depends only on the seed and its
position, not on how the stream was consumed before, so eager NumPy, CuPy and
generated kernels (which reserve a range of counters per call and compute the same
function) give the same values for the same seed and the same sequence of draws.

* uniform float32: the top 24 bits times 2**-24, in [0, 1); float64: the top 53 bits;
* normal: Box-Muller, ``sqrt(-2 ln(1 - u1)) * cos(2 pi u2)`` with ``u1``, ``u2`` the
  float64 uniforms of counters ``2i`` and ``2i + 1``, then cast;
* integers in ``[low, high)``: ``low + floor(u53 * (high - low))``.

``manual_seed(s)`` resets the default generator to seed ``s``, counter 0.
"""
from __future__ import annotations

import numpy as np

__all__ = ["manual_seed", "seed", "initial_seed", "generator", "draw", "Generator",
           "default_generator", "uniform_bits", "GOLDEN", "MIX1", "MIX2"]

#: SplitMix64's constants (Steele, Lea and Flood, 2014).
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
_U30, _U27, _U31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix(z):
    """SplitMix64's finaliser on uint64 values (NumPy or CuPy arrays, wrapping)."""
    z = (z ^ (z >> _U30)) * MIX1
    z = (z ^ (z >> _U27)) * MIX2
    return z ^ (z >> _U31)


def seed_key(seed: int) -> np.uint64:
    """The 64-bit key a seed stands for (the seed itself, mixed once)."""
    with np.errstate(over="ignore"):
        return _mix(np.uint64(seed % 2**64))


def uniform_bits(xp, key, counter: int, n: int):
    """``n`` 64-bit random words for positions ``counter .. counter + n - 1``."""
    with np.errstate(over="ignore"):
        idx = xp.arange(n, dtype=np.uint64) + np.uint64(counter % 2**64) + np.uint64(1)
        return _mix(np.uint64(key) + idx * GOLDEN)


class Generator:
    """A counter-based random stream (``torch.Generator``'s role): ``manual_seed``,
    ``initial_seed``, ``get_state``/``set_state``, and the draws fusionnet makes."""

    def __init__(self, device="cpu"):
        self.device = device
        self._seed = 0
        self.key = seed_key(0)
        self.counter = 0

    def manual_seed(self, value: int) -> "Generator":
        """Restart the stream at seed ``value``, counter 0."""
        self._seed = int(value)
        self.key = seed_key(self._seed)
        self.counter = 0
        return self

    def seed(self) -> int:
        """Reseed from OS entropy; returns the seed."""
        value = int(np.random.SeedSequence().entropy % (2**63))
        self.manual_seed(value)
        return value

    def initial_seed(self) -> int:
        """The seed the stream started from."""
        return self._seed

    def get_state(self):
        """``(seed, counter)``: everything needed to replay the stream from here."""
        return (self._seed, self.counter)

    def set_state(self, state) -> None:
        """Go back to a state from :meth:`get_state`."""
        self.manual_seed(state[0])
        self.counter = int(state[1])

    def reserve(self, n: int) -> int:
        """Take ``n`` positions of the stream; returns the first (compiled code's draws)."""
        start = self.counter
        self.counter = (self.counter + int(n)) % 2**64
        return start

    # ---- draws (array module ``xp``: NumPy or CuPy) --------------------------------------

    def _bits(self, xp, n: int):
        return uniform_bits(xp, self.key, self.reserve(n), n)

    def random(self, shape, dtype=np.float64, xp=np):
        """Uniform [0, 1) samples of ``dtype`` (float32: 24 bits, float64: 53 bits)."""
        n = int(np.prod(shape, dtype=np.int64))
        bits = self._bits(xp, n)
        if np.dtype(dtype) == np.float32:
            out = (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
        else:
            out = (bits >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
        return out.reshape(shape)

    def standard_normal(self, shape, dtype=np.float64, xp=np):
        """Standard normal samples (Box-Muller on pairs of float64 uniforms)."""
        n = int(np.prod(shape, dtype=np.int64))
        bits = self._bits(xp, 2 * n)
        u = (bits >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
        u1, u2 = u[0::2], u[1::2]
        z = xp.sqrt(-2.0 * xp.log1p(-u1)) * xp.cos(2.0 * np.pi * u2)
        return z.astype(dtype).reshape(shape)

    def integers(self, low: int, high: int, shape, dtype=np.int64, xp=np):
        """Integers in ``[low, high)``."""
        n = int(np.prod(shape, dtype=np.int64))
        u = (self._bits(xp, n) >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
        out = low + xp.floor(u * (high - low)).astype(np.int64)
        return xp.minimum(out, high - 1).astype(dtype).reshape(shape)


#: The stream every draw without an explicit ``generator=`` uses.
default_generator = Generator()


def manual_seed(value: int) -> Generator:
    """Seed the default stream (CPU and CUDA draws share it); returns the generator."""
    return default_generator.manual_seed(value)


def seed() -> int:
    """Seed the default stream from OS entropy; returns the seed used."""
    return default_generator.seed()


def initial_seed() -> int:
    """The last seed given to :func:`manual_seed`."""
    return default_generator.initial_seed()


class _Draws:
    """What ``generator(xp)`` returns: a generator's draws on array module ``xp``."""

    def __init__(self, gen: Generator, xp):
        self.gen, self.xp = gen, xp

    def random(self, size, dtype=np.float64):
        return self.gen.random(size, dtype, self.xp)

    def standard_normal(self, size, dtype=np.float64):
        return self.gen.standard_normal(size, dtype, self.xp)

    def integers(self, low, high, size, dtype=np.int64):
        return self.gen.integers(low, high, size, dtype, self.xp)


def generator(xp, gen: Generator | None = None, traced: bool = False):
    """The draws of ``gen`` (default: the default stream) on array module ``xp``; a tracer
    is told first (its graph must not freeze the values).

    ``traced``: the caller makes a tensor of each array as it is (``rand``, ``randn``), so
    a tracer may record the draw as a random *input* of its graph, drawn from ``gen`` at
    every call of the compiled code (``tracer.random_draws``), instead of stopping."""
    from .dispatch import note_random, trace_hook  # noqa: PLC0415 - dispatch imports tensors

    hook = trace_hook()
    if traced and hook is not None and hasattr(hook, "random_draws"):
        return hook.random_draws(gen or default_generator, xp)
    note_random("random numbers drawn")
    return _Draws(gen or default_generator, xp)


def draw(gen: Generator, kind: str, shape, dtype):
    """One draw of a compiled graph's random input: ``kind`` is ``"uniform"`` (``rand``)
    or ``"normal"`` (``randn``); the same numbers eager's call would give at this point
    of ``gen``'s stream."""
    if kind == "uniform":
        return gen.random(tuple(shape), dtype)
    return gen.standard_normal(tuple(shape), dtype)
