"""Hand-written numba kernels that generated code calls (shipped as fusionnet.kernels).

``dot_nt(a, w, out)`` computes ``out = a @ w.T`` (``w`` stored as PyTorch's
Linear keeps it, (out_features, in_features)); ``dot_nn(a, b, out)`` computes
``out = a @ b``. Both pick a plain loop for small problems, where calling BLAS
costs more than the arithmetic, and BLAS otherwise. The crossover
``SMALL_GEMM_MACS`` was measured with ``benchmarks/gemm_crossover.py``.
"""
import numba
import numpy as np

#: Multiply-accumulates (M*N*K) below which the loop beats BLAS (see module docstring).
SMALL_GEMM_MACS = 512


@numba.njit(cache=True)
def dot_nt_loop(a, w, out):
    """out = a @ w.T with plain loops (any dtype)."""
    m, k = a.shape
    n = w.shape[0]
    for i in range(m):
        for j in range(n):
            # Accumulate in out's dtype, as NumPy does (a float accumulator would round
            # int64 sums above 2**53 and turn int32 wrap-around into garbage).
            out[i, j] = 0
            for p in range(k):
                out[i, j] += a[i, p] * w[j, p]


@numba.njit(cache=True)
def dot_nn_loop(a, b, out):
    """out = a @ b with plain loops (any dtype)."""
    m, k = a.shape
    n = b.shape[1]
    for i in range(m):
        for j in range(n):
            out[i, j] = 0
        for p in range(k):
            av = a[i, p]
            for j in range(n):
                out[i, j] += av * b[p, j]


@numba.njit(cache=True)
def dot_nt(a, w, out):
    """out = a @ w.T for float arrays; loop when small, BLAS when large."""
    m, k = a.shape
    if m * w.shape[0] * k <= SMALL_GEMM_MACS:
        dot_nt_loop(a, w, out)
    else:
        np.dot(a, w.T, out)


@numba.njit(cache=True)
def dot_nn(a, b, out):
    """out = a @ b for float arrays; loop when small, BLAS when large."""
    m, k = a.shape
    if m * b.shape[1] * k <= SMALL_GEMM_MACS:
        dot_nn_loop(a, b, out)
    else:
        np.dot(a, b, out)


@numba.njit(cache=True)
def int_pow(a, b):
    """a ** b for integers; a negative exponent raises ValueError, as NumPy does."""
    if b < 0:
        raise ValueError("Integers to negative integer powers are not allowed.")
    return a ** b
