"""Hand-written numba kernels that generated code calls (shipped in a wheel as fusionnet/kernels).

``dot_nt(a, w, out)`` computes ``out = a @ w.T`` (``w`` stored as PyTorch's
Linear keeps it, (out_features, in_features)); ``dot_nn(a, b, out)`` computes
``out = a @ b``. Both pick a plain loop for small problems, where calling BLAS
costs more than the arithmetic, and BLAS otherwise. The crossovers
``SMALL_NT_MACS``/``SMALL_NN_MACS`` were measured with ``benchmarks/gemm_crossover.py``.
Integer and bool products use ``dot_nt_int``/``dot_nn_int``, which wrap around on
overflow as NumPy does.

The functions are compiled lazily and cached on disk by ``fusionnet._kernels.kernel_module``,
which gives each one numba's cache with a checksum on every file (see
``fusionnet/codegen/numba/cache.py``); hence no ``cache=True`` here.
"""
import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

#: Multiply-accumulates (M*N*K) below which the loop beats BLAS, for ``a @ w.T`` and
#: ``a @ b`` (measured with benchmarks/gemm_crossover.py). The ``nt`` loop runs each
#: output's dot product down two contiguous rows, which vectorises; BLAS called from
#: numba on ``w.T`` pays more per call than on a C-ordered ``b``, so the crossovers differ.
SMALL_NT_MACS = 8192
SMALL_NN_MACS = 512

#: Lets LLVM reassociate the sums of products (and fuse multiply-adds) so the loops
#: vectorise. BLAS reorders these sums too; NaN and infinity semantics are kept (no
#: ``nnan``/``ninf``), so only rounding can differ from eager, as it does with BLAS.
_GEMM_FASTMATH = {"reassoc", "contract"}


@numba.njit(fastmath=_GEMM_FASTMATH)
def dot_nt_loop(a, w, out):
    """out = a @ w.T with plain loops (float arrays)."""
    m, k = a.shape
    n = w.shape[0]
    for i in range(m):
        for j in range(n):
            # Typed float32 here, numba widens it to float64 for float64 operands.
            acc = np.float32(0)
            for p in range(k):
                acc += a[i, p] * w[j, p]
            out[i, j] = acc


@numba.njit(fastmath=_GEMM_FASTMATH)
def dot_nn_loop(a, b, out):
    """out = a @ b with plain loops (float arrays)."""
    m, k = a.shape
    n = b.shape[1]
    for i in range(m):
        for j in range(n):
            out[i, j] = 0
        for p in range(k):
            av = a[i, p]
            for j in range(n):
                out[i, j] += av * b[p, j]


# numba marks signed integer arithmetic "no signed wrap", so LLVM may assume it never
# overflows; unsigned arithmetic wraps. The integer products therefore multiply and add
# in uint64 and store the low bits, which is exactly NumPy's wrapped int32/int64 result
# (and, for bool, nonzero where NumPy's logical sum of products is True).


@numba.njit
def dot_nt_int(a, w, out):
    """out = a @ w.T for integer or bool arrays, wrapping around on overflow as NumPy does."""
    m, k = a.shape
    n = w.shape[0]
    for i in range(m):
        for j in range(n):
            acc = np.uint64(0)
            for p in range(k):
                acc += np.uint64(a[i, p]) * np.uint64(w[j, p])
            out[i, j] = acc  # the low bits (bool: acc != 0)


@numba.njit
def dot_nn_int(a, b, out):
    """out = a @ b for integer or bool arrays, wrapping around on overflow as NumPy does."""
    m, k = a.shape
    n = b.shape[1]
    for i in range(m):
        for j in range(n):
            acc = np.uint64(0)
            for p in range(k):
                acc += np.uint64(a[i, p]) * np.uint64(b[p, j])
            out[i, j] = acc  # the low bits (bool: acc != 0)


@numba.njit
def dot_nt(a, w, out):
    """out = a @ w.T for float arrays; loop when small, BLAS when large."""
    m, k = a.shape
    if m * w.shape[0] * k <= SMALL_NT_MACS:
        dot_nt_loop(a, w, out)
    else:
        np.dot(a, w.T, out)


@numba.njit
def dot_nn(a, b, out):
    """out = a @ b for float arrays; loop when small, BLAS when large."""
    m, k = a.shape
    if m * b.shape[1] * k <= SMALL_NN_MACS:
        dot_nn_loop(a, b, out)
    else:
        np.dot(a, b, out)


@numba.njit
def int_pow(a, b):
    """a ** b for integers, wrapping around on overflow as NumPy does (square and multiply
    in uint64: the low 64 bits of a power do not depend on how it was computed). A
    negative exponent raises ValueError, as NumPy does. Returns uint64; the caller
    converts to the result's dtype."""
    if b < 0:
        raise ValueError("Integers to negative integer powers are not allowed.")
    base = np.uint64(a)
    result = np.uint64(1)
    e = np.int64(b)
    while e > 0:
        if e & 1:
            result *= base
        base *= base
        e >>= 1
    return result


@numba.njit
def stable_sigmoid(x):
    """1 / (1 + e^-x) in float64 without underflow: e^-|x| never overflows, and for x < 0
    the result e^x / (1 + e^x) keeps its relative precision down to the smallest double
    (the tanh form gives exactly 0 below about -37). NaN stays NaN."""
    v = np.float64(x)  # numba's float() keeps a float32 a float32
    e = math.exp(-abs(v))
    if v >= 0:
        return 1.0 / (1.0 + e)
    return e / (1.0 + e)


@intrinsic
def pointer_at(typingctx, address, dtype):
    """A typed pointer to ``address`` (an int64), for ``numba.carray(pointer_at(a, np.float32),
    shape)``. Generated drivers take their parameters and constants as one table of
    addresses (``fusionnet/codegen/numba/table.py``): unboxing one array argument costs far
    more than the arithmetic at small batch sizes. The caller guarantees the arrays are
    alive, C-contiguous, aligned and of the shape and dtype the driver was built for."""
    if not isinstance(address, types.Integer) or not isinstance(dtype, types.NumberClass):
        return None
    pointer = types.CPointer(dtype.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return pointer(address, dtype), codegen
