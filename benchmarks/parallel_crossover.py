"""Measure where a parallel (prange) numba loop starts beating a serial one.

The kernel is a typical fused elementwise chain, out = tanh(x * 2 + 1), over N
float32 elements. Prints median microseconds per size; the smallest N from which
the parallel loop wins sets ``PARALLEL_MIN_ELEMENTS`` in
fusionnet/codegen/numba/kernels.py.

    python benchmarks/parallel_crossover.py
"""
from __future__ import annotations

import os
import numba
import numpy as np
from _timing import median_us


@numba.njit
def _serial(x, out):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = np.tanh(x[i, j] * 2 + 1)


@numba.njit(parallel=True)
def _parallel(x, out):
    for i in numba.prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = np.tanh(x[i, j] * 2 + 1)


def main() -> None:
    """Print the serial-vs-parallel table."""
    print(f"# {os.cpu_count()} cores, numba {numba.__version__}, "
          f"threading layer: {numba.config.THREADING_LAYER}")
    print(f"{'elements':>10} {'serial us':>10} {'parallel us':>12}  winner")
    first = None
    for rows in (2, 16, 64, 256, 1024, 4096, 16384):
        x = np.random.rand(rows, 256).astype(np.float32)
        out = np.empty_like(x)
        reps = max(3, 20000 // rows)
        serial = median_us(lambda: _serial(x, out), reps)
        par = median_us(lambda: _parallel(x, out), reps)
        if par < serial and first is None:
            first = x.size
        print(f"{x.size:>10} {serial:>10.1f} {par:>12.1f}  "
              f"{'parallel' if par < serial else 'serial'}")
    print(f"# parallel first wins at {first} elements")


if __name__ == "__main__":
    main()
