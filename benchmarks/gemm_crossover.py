"""Measure where a plain numba loop stops beating BLAS, for out = a @ w.T and out = a @ b.

Prints one row per shape with the median microseconds per product of the loop and of
BLAS (``np.dot``) for each form, in float32. Generated code calls these kernels from
inside its numba driver, so each sample repeats the product in a compiled loop: the
Python-to-numba call is not part of the figure. The largest M*N*K at which the loop
still wins sets ``SMALL_NT_MACS`` and ``SMALL_NN_MACS`` in kernels/numba_kernels.py.

    OPENBLAS_NUM_THREADS=1 python benchmarks/gemm_crossover.py
"""
from __future__ import annotations

import platform

import numba
import numpy as np
from _timing import median_us

from fusionnet._kernels import kernel_module

SHAPES = [(1, 4, 4), (2, 4, 8), (2, 16, 16), (4, 16, 16), (2, 20, 20), (2, 32, 16),
          (2, 20, 64), (2, 64, 32), (8, 16, 32), (2, 256, 10), (2, 20, 256), (16, 32, 32),
          (32, 64, 64), (64, 20, 256)]
REPS, ROUNDS = 2000, 7


@numba.njit
def _blas_nt(a, w, out):
    np.dot(a, w.T, out)


@numba.njit
def _blas_nn(a, b, out):
    np.dot(a, b, out)


@numba.njit
def _repeat(fn, a, b, out, n):
    for _ in range(n):
        fn(a, b, out)


def _median_us(fn, a, b, out) -> float:
    # One timed call runs REPS products inside numba, so divide the shared helper's figure.
    return median_us(lambda: _repeat(fn, a, b, out, REPS), reps=1, rounds=ROUNDS) / REPS


def main() -> None:
    """Print the loop-vs-BLAS table for both product forms."""
    k = kernel_module("numba_kernels")
    print(f"# {platform.processor() or platform.machine()}, numba {numba.__version__}")
    print(f"{'M,K,N':>10} {'MACs':>7} {'nt loop':>8} {'nt BLAS':>8} {'nn loop':>8} {'nn BLAS':>8}")
    best = {"nt": 0, "nn": 0}
    for m, kk, n in SHAPES:
        rng = np.random.default_rng(0)
        a = rng.random((m, kk), np.float32)
        w = rng.random((n, kk), np.float32)
        b = np.ascontiguousarray(w.T)
        out = np.empty((m, n), np.float32)
        row = {"nt": (_median_us(k.dot_nt_loop, a, w, out), _median_us(_blas_nt, a, w, out)),
               "nn": (_median_us(k.dot_nn_loop, a, b, out), _median_us(_blas_nn, a, b, out))}
        macs = m * n * kk
        for form, (loop, blas) in row.items():
            if loop < blas:
                best[form] = max(best[form], macs)
        cells = " ".join(f"{v:>8.2f}" for pair in row.values() for v in pair)
        print(f"{f'{m},{kk},{n}':>10} {macs:>7} {cells}")
    print(f"# largest size where the loop wins: nt {best['nt']} MACs, nn {best['nn']} MACs")


if __name__ == "__main__":
    main()
