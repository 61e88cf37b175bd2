"""``BatchNorm1d``/``BatchNorm2d`` (and their lazy forms) and ``LayerNorm``.

Batch norm keeps PyTorch's state: parameters ``weight``/``bias`` and buffers
``running_mean``, ``running_var``, ``num_batches_tracked`` (its state_dict keys). In
``train()`` mode it normalises by the batch's statistics and moves the running ones by
``momentum`` (``None``: a cumulative average over the batches seen); in ``eval()`` it
uses the running ones. Under ``fuse``, training mode runs eagerly (updating buffers is a
side effect a compiled graph does not repeat); eval mode compiles.
"""
from __future__ import annotations

from ..dtypes import int64
from ..factories import empty, ones, tensor, zeros
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter, UninitializedParameter

__all__ = ["BatchNorm1d", "BatchNorm2d", "LazyBatchNorm1d", "LazyBatchNorm2d", "LayerNorm"]


class _BatchNorm(Module):
    """What BatchNorm1d and BatchNorm2d share; subclasses say which input ranks they take."""

    _ranks: tuple = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None,
                 dtype=None, *, bias: bool = True) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self._has_bias = affine and bias  # PyTorch >= 2.6: affine without a shift
        self._make_state(device, dtype)

    def _make_state(self, device, dtype) -> None:
        n = self.num_features
        for name, wanted in (("weight", self.affine), ("bias", self._has_bias)):
            self.register_parameter(name, Parameter(empty(n, device=device, dtype=dtype))
                                    if wanted else None)
        if self.track_running_stats:
            self.register_buffer("running_mean", zeros(n, device=device, dtype=dtype))
            self.register_buffer("running_var", ones(n, device=device, dtype=dtype))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=int64, device=device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches seen."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Running statistics reset; weight 1, bias 0."""
        self.reset_running_stats()
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def _check_input(self, input: Tensor) -> None:  # noqa: A002
        if input.ndim not in self._ranks:
            want = " or ".join(f"{r}D" for r in self._ranks)
            raise ValueError(f"expected {want} input (got {input.ndim}D input)")

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Normalise ``input`` per channel (dim 1)."""
        self._check_input(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked.item())
        use_batch = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if track else None,
                            self.running_var if track else None, self.weight, self.bias,
                            use_batch, factor, self.eps)

    def extra_repr(self) -> str:
        """PyTorch's text."""
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) inputs."""

    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) inputs."""

    _ranks = (4,)


class _LazyBatchNorm(_BatchNorm):
    """Batch norm whose ``num_features`` comes from its first input's dim 1."""

    def __init__(self, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *,
                 bias: bool = True) -> None:
        super().__init__(0, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)
        self._lazy_where = (device, dtype)  # where the first call builds the buffers

    def _make_state(self, device, dtype) -> None:
        if self.num_features == 0:  # before the first call: parameters without data
            for name, wanted in (("weight", self.affine), ("bias", self._has_bias)):
                self.register_parameter(name, UninitializedParameter(device=device, dtype=dtype)
                                        if wanted else None)
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
            return
        super()._make_state(device, dtype)

    def has_uninitialized_params(self) -> bool:
        """True until the first call."""
        return self.num_features == 0

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Take ``num_features`` from ``input``, build the state, become the plain class."""
        if self.num_features == 0:
            self._check_input(input)
            self.num_features = int(input.shape[1])
            device, dtype = self._lazy_where
            if self.weight is not None:
                init.ones_(self.weight.materialize((self.num_features,)))
            if self.bias is not None:
                init.zeros_(self.bias.materialize((self.num_features,)))
            if self.track_running_stats:
                n = self.num_features
                self.running_mean = zeros(n, device=device, dtype=dtype)
                self.running_var = ones(n, device=device, dtype=dtype)
                self.num_batches_tracked = tensor(0, dtype=int64, device=device)
        self.__class__ = self.cls_to_become
        return _BatchNorm.forward(self, input)


class LazyBatchNorm1d(_LazyBatchNorm, BatchNorm1d):
    """A :class:`BatchNorm1d` that infers ``num_features`` from its first input."""

    cls_to_become = BatchNorm1d


class LazyBatchNorm2d(_LazyBatchNorm, BatchNorm2d):
    """A :class:`BatchNorm2d` that infers ``num_features`` from its first input."""

    cls_to_become = BatchNorm2d


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` dims, with an elementwise affine
    ``weight`` (1) and ``bias`` (0) of that shape."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else \
            tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(ones(*shape, device=device, dtype=dtype))
            if bias:
                self.bias = Parameter(zeros(*shape, device=device, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Normalise ``input`` over its last ``len(normalized_shape)`` dims."""
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        """PyTorch's text."""
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")
