"""The computing methods and operators of :class:`~fusionnet.tensor.Tensor`.

Every method here is one call into the op table (``dispatch.apply``); this
mixin only spells out PyTorch's argument forms. It is the single definition:
the top-level functions (``fusionnet.exp(x)``, ``fusionnet.sum(x, dim)``...) are
built from these methods in ``functions.py``. ``Tensor`` in ``tensor.py`` owns
storage, autograd state, conversions, printing, indexing and in-place ops.
"""
from __future__ import annotations

import functools
import inspect
from collections import namedtuple

import numpy as np

from . import dispatch
from .ops.rules import normalize_dim

__all__ = ["TensorOps", "ValuesIndices", "shape_args", "numpy_aliases"]

apply = dispatch.apply

#: What ``max(dim)`` / ``min(dim)`` return, as in PyTorch.
ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def shape_args(args, name="shape"):
    """Accept ``f(2, 3)``, ``f((2, 3))`` and ``f([2, 3])`` alike."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    try:
        return tuple(int(a) for a in args)
    except TypeError:
        raise TypeError(f"{name} must be integers, got {args!r}") from None


#: NumPy's argument names that PyTorch also accepts, and the names they stand for.
_ALIASES = {"axis": "dim", "keepdims": "keepdim"}


def numpy_aliases(fn):
    """Let ``fn`` also take ``axis=`` for ``dim=`` and ``keepdims=`` for ``keepdim=``, as
    PyTorch's reductions, ``cat`` and ``stack`` do."""
    params = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    names = [f"``{a}=``" for a, n in _ALIASES.items() if n in params]

    @functools.wraps(fn)
    def with_aliases(*args, **kwargs):
        if kwargs and not _ALIASES.keys().isdisjoint(kwargs):
            for alias, name in _ALIASES.items():
                if alias in kwargs:
                    if name in kwargs:
                        raise TypeError(f"{fn.__name__}() got both {name!r} and its alias "
                                        f"{alias!r}")
                    kwargs[name] = kwargs.pop(alias)
        return fn(*args, **kwargs)

    verb = "are" if len(names) > 1 else "is"
    with_aliases.__doc__ = (f"{inspect.cleandoc(fn.__doc__)}\n\n"
                            f"NumPy's {' and '.join(names)} {verb} accepted too.")
    return with_aliases


def _ndim(x) -> int:
    return x.ndim if hasattr(x, "_data") else np.ndim(x)


class TensorOps:
    """Math, reductions, layout methods and operators (mixed into ``Tensor``)."""

    __slots__ = ()

    # ---- table ops as methods -------------------------------------------------------

    def _op(self, name, *others, **attrs):
        """Apply table op ``name`` with this tensor as first input."""
        return apply(name, self, *others, **attrs)

    def abs(self):
        """Absolute value."""
        return apply("abs", self)

    def sign(self):
        """Sign: -1, 0 or 1 (0 for NaN, as in PyTorch)."""
        return apply("sign", self)

    def neg(self):
        """Negation."""
        return apply("neg", self)

    def exp(self):
        """e to the x."""
        return apply("exp", self)

    def log(self):
        """Natural logarithm."""
        return apply("log", self)

    def sqrt(self):
        """Square root."""
        return apply("sqrt", self)

    def sigmoid(self):
        """Logistic sigmoid."""
        return apply("sigmoid", self)

    def tanh(self):
        """Hyperbolic tangent."""
        return apply("tanh", self)

    def relu(self):
        """max(x, 0)."""
        return apply("relu", self)

    def erf(self):
        """Gauss error function."""
        return apply("erf", self)

    def sin(self):
        """Sine."""
        return apply("sin", self)

    def cos(self):
        """Cosine."""
        return apply("cos", self)

    def square(self):
        """self * self."""
        return apply("mul", self, self)

    def clamp(self, min=None, max=None):  # noqa: A002 - PyTorch's names
        """Limit values to [min, max] (either bound may be None)."""
        if min is None and max is None:
            raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
        return apply("clamp", self, min=min, max=max)

    clip = clamp

    def pow(self, exponent):
        """self ** exponent."""
        return apply("pow", self, exponent)

    def add(self, other, alpha=1):
        """self + alpha * other."""
        return apply("add", self, other if alpha == 1 else other * alpha)

    def sub(self, other, alpha=1):
        """self - alpha * other."""
        return apply("sub", self, other if alpha == 1 else other * alpha)

    def mul(self, other):
        """self * other."""
        return apply("mul", self, other)

    def div(self, other):
        """self / other."""
        return apply("div", self, other)

    def maximum(self, other):
        """Elementwise maximum."""
        return apply("maximum", self, other)

    def minimum(self, other):
        """Elementwise minimum."""
        return apply("minimum", self, other)

    def where(self, condition, other):
        """``self`` where ``condition`` holds, else ``other``."""
        return apply("where", condition, self, other)

    def logical_and(self, other):
        """Elementwise and (bool)."""
        return apply("logical_and", self, other)

    def logical_or(self, other):
        """Elementwise or (bool)."""
        return apply("logical_or", self, other)

    def logical_not(self):
        """Elementwise not (bool)."""
        return apply("logical_not", self)

    def eq(self, other):
        """Elementwise ==."""
        return apply("eq", self, other)

    @numpy_aliases
    def softmax(self, dim):
        """Softmax along ``dim``."""
        from .nn import functional as F  # noqa: PLC0415 - nn builds on tensor
        return F.softmax(self, dim)

    @numpy_aliases
    def log_softmax(self, dim):
        """Log-softmax along ``dim``."""
        from .nn import functional as F  # noqa: PLC0415
        return F.log_softmax(self, dim)

    # reductions

    @numpy_aliases
    def sum(self, dim=None, keepdim=False, dtype=None):
        """Sum over ``dim`` (an int or a tuple; all dims if None), computed in ``dtype``."""
        if dtype is None:
            return apply("sum", self, dim=dim, keepdim=keepdim)
        # Integer sums give int64 whatever the input: cast again for an integer ``dtype``.
        return apply("sum", self.to(dtype), dim=dim, keepdim=keepdim).to(dtype)

    @numpy_aliases
    def mean(self, dim=None, keepdim=False, dtype=None):
        """Mean over ``dim`` (an int or a tuple; all dims if None), computed in ``dtype``."""
        src = self if dtype is None else self.to(dtype)
        return apply("mean", src, dim=dim, keepdim=keepdim)

    def _extreme(self, name, dim, keepdim, other):
        if other is None and hasattr(dim, "_data"):  # x.max(other_tensor)
            dim, other = None, dim
        if other is not None:
            if dim is not None:
                raise TypeError(f"{name}() takes either dim or other, not both")
            return apply("maximum" if name == "max" else "minimum", self, other)
        # PyTorch's max() shares the gradient among ties (NaN ties NaN); max(dim) gives it
        # all to the index it returns (amax/amin use the row's default, "even").
        if dim is None:
            return apply(name, self, ties="even_nan")
        values = apply(name, self, dim=dim, keepdim=keepdim, ties="index")
        indices = apply("arg" + name, self, dim=dim, keepdim=keepdim)
        return ValuesIndices(values, indices)

    @numpy_aliases
    def max(self, dim=None, keepdim=False, other=None):
        """Largest value; with ``dim``, ``(values, indices)`` along it; with a tensor
        (``x.max(y)``, ``other=y``), the elementwise maximum."""
        return self._extreme("max", dim, keepdim, other)

    @numpy_aliases
    def min(self, dim=None, keepdim=False, other=None):
        """Smallest value; with ``dim``, ``(values, indices)`` along it; with a tensor
        (``x.min(y)``, ``other=y``), the elementwise minimum."""
        return self._extreme("min", dim, keepdim, other)

    @numpy_aliases
    def any(self, dim=None, keepdim=False):
        """True where any element along ``dim`` is non-zero (bool)."""
        return (self != 0).sum(dim, keepdim) > 0

    @numpy_aliases
    def all(self, dim=None, keepdim=False):
        """True where every element along ``dim`` is non-zero (bool)."""
        return (self == 0).sum(dim, keepdim) == 0

    @numpy_aliases
    def amax(self, dim=None, keepdim=False):
        """Largest values over ``dim`` (no indices)."""
        return apply("max", self, dim=dim, keepdim=keepdim)

    @numpy_aliases
    def amin(self, dim=None, keepdim=False):
        """Smallest values over ``dim`` (no indices)."""
        return apply("min", self, dim=dim, keepdim=keepdim)

    @numpy_aliases
    def argmax(self, dim=None, keepdim=False):
        """Index of the largest value (into the flattened tensor if dim is None)."""
        return apply("argmax", self, dim=dim, keepdim=keepdim)

    @numpy_aliases
    def argmin(self, dim=None, keepdim=False):
        """Index of the smallest value (into the flattened tensor if dim is None)."""
        return apply("argmin", self, dim=dim, keepdim=keepdim)

    @numpy_aliases
    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        """The ``p``-norm over ``dim`` (all elements if None): ``"fro"`` and 2 the Euclidean
        norm, 1 the sum of magnitudes, ``inf``/``-inf`` the largest/smallest magnitude, 0 the
        number of non-zeros, any other number ``sum(|x|**p) ** (1/p)``."""
        x = self if dtype is None else self.to(dtype)
        if x._data.dtype.kind != "f":
            raise RuntimeError(f"norm(): input dtype should be floating point, got {x.dtype}")
        if p in ("fro", 2, 2.0):
            return apply("sqrt", apply("sum", apply("mul", x, x), dim=dim, keepdim=keepdim))
        if p in (1, 1.0):
            return apply("sum", apply("abs", x), dim=dim, keepdim=keepdim)
        if p == float("inf"):
            return apply("max", apply("abs", x), dim=dim, keepdim=keepdim)
        if p == float("-inf"):
            return apply("min", apply("abs", x), dim=dim, keepdim=keepdim)
        if p == 0:
            return apply("sum", apply("ne", x, 0), dim=dim, keepdim=keepdim).to(x.dtype)
        if isinstance(p, str):
            raise RuntimeError(f"norm(): p={p!r} is not supported (numbers and 'fro' are)")
        powered = apply("pow", apply("abs", x), float(p))
        return apply("pow", apply("sum", powered, dim=dim, keepdim=keepdim), 1.0 / float(p))

    def allclose(self, other, rtol: float = 1e-5, atol: float = 1e-8,
                 equal_nan: bool = False) -> bool:
        """True when every element is close to ``other``'s: ``|a - b| <= atol + rtol * |b|``."""
        return bool(self._xp.allclose(self._data, other._data, rtol=rtol, atol=atol,
                                      equal_nan=equal_nan))

    def equal(self, other) -> bool:
        """True when ``other`` has the same shape and elements."""
        return tuple(self.shape) == tuple(other.shape) and bool((self._data == other._data).all())

    # layout

    def reshape(self, *shape):
        """Same data, new shape (one -1 allowed)."""
        # Always a new view, as in PyTorch (even to the same shape: it has a grad_fn).
        return apply("reshape", self, shape=shape_args(shape))

    def view(self, *shape):
        """Same data, new shape; like PyTorch, refuses when that would need a copy."""
        out = self.reshape(*shape)
        if (out is not self and out._data.size
                and not self._xp.may_share_memory(out._data, self._data)):
            raise RuntimeError("view size is not compatible with input tensor's size and "
                               "stride (at least one dimension spans across two contiguous "
                               "subspaces). Use .reshape(...) instead.")
        return out

    def view_as(self, other):
        """:meth:`view` with ``other``'s shape."""
        return self.view(other.shape)

    def reshape_as(self, other):
        """Reshape to ``other``'s shape."""
        return self.reshape(other.shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        """Merge dims ``start_dim..end_dim`` into one."""
        n = self._data.ndim
        s, e = normalize_dim(start_dim, n), normalize_dim(end_dim, n)
        if n == 0:
            return self.reshape(1)
        if s > e:
            raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
        if s == e:
            return self  # nothing to merge: PyTorch returns the input itself
        shape = self._data.shape
        merged = 1
        for d in shape[s:e + 1]:
            merged *= d
        return self.reshape(shape[:s] + (merged,) + shape[e + 1:])

    def permute(self, *dims):
        """Reorder dimensions."""
        return apply("permute", self, dims=shape_args(dims, "dims"))

    def transpose(self, dim0: int, dim1: int):
        """Swap two dimensions."""
        n = self._data.ndim
        d0, d1 = normalize_dim(dim0, n), normalize_dim(dim1, n)
        if n < 2:
            return self
        dims = list(range(n))
        dims[d0], dims[d1] = d1, d0
        return apply("permute", self, dims=tuple(dims))

    swapaxes = transpose

    def t(self):
        """Transpose a tensor of rank <= 2."""
        if self._data.ndim > 2:
            raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is "
                               f"{self._data.ndim}D")
        return self if self._data.ndim < 2 else self.transpose(0, 1)

    @property
    def T(self):  # noqa: N802 - PyTorch's name
        """All dimensions reversed."""
        if self._data.ndim < 2:
            return self
        return apply("permute", self, dims=tuple(range(self._data.ndim - 1, -1, -1)))

    @numpy_aliases
    def unsqueeze(self, dim: int):
        """Insert a size-1 dimension at ``dim``."""
        shape = list(self._data.shape)
        shape.insert(normalize_dim(dim, len(shape) + 1), 1)
        return apply("reshape", self, shape=tuple(shape))

    @numpy_aliases
    def squeeze(self, dim=None):
        """Drop size-1 dimensions (only ``dim`` if given)."""
        shape = self._data.shape
        if dim is None:
            new = tuple(s for s in shape if s != 1)
        else:
            dims = {normalize_dim(d, len(shape))
                    for d in ((dim,) if hasattr(dim, "__index__") else dim)}
            new = tuple(s for i, s in enumerate(shape) if not (i in dims and s == 1))
        return apply("reshape", self, shape=new)  # a new view even when nothing drops

    def expand(self, *sizes):
        """Broadcast to a larger shape (-1 keeps a dim) without copying."""
        return apply("expand", self, shape=shape_args(sizes, "sizes"))

    def expand_as(self, other):
        """Broadcast to ``other``'s shape."""
        return self.expand(other.shape)

    def matmul(self, other):
        """Matrix product."""
        return apply("matmul", self, other)

    def mm(self, mat2):
        """Product of two matrices (both 2-D)."""
        if self._data.ndim != 2 or _ndim(mat2) != 2:
            raise RuntimeError(f"mm: expected 2-D tensors, got shapes {tuple(self.shape)} and "
                               f"{tuple(mat2.shape)}")
        return apply("matmul", self, mat2)

    def bmm(self, mat2):
        """Batched matrix product of two 3-D tensors (b, n, m) @ (b, m, p)."""
        if self._data.ndim != 3 or _ndim(mat2) != 3:
            raise RuntimeError(f"bmm: expected 3-D tensors, got shapes {tuple(self.shape)} and "
                               f"{tuple(mat2.shape)}")
        if self._data.shape[0] != mat2.shape[0]:
            raise RuntimeError(f"bmm: batch sizes differ: {self._data.shape[0]} and "
                               f"{mat2.shape[0]}")
        return apply("matmul", self, mat2)

    def repeat(self, *sizes):
        """Tile the tensor ``sizes[i]`` times along dim i (leading new dims allowed)."""
        reps = shape_args(sizes, "sizes")
        shape = self._data.shape
        if len(reps) < len(shape):
            raise RuntimeError("Number of dimensions of repeat dims can not be smaller than "
                               "number of dimensions of tensor")
        shape = (1,) * (len(reps) - len(shape)) + tuple(shape)
        # (s0, s1) -> (1, s0, 1, s1) -> expand (r0, s0, r1, s1) -> (r0*s0, r1*s1): table ops,
        # so the gradient (expand's: a sum over the copies) comes for free.
        pairs = tuple(d for s in shape for d in (1, s))
        tiled = tuple(d for r, s in zip(reps, shape) for d in (r, s))
        out = apply("reshape", self, shape=pairs)
        out = apply("expand", out, shape=tiled)
        return apply("reshape", out, shape=tuple(r * s for r, s in zip(reps, shape)))

    def type(self, dtype=None):
        """With no argument, the tensor type's name (``"fusionnet.FloatTensor"``); with a dtype
        (or such a name), this tensor converted to it (itself if it already has it)."""
        from .dtypes import as_dtype  # noqa: PLC0415 - dtypes is light; kept next to its use
        names = {"float32": "FloatTensor", "float64": "DoubleTensor", "int64": "LongTensor",
                 "int32": "IntTensor", "bool": "BoolTensor"}
        if dtype is None:
            return f"fusionnet.{names[self._data.dtype.name]}"
        if isinstance(dtype, str):
            by_name = {v: k for k, v in names.items()}
            short = dtype.rsplit(".", 1)[-1]
            if short not in by_name:
                raise ValueError(f"invalid type: {dtype!r}")
            dtype = by_name[short]
        return self.to(as_dtype(dtype))

    # ---- operators ------------------------------------------------------------------

    def __add__(self, other):
        return apply("add", self, other)

    def __radd__(self, other):
        return apply("add", other, self)

    def __sub__(self, other):
        return apply("sub", self, other)

    def __rsub__(self, other):
        return apply("sub", other, self)

    def __mul__(self, other):
        return apply("mul", self, other)

    def __rmul__(self, other):
        return apply("mul", other, self)

    def __truediv__(self, other):
        return apply("div", self, other)

    def __rtruediv__(self, other):
        return apply("div", other, self)

    def __pow__(self, other):
        return apply("pow", self, other)

    def __rpow__(self, other):
        return apply("pow", other, self)

    def __matmul__(self, other):
        return apply("matmul", self, other)

    def __rmatmul__(self, other):
        return apply("matmul", other, self)

    def __neg__(self):
        return apply("neg", self)

    def __pos__(self):
        return self

    def __abs__(self):
        return apply("abs", self)

    def __eq__(self, other):
        return apply("eq", self, other)

    def __ne__(self, other):
        return apply("ne", self, other)

    def __lt__(self, other):
        return apply("lt", self, other)

    def __le__(self, other):
        return apply("le", self, other)

    def __gt__(self, other):
        return apply("gt", self, other)

    def __ge__(self, other):
        return apply("ge", self, other)

    def __and__(self, other):
        return apply("logical_and", self, other)

    __rand__ = __and__

    def __or__(self, other):
        return apply("logical_or", self, other)

    __ror__ = __or__

    def __invert__(self):
        if self._data.dtype.kind != "b":
            raise TypeError("~ is only supported on bool tensors here")
        return apply("logical_not", self)
