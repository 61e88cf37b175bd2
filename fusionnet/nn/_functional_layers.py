"""``F.conv2d``, pooling, normalisation and ``F.embedding`` (re-exported by
``fusionnet.nn.functional``).

Convolution and max pooling are op-table rows (``fusionnet/ops/conv.py``); everything
else is composed from table ops: average pooling is a depthwise ``conv2d`` with a constant
weight, adaptive average pooling a reshape and mean (or a mean per window), batch and
layer normalisation reductions plus elementwise ops, an embedding an index.
"""
from __future__ import annotations

import math

from ..autograd import no_grad
from ..dispatch import apply
from ..factories import ones
from ..functions import cat
from ..tensor import Tensor

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm",
           "layer_norm", "embedding", "pair"]


def pair(value, name: str = "argument") -> tuple:
    """``3`` -> ``(3, 3)``; a pair stays a pair (PyTorch's ``_pair``)."""
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            return (int(value[0]),) * 2
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair, got {value!r}")
        return tuple(int(v) for v in value)
    return (int(value), int(value))


def _batched(input: Tensor, fn, name: str):  # noqa: A002
    """Run ``fn`` on a 4-D input; a 3-D (C, H, W) input is treated as a batch of one."""
    if input.ndim == 3:
        return fn(input.unsqueeze(0)).squeeze(0)
    if input.ndim != 4:
        raise RuntimeError(f"{name}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got "
                           f"shape {tuple(input.shape)}")
    return fn(input)


def _same_padding(kernel, dilation, stride):
    if stride != (1, 1):
        raise ValueError("padding='same' is not supported for strided convolutions")
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if any(t % 2 for t in total):
        raise NotImplementedError("padding='same' with an even (dilated) kernel needs "
                                  "asymmetric padding, which fusionnet does not do yet")
    return tuple(t // 2 for t in total)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1,  # noqa: A002
           padding=0, dilation=1, groups: int = 1) -> Tensor:
    """2-D convolution of (N, C, H, W) (or (C, H, W)) with weight (O, C/groups, kh, kw),
    plus ``bias`` (O,) if given. ``padding`` is an int, a pair, ``"valid"`` or ``"same"``."""
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        padding = _same_padding(tuple(weight.shape[2:]), dilation, stride)
    else:
        padding = pair(padding, "padding")

    def run(x):
        out = apply("conv2d", x, weight, stride=stride, padding=padding, dilation=dilation,
                    groups=int(groups))
        if bias is not None:  # a fusable epilogue: add of a (O, 1, 1) view
            out = out + bias.reshape(-1, 1, 1)
        return out

    return _batched(input, run, "conv2d")


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1,  # noqa: A002
               ceil_mode: bool = False, return_indices: bool = False) -> Tensor:
    """Largest value of each window (``stride`` defaults to ``kernel_size``)."""
    if return_indices:
        raise NotImplementedError("max_pool2d(return_indices=True) is not supported yet")
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None or stride == [] else pair(stride, "stride")
    attrs = dict(kernel_size=k, stride=s, padding=pair(padding, "padding"),
                 dilation=pair(dilation, "dilation"), ceil_mode=bool(ceil_mode))
    return _batched(input, lambda x: apply("max_pool2d", x, **attrs), "max_pool2d")


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0,  # noqa: A002
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override=None) -> Tensor:
    """Mean of each window: a depthwise ``conv2d`` with a constant weight."""
    if ceil_mode:
        raise NotImplementedError("avg_pool2d(ceil_mode=True) is not supported yet")
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None or stride == [] else pair(stride, "stride")
    p = pair(padding, "padding")
    if any(2 * pp > kk for pp, kk in zip(p, k)):
        raise RuntimeError("avg_pool2d: pad should be at most half of effective kernel size")

    def run(x):
        c = x.shape[1]
        ones_w = ones(c, 1, k[0], k[1], dtype=x.dtype, device=x.device)
        summed = apply("conv2d", x, ones_w, stride=s, padding=p, dilation=(1, 1), groups=c)
        if divisor_override:
            return summed / float(divisor_override)
        if count_include_pad or p == (0, 0):
            return summed / float(k[0] * k[1])
        # Divide each window by the number of real (unpadded) elements in it.
        mask = ones(1, 1, x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)
        counts = apply("conv2d", mask, ones(1, 1, k[0], k[1], dtype=x.dtype, device=x.device),
                       stride=s, padding=p, dilation=(1, 1), groups=1)
        return summed / counts

    return _batched(input, run, "avg_pool2d")


def _adaptive_bounds(size: int, out: int):
    return [(math.floor(i * size / out), math.ceil((i + 1) * size / out)) for i in range(out)]


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:  # noqa: A002
    """Average pooling to ``output_size`` (an int, a pair, ``None`` keeps a size): window i
    covers ``floor(i*H/oh) .. ceil((i+1)*H/oh)``, as in PyTorch."""
    def run(x):
        h, w = x.shape[2], x.shape[3]
        if isinstance(output_size, (tuple, list)):
            oh, ow = (h if output_size[0] is None else output_size[0],
                      w if output_size[1] is None else output_size[1])
        else:
            oh = ow = int(output_size)
        n, c = x.shape[0], x.shape[1]
        if h % oh == 0 and w % ow == 0:  # equal windows: one reshape and one mean
            return x.reshape(n, c, oh, h // oh, ow, w // ow).mean(dim=(3, 5))
        rows = []
        for h0, h1 in _adaptive_bounds(h, oh):
            cols = [x[:, :, h0:h1, w0:w1].mean(dim=(2, 3), keepdim=True)
                    for w0, w1 in _adaptive_bounds(w, ow)]
            rows.append(cat(cols, dim=3))
        return cat(rows, dim=2)

    return _batched(input, run, "adaptive_avg_pool2d")


def _stat_shape(x: Tensor) -> tuple:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batch_norm(input: Tensor, running_mean, running_var, weight=None, bias=None,  # noqa: A002
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise each channel (dim 1) by the batch's statistics (``training``) or the
    running ones; in training the running statistics move by ``momentum`` towards the
    batch's mean and unbiased variance (in place, without autograd)."""
    if input.ndim < 2:
        raise ValueError(f"batch_norm expects at least a 2-D input, got {input.ndim}-D")
    dims = (0,) + tuple(range(2, input.ndim))
    shape = _stat_shape(input)
    if training:
        count = input.numel() // input.shape[1]
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got "
                             f"input size {list(input.shape)}")
        mean = input.mean(dim=dims, keepdim=True)
        centered = input - mean
        var = (centered * centered).mean(dim=dims, keepdim=True)
        if running_mean is not None or running_var is not None:
            with no_grad():
                if running_mean is not None:
                    running_mean.mul_(1 - momentum).add_(mean.detach().reshape(-1) * momentum)
                if running_var is not None:
                    unbiased = var.detach().reshape(-1) * (count / (count - 1))
                    running_var.mul_(1 - momentum).add_(unbiased * momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm in eval mode needs running_mean and running_var")
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
        centered = input - mean
    out = centered / (var + eps).sqrt()
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def layer_norm(input: Tensor, normalized_shape, weight=None, bias=None,  # noqa: A002
               eps: float = 1e-5) -> Tensor:
    """Normalise over the last ``len(normalized_shape)`` dims (biased variance), then scale
    by ``weight`` and shift by ``bias`` (both of ``normalized_shape``)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise RuntimeError(f"layer_norm: input shape {list(input.shape)} does not end with "
                           f"normalized_shape {list(shape)}")
    dims = tuple(range(input.ndim - len(shape), input.ndim))
    mean = input.mean(dim=dims, keepdim=True)
    centered = input - mean
    var = (centered * centered).mean(dim=dims, keepdim=True)
    out = centered / (var + eps).sqrt()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def embedding(input: Tensor, weight: Tensor, padding_idx=None, max_norm=None,  # noqa: A002
              norm_type: float = 2.0, scale_grad_by_freq: bool = False,
              sparse: bool = False) -> Tensor:
    """Rows of ``weight`` at the integer indices ``input`` (any shape). ``padding_idx``
    rows get no gradient, as in PyTorch."""
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are "
                                  "not supported")
    if input.dtype.is_floating_point:
        raise RuntimeError("embedding: indices must be an integer tensor, got "
                           f"{input.dtype}")
    out = weight[input]
    if padding_idx is not None:
        if padding_idx < 0:
            padding_idx += weight.shape[0]
        # Same values; the rows looked up at padding_idx pass no gradient to the weight.
        pad = (input == padding_idx).unsqueeze(-1)
        out = out.detach().where(pad, out)
    return out
