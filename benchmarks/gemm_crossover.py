"""Measure where a plain numba loop stops beating BLAS for out = a @ w.T (float32).

Prints one row per shape with median microseconds for each; the largest M*N*K
at which the loop still wins sets ``SMALL_GEMM_MACS`` in kernels/numba_kernels.py.

    python benchmarks/gemm_crossover.py
"""
from __future__ import annotations

import platform
import numba
import numpy as np
from _timing import median_us

from fusionnet._kernels import kernel_module

SHAPES = [(1, 4, 4), (2, 4, 8), (2, 8, 8), (2, 16, 16), (4, 16, 16), (2, 20, 64),
          (8, 16, 32), (2, 20, 256), (2, 256, 10), (16, 32, 32), (64, 20, 256)]


@numba.njit
def _blas_nt(a, w, out):
    np.dot(a, w.T, out)


def main() -> None:
    """Print the loop-vs-BLAS table."""
    k = kernel_module("numba_kernels")
    print(f"# {platform.processor() or platform.machine()}, numba {numba.__version__}")
    print(f"{'M,K,N':>14} {'MACs':>8} {'loop us':>8} {'BLAS us':>8}  winner")
    best = 0
    for m, kk, n in SHAPES:
        a = np.random.rand(m, kk).astype(np.float32)
        w = np.random.rand(n, kk).astype(np.float32)
        out = np.empty((m, n), np.float32)
        loop = median_us(lambda: k.dot_nt_loop(a, w, out))
        blas = median_us(lambda: _blas_nt(a, w, out))
        macs = m * n * kk
        if loop < blas:
            best = max(best, macs)
        print(f"{f'{m},{kk},{n}':>14} {macs:>8} {loop:>8.2f} {blas:>8.2f}  "
              f"{'loop' if loop < blas else 'BLAS'}")
    print(f"# largest size where the loop wins: {best} MACs")


if __name__ == "__main__":
    main()
