"""Hand-written numba kernels for convolution and max pooling (NCHW), called by generated
code for the ``conv2d`` and ``max_pool2d`` rows (shipped in a wheel as fusionnet/kernels).

``conv2d_nchw(x, w, out, sh, sw, ph, pw, dh, dw, groups)`` writes the convolution of ``x``
(N, C, H, W) with ``w`` (O, C/groups, kh, kw) into ``out`` (N, O, OH, OW): per sample and
group, an im2col into a (C/groups * kh * kw, OH * OW) buffer and one BLAS product. The
generated kernel then applies its fused epilogue (bias, ReLU...) to ``out`` in place.
``max_pool2d_nchw(x, out, kh, kw, sh, sw, ph, pw, dh, dw)`` takes the largest in-range
element of each window (padding never wins; NaN propagates), for any ``out`` size, so
ceil mode needs nothing more. Inputs are C-contiguous float arrays (the driver makes
them so).
"""
import numba
import numpy as np


@numba.njit
def conv2d_nchw(x, w, out, sh, sw, ph, pw, dh, dw, groups):
    """out = conv2d(x, w) (cross-correlation, zero padding, float arrays)."""
    n_, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    og = o // groups
    kk = cg * kh * kw
    cols = np.empty((kk, oh * ow), dtype=x.dtype)
    w2 = w.reshape(o, kk)
    for g in range(groups):
        wg = np.ascontiguousarray(w2[g * og:(g + 1) * og])
        for n in range(n_):
            for ci in range(cg):
                c = g * cg + ci
                for i in range(kh):
                    for j in range(kw):
                        row = (ci * kh + i) * kw + j
                        for y in range(oh):
                            r = y * sh - ph + i * dh
                            inside = 0 <= r < h
                            for q in range(ow):
                                s = q * sw - pw + j * dw
                                if inside and 0 <= s < wd:
                                    cols[row, y * ow + q] = x[n, c, r, s]
                                else:
                                    cols[row, y * ow + q] = 0
            res = np.dot(wg, cols)
            for k in range(og):
                for y in range(oh):
                    for q in range(ow):
                        out[n, g * og + k, y, q] = res[k, y * ow + q]


@numba.njit
def max_pool2d_nchw(x, out, kh, kw, sh, sw, ph, pw, dh, dw):
    """out = max_pool2d(x): the largest in-range element of each window."""
    n_, c_, h, wd = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for n in range(n_):
        for c in range(c_):
            for y in range(oh):
                for q in range(ow):
                    best = -np.inf
                    for i in range(kh):
                        r = y * sh - ph + i * dh
                        if r < 0 or r >= h:
                            continue
                        for j in range(kw):
                            s = q * sw - pw + j * dw
                            if s < 0 or s >= wd:
                                continue
                            v = x[n, c, r, s]
                            if v > best or v != v:  # NaN wins and stays
                                best = v
                                if v != v:
                                    break
                    out[n, c, y, q] = best
