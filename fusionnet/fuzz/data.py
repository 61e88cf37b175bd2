"""Input data for a case: NumPy arrays from the case's input spec, a batch size and a seed.

A spec is a dict ``{"shape": ["B", 4], "dtype": "float32", "regime": "normal",
"requires_grad": True}``; ``"B"`` is the batch size. Regimes pick the values:

- floats: ``normal`` (standard normal), ``positive`` (|normal| + 0.1), ``tiny``
  (around 1e-30 for float32, with subnormals), ``huge`` (around 1e18..1e30: products
  overflow, sums do not), ``special`` (normal with NaN, +inf, -inf, 0.0 and -0.0 mixed
  in), ``mixed`` (magnitudes from 1e-10 to 1e10);
- integers: ``small`` (-5..5), ``index:N`` (0..N-1), ``wide`` (+-1e6), ``limits``
  (within 10 of the int64 limits, and a few zeros);
- bools: ``random``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["make_arrays", "FLOAT_REGIMES", "INT_REGIMES"]

FLOAT_REGIMES = ("normal", "positive", "tiny", "huge", "special", "mixed")
INT_REGIMES = ("small", "index", "wide", "limits")

_I64 = np.iinfo(np.int64)


def concrete_shape(spec: dict, batch: int) -> tuple:
    """The spec's shape with ``"B"`` replaced by ``batch``."""
    return tuple(batch if d == "B" else int(d) for d in spec["shape"])


def _floats(rng: np.random.Generator, regime: str, shape: tuple, dtype: str) -> np.ndarray:
    base = rng.standard_normal(shape)
    if regime == "positive":
        base = np.abs(base) + 0.1
    elif regime == "tiny":
        scale = 1e-38 if dtype == "float32" else 1e-300
        base = base * scale * rng.choice([1.0, 10.0, 1e-3], size=shape)
    elif regime == "huge":
        base = base * 10.0 ** rng.uniform(18, 30, size=shape)
    elif regime == "mixed":
        base = base * 10.0 ** rng.uniform(-10, 10, size=shape)
    elif regime == "special":
        specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0])
        mask = rng.random(shape) < 0.25
        base = np.where(mask, rng.choice(specials, size=shape), base)
    return base.astype(dtype)


def _ints(rng: np.random.Generator, regime: str, shape: tuple, dtype: str) -> np.ndarray:
    if regime.startswith("index"):
        bound = int(regime.partition(":")[2] or 1)
        return rng.integers(0, bound, size=shape).astype(dtype)
    if regime == "wide":
        return rng.integers(-10**6, 10**6, size=shape).astype(dtype)
    if regime == "limits":
        info = np.iinfo(dtype)
        near = rng.integers(0, 10, size=shape)
        pick = rng.random(shape)
        out = np.where(pick < 0.45, info.max - near, np.where(pick < 0.9, info.min + near, 0))
        return out.astype(dtype)
    return rng.integers(-5, 6, size=shape).astype(dtype)


def make_arrays(specs: list, batch: int, seed: int, call: int = 0) -> list[np.ndarray]:
    """One array per spec, deterministic in (seed, batch, call)."""
    out = []
    for i, spec in enumerate(specs):
        rng = np.random.default_rng([seed & 0xFFFFFFFF, batch, call, i])
        shape, dtype, regime = concrete_shape(spec, batch), spec["dtype"], spec["regime"]
        if dtype in ("float32", "float64"):
            out.append(_floats(rng, regime, shape, dtype))
        elif dtype == "bool":
            out.append(rng.random(shape) < 0.5)
        else:
            out.append(_ints(rng, regime, shape, dtype))
    return out
