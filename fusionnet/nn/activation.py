"""Activation and shape layers: ReLU, Sigmoid, Tanh, GELU, Softmax, Flatten, Dropout."""
from __future__ import annotations

from ..tensor import Tensor
from . import functional as F
from .module import Module

__all__ = ["ReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax", "Flatten", "Dropout"]


class ReLU(Module):
    """max(x, 0) elementwise."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """ReLU of the input."""
        return F.relu(input, inplace=self.inplace)

    def extra_repr(self) -> str:
        """``inplace=True`` when set (PyTorch prints nothing otherwise)."""
        return "inplace=True" if self.inplace else ""


class Sigmoid(Module):
    """Logistic sigmoid elementwise."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Sigmoid of the input."""
        return F.sigmoid(input)


class Tanh(Module):
    """Hyperbolic tangent elementwise."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """tanh of the input."""
        return F.tanh(input)


class GELU(Module):
    """Gaussian error linear unit (exact erf form, or ``approximate='tanh'``)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """GELU of the input."""
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self) -> str:
        """``approximate='none'``."""
        return f"approximate={self.approximate!r}"


class Softmax(Module):
    """Softmax along ``dim``."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Softmax of the input along ``dim`` (PyTorch's legacy default when None)."""
        dim = self.dim
        if dim is None:  # PyTorch's implicit choice: dim 0 for 0/1/3-d inputs, else 1
            dim = 0 if input.ndim in (0, 1, 3) else 1
        return F.softmax(input, dim)

    def extra_repr(self) -> str:
        """``dim=...``."""
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """Log-softmax along ``dim``."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """log(softmax(input)) along ``dim``."""
        dim = self.dim if self.dim is not None else (0 if input.ndim in (0, 1, 3) else 1)
        return F.log_softmax(input, dim)


class Flatten(Module):
    """Merge dims ``start_dim..end_dim`` into one (by default all but the batch dim)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """The flattened input."""
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        """``start_dim=1, end_dim=-1``."""
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """During training, zero each element with probability ``p`` and scale the rest by
    1/(1-p); the identity in eval mode."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Dropout of the input (identity unless training)."""
        return F.dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self) -> str:
        """``p=0.5, inplace=False``."""
        return f"p={self.p}, inplace={self.inplace}"
