"""Independent loop references for the convolution and pooling rows (``SAMPLES`` entries
of ``test_op_table.py``): every output element written out from the definition."""
from __future__ import annotations

import itertools

import numpy as np

_rng = np.random.default_rng(77)
_ATTRS = {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 2}
_POOL = {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1), "dilation": (1, 1),
         "ceil_mode": True}


def _taps(n, o, oh, ow, kh, kw, attrs):
    """(input row, input col, tap i, tap j) of output (oh, ow), padding excluded."""
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    for i, j in itertools.product(range(kh), range(kw)):
        yield oh * sh - ph + i * dh, ow * sw - pw + j * dw, i, j


def conv_ref(x, w, attrs=_ATTRS):
    n_, c, h, wd = x.shape
    o_, cg, kh, kw = w.shape
    og = o_ // attrs["groups"]
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    oh_ = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow_ = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n_, o_, oh_, ow_))
    for n, o, oh, ow in itertools.product(range(n_), range(o_), range(oh_), range(ow_)):
        g = o // og
        for ci in range(cg):
            for r, s, i, j in _taps(n, o, oh, ow, kh, kw, attrs):
                if 0 <= r < h and 0 <= s < wd:
                    out[n, o, oh, ow] += x[n, g * cg + ci, r, s] * w[o, ci, i, j]
    return out


def conv_input_grad_ref(gout, w, hw=(5, 5), attrs=_ATTRS):
    n_, o_, oh_, ow_ = gout.shape
    _, cg, kh, kw = w.shape
    og = o_ // attrs["groups"]
    dx = np.zeros((n_, cg * attrs["groups"]) + hw)
    for n, o, oh, ow in itertools.product(range(n_), range(o_), range(oh_), range(ow_)):
        g = o // og
        for ci in range(cg):
            for r, s, i, j in _taps(n, o, oh, ow, kh, kw, attrs):
                if 0 <= r < hw[0] and 0 <= s < hw[1]:
                    dx[n, g * cg + ci, r, s] += gout[n, o, oh, ow] * w[o, ci, i, j]
    return dx


def conv_weight_grad_ref(x, gout, khw=(3, 2), attrs=_ATTRS):
    n_, c, h, wd = x.shape
    _, o_, oh_, ow_ = gout.shape
    groups = attrs["groups"]
    cg, og = c // groups, o_ // groups
    dw = np.zeros((o_, cg) + khw)
    for n, o, oh, ow in itertools.product(range(n_), range(o_), range(oh_), range(ow_)):
        g = o // og
        for ci in range(cg):
            for r, s, i, j in _taps(n, o, oh, ow, khw[0], khw[1], attrs):
                if 0 <= r < h and 0 <= s < wd:
                    dw[o, ci, i, j] += gout[n, o, oh, ow] * x[n, g * cg + ci, r, s]
    return dw


def _pool_windows(x, attrs=_POOL):
    """{(n, c, oh, ow): [(r, s), ...]} of in-range positions, PyTorch's ceil-mode rule."""
    n_, c_, h, wd = x.shape
    (kh, kw), (sh, sw) = attrs["kernel_size"], attrs["stride"]
    (ph, pw), (dh, dw) = attrs["padding"], attrs["dilation"]

    def size(length, k, s, p, d):
        span = length + 2 * p - d * (k - 1) - 1
        out = -(-span // s) + 1 if attrs["ceil_mode"] else span // s + 1
        if attrs["ceil_mode"] and (out - 1) * s >= length + p:
            out -= 1
        return out

    oh_, ow_ = size(h, kh, sh, ph, dh), size(wd, kw, sw, pw, dw)
    out = {}
    for n, c, oh, ow in itertools.product(range(n_), range(c_), range(oh_), range(ow_)):
        out[n, c, oh, ow] = [(oh * sh - ph + i * dh, ow * sw - pw + j * dw)
                             for i in range(kh) for j in range(kw)
                             if 0 <= oh * sh - ph + i * dh < h and 0 <= ow * sw - pw + j * dw < wd]
    return out, (n_, c_, oh_, ow_)


def max_pool_ref(x, attrs=_POOL):
    windows, shape = _pool_windows(x, attrs)
    out = np.zeros(shape)
    for (n, c, oh, ow), pos in windows.items():
        out[n, c, oh, ow] = max(x[n, c, r, s] for r, s in pos)
    return out


def max_pool_grad_ref(gout, x, attrs=_POOL):
    windows, _ = _pool_windows(x, attrs)
    dx = np.zeros_like(x)
    for (n, c, oh, ow), pos in windows.items():
        vals = [x[n, c, r, s] for r, s in pos]
        r, s = pos[int(np.argmax(vals))]  # the first largest
        dx[n, c, r, s] += gout[n, c, oh, ow]
    return dx


_X = _rng.standard_normal((2, 4, 5, 5))
_W = _rng.standard_normal((4, 2, 3, 2))
_G = _rng.standard_normal((2, 4, 3, 3))
_PX = _rng.standard_normal((2, 3, 5, 4))
_PG = _rng.standard_normal((2, 3, 3, 5))

#: name -> (inputs, attrs, reference), merged into ``test_op_table.SAMPLES``.
CONV_SAMPLES = {
    "conv2d": ([_X, _W], dict(_ATTRS), conv_ref),
    "conv2d_input_grad": ([_G, _W], dict(_ATTRS, input_hw=(5, 5)), conv_input_grad_ref),
    "conv2d_weight_grad": ([_X, _G], dict(_ATTRS, kernel_hw=(3, 2)), conv_weight_grad_ref),
    "max_pool2d": ([_PX], dict(_POOL), max_pool_ref),
    "max_pool2d_grad": ([_PG, _PX], dict(_POOL), max_pool_grad_ref),
}
