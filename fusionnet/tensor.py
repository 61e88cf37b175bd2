"""``Tensor``: an ndarray (NumPy or CuPy) with PyTorch's interface and autograd.

Every computing method is a thin call into :func:`fusionnet.dispatch.apply`
with an op name from the table; this file holds no op semantics, only the
Python surface (argument forms, operators, in-place rebinding, printing).
"""
from __future__ import annotations

import numpy as np

from . import autograd, dispatch
from ._format import format_tensor
from .device import CPU, array_module, as_device, device_of_array
from .dtypes import as_dtype, dtype, float32, unsupported
from .ops import decode_key, encode_key
from .ops.rules import normalize_dim
from .tensor_ops import TensorOps

__all__ = ["Tensor", "Size", "is_tensor", "DATA_VERSION"]

apply = dispatch.apply


class Size(tuple):
    """A tensor's shape: a tuple that prints as ``fusionnet.Size([2, 3])``."""

    def __repr__(self) -> str:
        return f"fusionnet.Size({list(self)})"

    def numel(self) -> int:
        """Number of elements a tensor of this shape holds."""
        n = 1
        for s in self:
            n *= s
        return n


#: Bumped whenever an existing tensor's storage is replaced (``t.data = ...``,
#: ``Module.to``). Compiled forwards keep the arrays of their parameters and only
#: re-read them when this moved; so storage must only be rebound via ``_set_data``.
DATA_VERSION = [0]

def is_tensor(obj) -> bool:
    """True if ``obj`` is a fusionnet Tensor (or Parameter)."""
    return isinstance(obj, Tensor)


def parse_to_args(args, kwargs) -> tuple:
    """``(device, dtype, copy)`` from the forms ``Tensor.to`` and ``Module.to`` accept:
    a device, a dtype, both, or another tensor; ``device=``, ``dtype=``, ``copy=``."""
    kwargs = dict(kwargs)
    dev, dt = kwargs.pop("device", None), kwargs.pop("dtype", None)
    copy = kwargs.pop("copy", False)
    kwargs.pop("non_blocking", None)
    if kwargs:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
    for a in args:
        if isinstance(a, Tensor):
            dev, dt = a.device, a.dtype
        elif (isinstance(a, (dtype, np.dtype)) or a in (float, int, bool)
              or (isinstance(a, type) and issubclass(a, np.generic))):  # np.float16, ...
            dt = a
        else:
            dev = a
    return dev, dt, copy


def _infer_array(data, dtype_, xp):
    """An ndarray from Python data, with PyTorch's default dtypes."""
    if isinstance(data, Tensor):
        data = data._data
    if isinstance(data, (list, tuple)) and any(isinstance(x, Tensor) for x in _flat(data)):
        data = _untensor(data)
    from_array = (isinstance(data, (np.ndarray, np.generic))
                  or hasattr(data, "__cuda_array_interface__"))
    arr = xp.asarray(data)
    if arr.dtype.kind not in "fiub":  # complex, strings, objects, dates: say what works
        raise unsupported(arr.dtype, "fusionnet.tensor")
    if dtype_ is not None:
        target = as_dtype(dtype_).np
    elif not from_array and arr.dtype.kind == "f":
        target = float32.np  # Python floats make float32 tensors
    elif not from_array and arr.dtype.kind in "iu":
        target = np.dtype(np.int64)
    else:  # arrays keep their dtype when a tensor can hold it (float16 -> float32...)
        target = as_dtype(arr.dtype).np
    return arr if arr.dtype == target else arr.astype(target)


def _flat(data):
    for x in data:
        if isinstance(x, (list, tuple)):
            yield from _flat(x)
        else:
            yield x


def _untensor(data):
    if isinstance(data, Tensor):
        return data.item() if data.numel() == 1 and data.ndim == 0 else data.tolist()
    if isinstance(data, (list, tuple)):
        return [_untensor(x) for x in data]
    return data


class Tensor(TensorOps):
    """A multi-dimensional array with autograd, on a device (``cpu`` or ``cuda:N``).

    >>> x = Tensor([[1.0, 2.0]], requires_grad=True)
    >>> (x * x).sum().backward(); x.grad
    tensor([[2., 4.]])
    """

    # _view: None, or how this tensor views a base (autograd._View); _views: weak
    # references to views of this tensor that may need a gradient later (set lazily).
    __slots__ = ("_data", "requires_grad", "grad", "_ctx", "_version", "_view", "_views",
                 "__weakref__")

    def __init__(self, data=None, dtype=None, device=None, requires_grad=False):
        dev = as_device(device)
        if data is None:
            data = []
        self._data = _infer_array(data, dtype, array_module(dev))
        if device is not None and device_of_array(self._data) != dev:
            self._data = apply("to_device", Tensor._wrap(self._data), device=str(dev))._data
        self.requires_grad = False
        self.grad = None
        self._ctx = None
        self._version = [0]
        self._view = None
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, array, device=None, version=None):
        """A tensor around ``array`` without copying (internal fast path)."""
        t = object.__new__(cls)
        t._data = array
        t.requires_grad = False
        t.grad = None
        t._ctx = None
        t._version = [0] if version is None else version
        t._view = None
        return t

    # ---- basic properties ------------------------------------------------------------

    @property
    def _xp(self):
        return np if type(self._data) is np.ndarray else array_module(self.device)

    @property
    def _device(self):
        return CPU if type(self._data) is np.ndarray else device_of_array(self._data)

    @property
    def device(self):
        """The device this tensor lives on."""
        return self._device

    @property
    def is_cuda(self) -> bool:
        """True when on a CUDA device."""
        return self._device.type == "cuda"

    @property
    def shape(self) -> Size:
        """The tensor's shape."""
        dispatch.note_shape_read(self)
        return Size(self._data.shape)

    def size(self, dim: int | None = None):
        """Shape (as :class:`Size`), or the size of one dimension."""
        dispatch.note_shape_read(self)
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[normalize_dim(dim, self._data.ndim)]

    @property
    def dtype(self) -> dtype:
        """The element type."""
        return as_dtype(self._data.dtype)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self._data.ndim

    def dim(self) -> int:
        """Number of dimensions."""
        return self._data.ndim

    def numel(self) -> int:
        """Number of elements."""
        dispatch.note_shape_read(self)
        return int(self._data.size)

    nelement = numel

    def element_size(self) -> int:
        """Bytes per element."""
        return self._data.itemsize

    @property
    def is_leaf(self) -> bool:
        """True unless this tensor was computed by a recorded op."""
        return autograd.history(self) is None

    @property
    def grad_fn(self):
        """The autograd node that produced this tensor (None for leaves)."""
        return autograd.history(self)

    @property
    def _base(self):
        """The tensor this one is a view of (None if it is not a view), as in PyTorch."""
        return None if self._view is None else self._view.base

    def _is_view(self) -> bool:
        """True if this tensor is a view of another one (shares its storage)."""
        return self._view is not None

    def is_floating_point(self) -> bool:
        """True for float dtypes."""
        return self._data.dtype.kind == "f"

    # ---- autograd --------------------------------------------------------------------

    def requires_grad_(self, requires_grad: bool = True):
        """Set whether gradients are accumulated into this leaf; returns self."""
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables; "
                               "use .detach() for a non-leaf tensor")
        if requires_grad and self._data.dtype.kind != "f":
            raise RuntimeError(f"only tensors of floating point dtype can require gradients, "
                               f"got {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(self)`` after each backward accumulates into this leaf's ``.grad``;
        returns a handle whose ``remove()`` unregisters it."""
        return autograd.register_post_accumulate_grad_hook(self, hook)

    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Accumulate the gradient of this tensor into the ``.grad`` of every leaf."""
        if create_graph:
            raise NotImplementedError("create_graph=True (higher-order gradients) is not "
                                      "supported yet")
        autograd.backward(self, gradient, retain_graph=bool(retain_graph))

    def detach(self):
        """A tensor sharing this one's data and version counter, cut from the autograd
        graph (an in-place op on it does not change this tensor's history)."""
        out = Tensor._wrap(self._data, version=self._version)
        dispatch.note_untracked_alias(out, self)
        return out

    def detach_(self):
        """Cut this tensor from the autograd graph in place."""
        self._ctx = None
        self.requires_grad = False
        return self

    @property
    def data(self):
        """This tensor's data as a tensor that shares storage and is not tracked; unlike
        :meth:`detach` it has its own version counter, so in-place writes through it go
        unnoticed by autograd (as in PyTorch)."""
        out = Tensor._wrap(self._data)
        dispatch.note_untracked_alias(out, self)
        return out

    @data.setter
    def data(self, value):
        if not isinstance(value, Tensor):
            raise TypeError("Tensor.data must be set to a Tensor")
        self._set_data(value._data)

    def _set_data(self, array) -> None:
        """Replace this tensor's storage (the one place that may; see DATA_VERSION)."""
        DATA_VERSION[0] += 1
        self._data = array
        self._view = None  # new storage: no longer a view of anything

    # ---- conversion to Python and NumPy ----------------------------------------------

    def _host(self) -> np.ndarray:
        return self._data if type(self._data) is np.ndarray else self._data.get()

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array sharing memory (CPU tensors without grad only)."""
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. "
                               "Use tensor.detach().numpy() instead.")
        dispatch.note_python_value(self, "numpy()")
        if self._device.type != "cpu":
            raise TypeError(f"can't convert {self._device} device type tensor to numpy. "
                            "Use Tensor.cpu() to copy the tensor to host memory first.")
        return self._data

    def __array__(self, dtype=None, copy=None):
        dispatch.note_python_value(self, "conversion to a NumPy array")
        arr = self._host()
        return arr if dtype is None else arr.astype(dtype)

    def _python_value(self, why: str):
        dispatch.note_python_value(self, why)
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted "
                               f"to a Python scalar ({why}); only one-element tensors can")
        return self._host().reshape(()).item()

    def item(self):
        """The value of a one-element tensor as a Python number."""
        return self._python_value("item()")

    def tolist(self):
        """The data as (nested) Python lists."""
        dispatch.note_python_value(self, "tolist()")
        return self._host().tolist()

    def __bool__(self) -> bool:
        if self._data.size != 1:
            dispatch.note_python_value(self, "bool()")
            raise RuntimeError(f"Boolean value of Tensor with more than one value is "
                               f"ambiguous (shape {tuple(self.shape)})")
        return bool(self._python_value("bool()"))

    def __float__(self) -> float:
        return float(self._python_value("float()"))

    def __int__(self) -> int:
        return int(self._python_value("int()"))

    def __index__(self) -> int:
        if self._data.dtype.kind not in "iu":
            raise TypeError("only integer tensors of a single element can be converted to "
                            "an index")
        return int(self._python_value("index"))

    def __len__(self) -> int:
        dispatch.note_shape_read(self)
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        dispatch.note_shape_read(self)  # the loop runs once per row: the size is baked in
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        suffixes = []
        if self._device.type != "cpu":
            suffixes.append(f"device='{self._device}'")
        try:
            grad_fn = autograd.history(self)
        except RuntimeError:  # a no_grad view whose base changed: printable all the same
            grad_fn = self._ctx
        if grad_fn is not None:
            suffixes.append(f"grad_fn=<{grad_fn.name()}>")
        elif self.requires_grad:
            suffixes.append("requires_grad=True")
        return format_tensor(self._host(), suffixes)

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        if self._data.ndim == 0 and spec:
            return format(self.item(), spec)
        return repr(self)

    # ---- devices and dtypes ----------------------------------------------------------

    def to(self, *args, **kwargs):
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)`` or ``to(other_tensor)``."""
        dev, dt, copy = parse_to_args(args, kwargs)
        out = self
        if dev is not None:
            target = as_device(dev)
            if target != self._device:
                out = apply("to_device", out, device=str(target))
        if dt is not None and as_dtype(dt) != out.dtype:
            out = apply("cast", out, dtype=as_dtype(dt).np)
        if copy and out is self:
            out = apply("copy", self)
        return out

    def cuda(self, device=None):
        """This tensor on a CUDA device (itself if already there)."""
        if device is None:
            device = "cuda"
        elif isinstance(device, int):
            device = f"cuda:{device}"
        return self.to(device)

    def cpu(self):
        """This tensor on the CPU (itself if already there)."""
        return self.to("cpu")

    def float(self):
        """Convert to float32."""
        return self.to(float32)

    def double(self):
        """Convert to float64."""
        return self.to(as_dtype("float64"))

    def long(self):
        """Convert to int64."""
        return self.to(as_dtype("int64"))

    def int(self):
        """Convert to int32."""
        return self.to(as_dtype("int32"))

    def bool(self):
        """Convert to bool."""
        return self.to(as_dtype("bool"))

    def type_as(self, other):
        """Convert to ``other``'s dtype."""
        return self.to(other.dtype)

    def clone(self):
        """A copy with its own storage (differentiable)."""
        return apply("copy", self)

    def contiguous(self):
        """This tensor (arrays are always usable as they are)."""
        return self

    # ---- in-place operations -------------------------------------------------------

    def _inplace(self, name, *others, **attrs):
        """Compute op ``name`` and write the result into this tensor's storage.

        Autograd sees the old value as the op's input (an alias sharing the storage,
        version counter and history). The op's node then becomes this tensor's
        history — or, when this tensor is a view, its base's (see ``autograd``).
        Histories recorded before are untouched, so earlier uses keep their gradient.
        """
        hook = dispatch.trace_hook()
        if hook is not None:  # tracing: record a pure op and rebind this tensor to it
            hook.on_inplace(self, apply(name, self, *others, **attrs))
            return self
        view = autograd.check_inplace(self)
        old = autograd.alias(self)
        result = apply(name, old, *others, **attrs)
        if not np.can_cast(result._data.dtype, self._data.dtype, casting="same_kind"):
            raise RuntimeError(f"result type {as_dtype(result._data.dtype)} can't be cast to "
                               f"the desired output type {self.dtype} of an in-place "
                               f"{name}")
        if result._data.shape != self._data.shape:
            raise RuntimeError(f"output with shape {list(self.shape)} doesn't match the "
                               f"broadcast shape {list(result.shape)} of in-place {name}")
        node = result._ctx
        if node is not None:
            autograd.prepare_inplace(node, old, view)
        try:
            self._xp.copyto(self._data, result._data, casting="unsafe")
        except ValueError as err:
            raise RuntimeError(f"in-place {name} on a read-only tensor: {err}") from None
        self._version[0] += 1
        if node is not None:
            autograd.commit_inplace(self, view, result)
        return self

    def __iadd__(self, other):
        return self._inplace("add", other)

    def __isub__(self, other):
        return self._inplace("sub", other)

    def __imul__(self, other):
        return self._inplace("mul", other)

    def __itruediv__(self, other):
        return self._inplace("div", other)

    def add_(self, other, alpha=1):
        """In-place ``self += alpha * other``."""
        return self._inplace("add", other if alpha == 1 else other * alpha)

    def sub_(self, other, alpha=1):
        """In-place ``self -= alpha * other``."""
        return self._inplace("sub", other if alpha == 1 else other * alpha)

    def mul_(self, other):
        """In-place ``self *= other``."""
        return self._inplace("mul", other)

    def div_(self, other):
        """In-place ``self /= other``."""
        return self._inplace("div", other)

    def clamp_(self, min=None, max=None):  # noqa: A002
        """In-place clamp."""
        return self._inplace("clamp", min=min, max=max)

    def relu_(self):
        """In-place ReLU."""
        return self._inplace("relu")

    def copy_(self, src):
        """Copy ``src`` (broadcast) into this tensor's storage."""
        self[...] = src
        return self

    def fill_(self, value):
        """Fill with ``value``."""
        self[...] = value
        return self

    def zero_(self):
        """Fill with zeros."""
        return self.fill_(0)

    def _fill_random(self, sample):
        from . import random as _random  # noqa: PLC0415
        gen = _random.generator(self._xp)
        self[...] = Tensor._wrap(sample(gen).astype(self._data.dtype, copy=False))
        return self

    def uniform_(self, a: float = 0.0, b: float = 1.0):
        """Fill with samples from U(a, b)."""
        return self._fill_random(lambda g: a + (b - a) * g.random(self._data.shape))

    def normal_(self, mean: float = 0.0, std: float = 1.0):
        """Fill with samples from N(mean, std**2)."""
        return self._fill_random(lambda g: mean + std * g.standard_normal(self._data.shape))

    # ---- indexing ------------------------------------------------------------------

    def __getitem__(self, key):
        key, index = encode_key(_listy(key, self), is_tensor)
        return apply("getitem", self, *index, key=key)

    def __setitem__(self, key, value):
        enc, index = encode_key(_listy(key, self), is_tensor)
        view = self._view
        needs_graph = dispatch.trace_hook() is not None or (autograd.is_grad_enabled() and (
            self.requires_grad or (isinstance(value, Tensor) and value.requires_grad)
            or (view is not None and view.base.requires_grad)))
        if needs_graph:
            self._inplace("setitem", value, *index, key=enc)
            return
        if view is not None:
            autograd.check_inplace(self)  # e.g. a write into an expanded view
        # Plain write into storage: nothing to record.
        if isinstance(value, Tensor):
            if value._device != self._device:
                raise RuntimeError(f"setitem: value is on {value._device} but the tensor is on "
                                   f"{self._device}")
            value = value._data
        elif not isinstance(value, (bool, int, float, np.number, np.bool_)):
            value = _infer_array(value, None, self._xp)
        for t in index:
            if t._device != self._device:
                raise RuntimeError(f"setitem: index is on {t._device} but the tensor is on "
                                   f"{self._device}")
        try:
            self._data[decode_key(enc, [t._data for t in index])] = value
        except (ValueError, IndexError) as err:
            raise type(err)(f"fusionnet.setitem: {err}") from None
        self._version[0] += 1


def _listy(key, like):
    """Lists and arrays used as indices become index tensors (as in PyTorch)."""
    def conv(k):
        if isinstance(k, (list, np.ndarray)):
            return Tensor(k, device=like._device)
        return k
    if isinstance(key, tuple):
        return tuple(conv(k) for k in key)
    return conv(key)
