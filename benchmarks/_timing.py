"""Timing helper shared by the micro-benchmarks in this folder."""
from __future__ import annotations

import statistics
import time

__all__ = ["median_us"]


def median_us(fn, reps: int = 2000, rounds: int = 7) -> float:
    """Median over ``rounds`` of the mean time of ``reps`` calls of ``fn``, in microseconds."""
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t) / reps * 1e6)
    return statistics.median(times)
