"""Generators for the convolution and pooling rows: a row of a 2-D value seen as a 1-pixel
high image, through ``nn.Conv2d`` (strides, padding, channels) and max pooling (floor and
ceil mode), flattened back to 2-D so later generators can keep using it."""
from __future__ import annotations

from ..ops.conv import conv_out_size, pool_out_size
from .builder import Builder, generator

__all__ = []


@generator("conv", ops=("conv2d", "conv2d_input_grad", "conv2d_weight_grad", "max_pool2d",
                        "max_pool2d_grad", "add", "reshape"), weight=1.5)
def conv(b: Builder) -> bool:
    """``Conv2d`` (+ bias) on ``x.unsqueeze(1).unsqueeze(1)``, maybe max pooling, flatten."""
    v = b.pick(lambda v: v.dtype == b.fdt and v.ndim == 2 and isinstance(v.shape[-1], int)
               and v.shape[-1] >= 2)
    if v is None:
        return False
    k = v.shape[-1]
    c, kw = b.choice([1, 2, 3]), b.rng.randint(1, min(3, k))
    pad, stride = b.rng.randint(0, kw // 2), b.choice([1, 1, 2])
    width = conv_out_size(k, kw, stride, pad, 1)
    layer = b.attr("conv", f"nn.Conv2d(1, {c}, kernel_size=(1, {kw}), stride=(1, {stride}), "
                           f"padding=(0, {pad}){b.dtype_kw()})")
    expr = f"{layer}({v.name}.unsqueeze(1).unsqueeze(1))"
    if width >= 2 and b.chance(0.6):
        ceil = b.chance(0.4)
        width = pool_out_size(width, 2, 2, 0, 1, ceil)
        expr = b.choice([f"F.max_pool2d({expr}, (1, 2), ceil_mode={ceil})",
                         f"{b.attr('pool', f'nn.MaxPool2d((1, 2), ceil_mode={ceil})')}({expr})"])
    if b.chance(0.5):
        expr = f"F.relu({expr})"
    shape = (v.shape[0], c * width)
    if not b.fits(shape):
        return False
    b.new(f"{expr}.flatten(1)", shape, v.dtype, grad=True)
    return True
