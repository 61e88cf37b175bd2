"""Timing: warm up, size an inner loop so each sample is long enough, take N samples."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

__all__ = ["Timing", "measure"]


@dataclass
class Timing:
    """Per-call times in microseconds over ``samples`` samples of ``inner`` calls each."""

    median_us: float
    q1_us: float
    q3_us: float
    min_us: float
    max_us: float
    samples: int
    inner: int

    @property
    def iqr_us(self) -> float:
        """Interquartile range of the per-call sample times."""
        return self.q3_us - self.q1_us


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def measure(call, arg, repeats: int = 7, min_sample_s: float = 0.02, warmup: int = 3,
            max_inner: int = 1 << 20) -> Timing:
    """Time ``call(arg)``: ``warmup`` calls, then grow the inner loop until one sample takes
    at least ``min_sample_s`` (so timer resolution and loop overhead stay negligible), then
    ``repeats`` samples. Slow calls (longer than a sample) get one call per sample."""
    for _ in range(warmup):
        call(arg)
    inner = 1
    while True:
        start = time.perf_counter()
        for _ in range(inner):
            call(arg)
        took = time.perf_counter() - start
        if took >= min_sample_s or inner >= max_inner:
            break
        # Aim a little past the target from the rate measured so far; at least double.
        inner = min(max_inner, max(inner * 2, int(inner * 1.2 * min_sample_s / max(took, 1e-9))))
    per_call = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        for _ in range(inner):
            call(arg)
        per_call.append((time.perf_counter() - start) / inner * 1e6)
    q1, q3 = _quartiles(per_call)
    return Timing(statistics.median(per_call), q1, q3, min(per_call), max(per_call),
                  len(per_call), inner)
