"""The global random number generators behind ``rand``, ``randn`` and ``nn.init``.

One NumPy ``Generator`` for CPU tensors; CuPy's global generator for CUDA
tensors. :func:`manual_seed` seeds both, so a seeded program is repeatable.
"""
from __future__ import annotations

import numpy as np

from .device import cupy_or_none

__all__ = ["manual_seed", "seed", "initial_seed", "generator"]

_seed = 0
_rng = np.random.default_rng()


def manual_seed(value: int):
    """Seed every generator fusionnet uses (CPU and, if present, CUDA)."""
    global _rng, _seed
    _seed = int(value)
    _rng = np.random.default_rng(_seed)
    cp = cupy_or_none()
    if cp is not None:  # pragma: no cover - GPU only
        cp.random.seed(_seed)
    return _seed


def seed() -> int:
    """Seed the generators from OS entropy; returns the seed used."""
    return manual_seed(int(np.random.SeedSequence().entropy % (2**63)))


def initial_seed() -> int:
    """The last seed given to :func:`manual_seed`."""
    return _seed


def generator(xp):
    """The generator for array module ``xp``: an object with ``random``,
    ``standard_normal`` and ``integers`` methods."""
    from .dispatch import note_random  # noqa: PLC0415 - dispatch imports tensor modules

    note_random("random numbers drawn")
    if xp is np:
        return _rng
    return _CupyGenerator(xp)


class _CupyGenerator:  # pragma: no cover - GPU only
    """The few Generator methods fusionnet uses, on CuPy's global generator."""

    def __init__(self, cp):
        self.cp = cp

    def random(self, size, dtype=np.float64):
        return self.cp.random.random(size, dtype=dtype)

    def standard_normal(self, size, dtype=np.float64):
        return self.cp.random.standard_normal(size, dtype=dtype)

    def integers(self, low, high, size, dtype=np.int64):
        return self.cp.random.randint(low, high, size, dtype=dtype)
