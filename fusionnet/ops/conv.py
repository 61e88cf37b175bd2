"""Convolution and max pooling rows (NCHW), with the rows their gradients call.

``conv2d`` is ``Kind.MATMUL``: a product a backend computes with a native kernel and
then applies a fused elementwise epilogue to (bias add, ReLU), as TVM treats conv2d
("output-elementwise-fusable"). ``max_pool2d`` is the same kind for the same reason: a
native kernel whose result an elementwise chain may consume in place. Their gradients
are rows of their own (``conv2d_input_grad``, ``conv2d_weight_grad``,
``max_pool2d_grad``): opaque, computed eagerly, not differentiable again.

Eager code is NumPy/CuPy generic: convolution is im2col (one strided slice per kernel
tap) and a batched ``matmul`` per group; its input gradient is the matching col2im.
Attributes are tuples of two ints: ``stride``, ``padding`` (symmetric), ``dilation``;
``groups`` is an int. Average pooling needs no row: ``F.avg_pool2d`` is a depthwise
``conv2d`` with a constant weight.
"""
from __future__ import annotations

import numpy as np

from .registry import SAVES_INPUTS, SAVES_NONE, Kind, Op, register
from .rules import ShapeError, same_dtype

__all__ = ["conv_out_size", "pool_out_size"]


def conv_out_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    """Output length of a convolution along one axis (PyTorch's formula)."""
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def pool_out_size(size, k, stride, pad, dilation, ceil_mode) -> int:
    """Output length of a pooling window along one axis, with PyTorch's ``ceil_mode`` rule
    (the last window must start inside the input or its left padding)."""
    span = size + 2 * pad - dilation * (k - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _float_only(a, b=None, **_):
    d = np.dtype(a)
    if d.kind != "f":
        raise TypeError(f"convolution and pooling need float tensors, got {d}")
    return same_dtype(a, b) if b is not None else d


# ---- im2col / col2im ----------------------------------------------------------------


def _taps(k, stride, dilation, out):
    """(tap offset, slice) for each of the ``k`` taps along one axis."""
    return [(i, slice(i * dilation, i * dilation + stride * (out - 1) + 1, stride))
            for i in range(k)]


def _im2col(xp, x, kh, kw, stride, padding, dilation, fill=0.0, extra=(0, 0)):
    """(N, C, kh, kw, OH, OW) windows of ``x`` padded with ``fill`` (``extra``: more padding
    at the bottom/right, for ceil-mode pooling)."""
    n, c, h, w = x.shape
    (ph, pw), (eh, ew) = padding, extra
    oh = conv_out_size(h + eh, kh, stride[0], ph, dilation[0])
    ow = conv_out_size(w + ew, kw, stride[1], pw, dilation[1])
    padded = xp.full((n, c, h + 2 * ph + eh, w + 2 * pw + ew), fill, dtype=x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    cols = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i, si in _taps(kh, stride[0], dilation[0], oh):
        for j, sj in _taps(kw, stride[1], dilation[1], ow):
            cols[:, :, i, j] = padded[:, :, si, sj]
    return cols


def _col2im(xp, cols, hw, stride, padding, dilation, extra=(0, 0)):
    """The adjoint of :func:`_im2col`: add each window element back where it came from."""
    n, c, kh, kw, oh, ow = cols.shape
    (h, w), (ph, pw), (eh, ew) = hw, padding, extra
    padded = xp.zeros((n, c, h + 2 * ph + eh, w + 2 * pw + ew), dtype=cols.dtype)
    for i, si in _taps(kh, stride[0], dilation[0], oh):
        for j, sj in _taps(kw, stride[1], dilation[1], ow):
            padded[:, :, si, sj] += cols[:, :, i, j]
    return padded[:, :, ph:ph + h, pw:pw + w]


# ---- conv2d ---------------------------------------------------------------------------


def _conv_shape(x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    if len(x) != 4 or len(w) != 4:
        raise ShapeError(f"conv2d expects a 4-D input (N, C, H, W) and a 4-D weight, got "
                         f"{tuple(x)} and {tuple(w)}")
    n, c, h, wd = x
    o, cg, kh, kw = w
    if c != cg * groups or o % groups:
        raise ShapeError(f"conv2d: weight {tuple(w)} with groups={groups} expects "
                         f"{cg * groups} input channels, got {c}")
    oh = conv_out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_out_size(wd, kw, stride[1], padding[1], dilation[1])
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"conv2d: input {tuple(x)} is smaller than the (dilated) kernel "
                         f"{(kh, kw)} with padding {tuple(padding)}")
    return (n, o, oh, ow)


def _conv_eager(xp, x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    n = x.shape[0]
    o, cg, kh, kw = w.shape
    cols = _im2col(xp, x, kh, kw, stride, padding, dilation)
    oh, ow = cols.shape[-2:]
    cols = cols.reshape(n, groups, cg * kh * kw, oh * ow)
    out = xp.matmul(w.reshape(1, groups, o // groups, cg * kh * kw), cols)
    return out.reshape(n, o, oh, ow)


def _conv_grad(g, x, w, needs=(True, True), **attrs):
    from ..dispatch import apply  # noqa: PLC0415 - dispatch imports the table

    gx = gw = None
    if needs[0]:
        gx = apply("conv2d_input_grad", g, w, input_hw=tuple(x.shape[2:]), **attrs)
    if needs[1]:
        gw = apply("conv2d_weight_grad", x, g, kernel_hw=tuple(w.shape[2:]), **attrs)
    return gx, gw


register(Op(
    "conv2d", Kind.MATMUL, 2, _conv_eager, _conv_shape, _float_only, _conv_grad,
    "2-D convolution (cross-correlation) of an NCHW input with an (O, C/groups, kh, kw) "
    "weight", saves=SAVES_INPUTS, promote=(0, 1),
))


def _input_grad_shape(g, w, input_hw, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                      groups=1):
    return (g[0], w[1] * groups) + tuple(input_hw)


def _input_grad_eager(xp, g, w, input_hw, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                      groups=1):
    n, o, oh, ow = g.shape
    _, cg, kh, kw = w.shape
    wg = w.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1)[None]
    cols = xp.matmul(wg, g.reshape(n, groups, o // groups, oh * ow))
    cols = cols.reshape(n, groups * cg, kh, kw, oh, ow)
    return _col2im(xp, cols, input_hw, stride, padding, dilation)


register(Op(
    "conv2d_input_grad", Kind.OPAQUE, 2, _input_grad_eager, _input_grad_shape, same_dtype,
    None, "gradient of conv2d with respect to its input (a transposed convolution)",
    saves=SAVES_NONE, promote=(0, 1),
))


def _weight_grad_shape(x, g, kernel_hw, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                       groups=1):
    return (g[1], x[1] // groups) + tuple(kernel_hw)


def _weight_grad_eager(xp, x, g, kernel_hw, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                       groups=1):
    n, c = x.shape[:2]
    o, oh, ow = g.shape[1:]
    kh, kw = kernel_hw
    cols = _im2col(xp, x, kh, kw, stride, padding, dilation)
    cols = cols.reshape(n, groups, (c // groups) * kh * kw, oh * ow)
    gg = g.reshape(n, groups, o // groups, oh * ow)
    out = xp.matmul(gg, cols.transpose(0, 1, 3, 2)).sum(axis=0)
    return out.reshape(o, c // groups, kh, kw)


register(Op(
    "conv2d_weight_grad", Kind.OPAQUE, 2, _weight_grad_eager, _weight_grad_shape,
    same_dtype, None, "gradient of conv2d with respect to its weight",
    saves=SAVES_NONE, promote=(0, 1),
))


# ---- max_pool2d ------------------------------------------------------------------------


def _pool_geometry(h, w, kernel_size, stride, padding, dilation, ceil_mode):
    """Output size and the extra bottom/right padding ceil mode needs."""
    oh = pool_out_size(h, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = pool_out_size(w, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode)
    need_h = (oh - 1) * stride[0] + dilation[0] * (kernel_size[0] - 1) + 1
    need_w = (ow - 1) * stride[1] + dilation[1] * (kernel_size[1] - 1) + 1
    extra = (max(0, need_h - h - 2 * padding[0]), max(0, need_w - w - 2 * padding[1]))
    return oh, ow, extra


def _pool_shape(x, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    if len(x) != 4:
        raise ShapeError(f"max_pool2d expects a 4-D input (N, C, H, W), got {tuple(x)}")
    if any(2 * p > k for p, k in zip(padding, kernel_size)):
        raise ShapeError(f"max_pool2d: padding {tuple(padding)} should be at most half of "
                         f"the kernel size {tuple(kernel_size)}")
    oh, ow, _ = _pool_geometry(x[2], x[3], kernel_size, stride, padding, dilation, ceil_mode)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"max_pool2d: input {tuple(x)} is smaller than the window")
    return (x[0], x[1], oh, ow)


def _windows(xp, x, kernel_size, stride, padding, dilation, ceil_mode):
    _, _, extra = _pool_geometry(x.shape[2], x.shape[3], kernel_size, stride, padding,
                                 dilation, ceil_mode)
    cols = _im2col(xp, x, kernel_size[0], kernel_size[1], stride, padding, dilation,
                   fill=-np.inf, extra=extra)
    n, c, kh, kw, oh, ow = cols.shape
    return cols.reshape(n, c, kh * kw, oh, ow), extra


def _pool_eager(xp, x, kernel_size, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    cols, _ = _windows(xp, x, kernel_size, stride, padding, dilation, ceil_mode)
    return cols.max(axis=2)  # NaN propagates, as in PyTorch


def _pool_grad(g, x, needs=(True,), **attrs):
    from ..dispatch import apply  # noqa: PLC0415

    return (apply("max_pool2d_grad", g, x, **attrs),)


register(Op(
    "max_pool2d", Kind.MATMUL, 1, _pool_eager, _pool_shape, _float_only, _pool_grad,
    "2-D max pooling over NCHW windows (padding counts as -inf)", saves=SAVES_INPUTS,
))


def _pool_grad_shape(g, x, **_):
    return tuple(x)


def _pool_grad_eager(xp, g, x, kernel_size, stride, padding=(0, 0), dilation=(1, 1),
                     ceil_mode=False):
    cols, extra = _windows(xp, x, kernel_size, stride, padding, dilation, ceil_mode)
    # The whole gradient of a window goes to its first largest element (NaN counts as
    # largest), as PyTorch's CPU kernel does.
    nan = xp.isnan(cols)
    best = xp.where(nan.any(axis=2), nan.argmax(axis=2), cols.argmax(axis=2))
    n, c, k, oh, ow = cols.shape
    taps = xp.arange(k).reshape(1, 1, k, 1, 1)
    spread = xp.where(taps == best[:, :, None], g[:, :, None], xp.zeros((), g.dtype))
    spread = spread.reshape(n, c, kernel_size[0], kernel_size[1], oh, ow)
    return _col2im(xp, spread, x.shape[2:], stride, padding, dilation, extra)


register(Op(
    "max_pool2d_grad", Kind.OPAQUE, 2, _pool_grad_eager, _pool_grad_shape, same_dtype, None,
    "gradient of max_pool2d: each window's gradient to its first largest element",
    saves=SAVES_NONE, promote=(0, 1),
))
