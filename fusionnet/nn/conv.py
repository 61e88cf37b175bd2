"""``Conv2d`` and ``LazyConv2d``."""
from __future__ import annotations

import math

from ..factories import empty
from ..tensor import Tensor
from . import functional as F
from . import init
from ._functional_layers import pair
from .module import Module
from .parameter import Parameter, UninitializedParameter

__all__ = ["Conv2d", "LazyConv2d"]


class Conv2d(Module):
    """2-D convolution: ``weight`` (out_channels, in_channels/groups, kh, kw), ``bias``
    (out_channels,), initialised as PyTorch does (``kaiming_uniform_(a=sqrt(5))``, bias
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))). ``padding_mode`` other than ``"zeros"`` is not
    supported."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None) -> None:
        super().__init__()
        if padding_mode != "zeros":
            raise NotImplementedError(f"Conv2d: padding_mode={padding_mode!r} is not "
                                      "supported (only 'zeros')")
        if groups <= 0 or out_channels % groups or (in_channels and in_channels % groups):
            raise ValueError("in_channels and out_channels must be divisible by groups")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride, self.dilation = pair(stride, "stride"), pair(dilation, "dilation")
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding")
        self.padding_mode = padding_mode
        self._make_parameters(bias, device, dtype)

    def _make_parameters(self, bias, device, dtype) -> None:
        self.weight = Parameter(empty(self.out_channels, self.in_channels // self.groups,
                                      *self.kernel_size, device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(empty(self.out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw weight and bias from PyTorch's default distributions."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """The convolution of ``input`` (N, C, H, W) or (C, H, W), plus the bias."""
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def extra_repr(self) -> str:
        """PyTorch's ``Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1), ...)`` text."""
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"  # a string unquoted, as PyTorch prints it
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class LazyConv2d(Conv2d):
    """A :class:`Conv2d` whose ``in_channels`` is inferred from its first input (dim -3);
    it then becomes a plain :class:`Conv2d`, as in PyTorch."""

    cls_to_become = Conv2d

    def __init__(self, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None) -> None:
        super().__init__(0, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, device, dtype)

    def _make_parameters(self, bias, device, dtype) -> None:
        self.weight = UninitializedParameter(device=device, dtype=dtype)
        if bias:
            self.bias = UninitializedParameter(device=device, dtype=dtype)
        else:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        """Initialise, once the parameters have shapes (a no-op before)."""
        if not self.has_uninitialized_params() and self.in_channels != 0:
            super().reset_parameters()

    def has_uninitialized_params(self) -> bool:
        """True until the first call."""
        return any(isinstance(p, UninitializedParameter) for p in self._parameters.values())

    def initialize_parameters(self, input: Tensor) -> None:  # noqa: A002
        """Give the parameters their shapes from ``input``'s channel dim and draw them."""
        if not self.has_uninitialized_params():
            return
        if input.ndim not in (3, 4):
            raise RuntimeError(f"LazyConv2d: expected a 3-D or 4-D input, got shape "
                               f"{tuple(input.shape)}")
        self.in_channels = int(input.shape[-3])
        if self.in_channels % self.groups:
            raise ValueError("in_channels must be divisible by groups")
        self.weight.materialize((self.out_channels, self.in_channels // self.groups,
                                 *self.kernel_size))
        if self.bias is not None:
            self.bias.materialize((self.out_channels,))
        self.reset_parameters()

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Materialise on first use, then become a Conv2d and run as one."""
        self.initialize_parameters(input)
        self.__class__ = self.cls_to_become
        return Conv2d.forward(self, input)
