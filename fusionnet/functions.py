"""Top-level tensor functions under PyTorch's names (``fusionnet.cat``, ``fusionnet.relu``...).

Each is a call into the op table through :func:`fusionnet.dispatch.apply`
or a Tensor method; none computes anything itself.
"""
from __future__ import annotations

from .dispatch import apply
from .tensor import Tensor

__all__ = ["cat", "concat", "stack", "mm", "matmul", "relu", "exp", "log", "sqrt", "abs",
           "sigmoid", "tanh", "sum", "mean", "max", "min", "argmax", "argmin", "where", "clamp",
           "maximum", "minimum", "reshape", "flatten", "transpose", "permute", "unsqueeze",
           "squeeze", "allclose", "equal", "numel", "neg", "pow", "erf", "sign", "clone"]


def _seq(tensors, name):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError(f"{name}() expects a non-empty sequence of tensors")
    return tensors


def cat(tensors, dim: int = 0) -> Tensor:
    """Concatenate tensors along an existing dimension."""
    return apply("cat", *_seq(tensors, "cat"), dim=dim)


concat = cat


def stack(tensors, dim: int = 0) -> Tensor:
    """Stack equally shaped tensors along a new dimension."""
    return apply("stack", *_seq(tensors, "stack"), dim=dim)


def mm(a: Tensor, b: Tensor) -> Tensor:
    """Product of two 2-D tensors."""
    return a.mm(b)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with NumPy/PyTorch broadcasting semantics."""
    return apply("matmul", a, b)


def relu(x: Tensor) -> Tensor:
    """max(x, 0)."""
    return apply("relu", x)


def exp(x: Tensor) -> Tensor:
    """e to the x."""
    return apply("exp", x)


def log(x: Tensor) -> Tensor:
    """Natural logarithm."""
    return apply("log", x)


def sqrt(x: Tensor) -> Tensor:
    """Square root."""
    return apply("sqrt", x)


def abs(x: Tensor) -> Tensor:  # noqa: A001 - PyTorch's name
    """Absolute value."""
    return apply("abs", x)


def neg(x: Tensor) -> Tensor:
    """Negation."""
    return apply("neg", x)


def sign(x: Tensor) -> Tensor:
    """Sign of each element."""
    return apply("sign", x)


def erf(x: Tensor) -> Tensor:
    """Gauss error function."""
    return apply("erf", x)


def pow(x, exponent) -> Tensor:  # noqa: A001
    """x ** exponent."""
    return apply("pow", x, exponent)


def sigmoid(x: Tensor) -> Tensor:
    """Logistic sigmoid."""
    return apply("sigmoid", x)


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent."""
    return apply("tanh", x)


def clone(x: Tensor) -> Tensor:
    """A copy with its own storage."""
    return x.clone()


def sum(x: Tensor, dim=None, keepdim=False, dtype=None) -> Tensor:  # noqa: A001
    """Sum over ``dim``."""
    return x.sum(dim, keepdim, dtype=dtype)


def mean(x: Tensor, dim=None, keepdim=False, dtype=None) -> Tensor:
    """Mean over ``dim``."""
    return x.mean(dim, keepdim, dtype=dtype)


def max(x: Tensor, dim=None, keepdim=False):  # noqa: A001
    """Largest value; ``max(x, dim)`` gives (values, indices); ``max(a, b)`` elementwise."""
    return x.max(dim, keepdim)


def min(x: Tensor, dim=None, keepdim=False):  # noqa: A001
    """Smallest value; ``min(x, dim)`` gives (values, indices); ``min(a, b)`` elementwise."""
    return x.min(dim, keepdim)


def argmax(x: Tensor, dim=None, keepdim=False) -> Tensor:
    """Index of the largest value."""
    return x.argmax(dim, keepdim)


def argmin(x: Tensor, dim=None, keepdim=False) -> Tensor:
    """Index of the smallest value."""
    return x.argmin(dim, keepdim)


def where(condition: Tensor, x, y) -> Tensor:
    """``x`` where ``condition`` holds, else ``y``."""
    return apply("where", condition, x, y)


def clamp(x: Tensor, min=None, max=None) -> Tensor:  # noqa: A002
    """Limit values to [min, max]."""
    return x.clamp(min, max)


def maximum(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise maximum."""
    return apply("maximum", a, b)


def minimum(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise minimum."""
    return apply("minimum", a, b)


def reshape(x: Tensor, shape) -> Tensor:
    """Same data, new shape."""
    return x.reshape(shape)


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge a range of dimensions."""
    return x.flatten(start_dim, end_dim)


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap two dimensions."""
    return x.transpose(dim0, dim1)


def permute(x: Tensor, dims) -> Tensor:
    """Reorder dimensions."""
    return x.permute(*dims)


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dimension."""
    return x.unsqueeze(dim)


def squeeze(x: Tensor, dim=None) -> Tensor:
    """Drop size-1 dimensions."""
    return x.squeeze(dim)


def allclose(a: Tensor, b: Tensor, rtol: float = 1e-5, atol: float = 1e-8,
             equal_nan: bool = False) -> bool:
    """True when every element of ``a`` is close to ``b``."""
    xp = a._xp
    return bool(xp.allclose(a._data, b._data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def equal(a: Tensor, b: Tensor) -> bool:
    """True when ``a`` and ``b`` have the same shape and elements."""
    return tuple(a.shape) == tuple(b.shape) and bool((a._data == b._data).all())


def numel(x: Tensor) -> int:
    """Number of elements."""
    return x.numel()
