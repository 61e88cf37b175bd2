"""``Parameter`` and ``UninitializedParameter``: tensors that a Module registers as its state."""
from __future__ import annotations

from ..dtypes import as_dtype, float32
from ..factories import empty
from ..tensor import Tensor

__all__ = ["Parameter", "UninitializedParameter", "is_lazy"]


class Parameter(Tensor):
    """A tensor that is a module parameter: assigning one to a Module attribute registers it.

    It shares storage with the tensor it is made from and requires grad by default.

    >>> p = Parameter(fusionnet.zeros(2)); p.requires_grad
    True
    """

    # No __slots__ here on purpose: subclasses of Parameter may carry a __dict__,
    # and UninitializedParameter swaps its class to Parameter when materialised.

    def __new__(cls, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter expects a Tensor, got {type(data).__name__}")
        # Share the storage and version counter: Parameter(t) aliases t, as in PyTorch.
        p = cls._wrap(data._data, version=data._version)
        if requires_grad:
            p.requires_grad_(True)
        return p

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True):
        pass  # everything happens in __new__ (Tensor.__init__ would re-create the data)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + Tensor.__repr__(self)

    __str__ = __repr__

    def __reduce_ex__(self, protocol):
        return (_rebuild_parameter, (self.detach(), self.requires_grad))

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        out = Parameter(self.detach().clone(), self.requires_grad)
        if self.grad is not None:
            out.grad = self.grad.clone()
        memo[id(self)] = out
        return out


def _rebuild_parameter(data, requires_grad):
    return Parameter(data, requires_grad)


class _NoData:
    """Descriptor that replaces ``_data`` on an uninitialised parameter: every read is an error."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        raise RuntimeError(
            "this parameter is an UninitializedParameter of a lazy module (e.g. LazyLinear): "
            "it has no shape or values until the module's first forward call infers them; "
            "run the module on an input first")

    def __set__(self, obj, value):
        Tensor._data.__set__(obj, value)  # the slot of the base class


class UninitializedParameter(Parameter):
    """A parameter without data, held by lazy modules until their first call.

    Any use of its values raises a clear error; :meth:`materialize` gives it a
    shape and turns it into a plain :class:`Parameter` (the same object).
    """

    _data = _NoData()

    def __new__(cls, requires_grad: bool = True, device=None, dtype=None):
        p = object.__new__(cls)
        p.requires_grad = bool(requires_grad)
        p.grad = None
        p._ctx = None
        p._version = [0]
        p._view = None
        # Where and how to materialise; Module.to() updates these.
        p.__dict__["_lazy_device"] = device
        p.__dict__["_lazy_dtype"] = float32 if dtype is None else as_dtype(dtype)
        return p

    def __init__(self, requires_grad: bool = True, device=None, dtype=None):
        pass

    def __repr__(self) -> str:
        return "<UninitializedParameter>"

    __str__ = __repr__

    @property
    def shape(self):
        """Raises: an uninitialised parameter has no shape yet."""
        return self._data.shape  # raises the descriptor's clear error

    @property
    def data(self):
        """An empty tensor of the dtype the parameter will have: as in PyTorch, in-place
        initialisers on it (``.data.normal_(0, 0.01)``, ``.data.fill_(0)``) do nothing, so
        code that initialises a lazy layer before its first call runs."""
        return empty(0, dtype=self.__dict__.get("_lazy_dtype"))

    @data.setter
    def data(self, value):
        Parameter.data.__set__(self, value)

    def materialize(self, shape, device=None, dtype=None) -> Parameter:
        """Give this parameter storage of ``shape`` (zeros) and make it a plain Parameter."""
        device = device if device is not None else self.__dict__.get("_lazy_device")
        dtype = dtype if dtype is not None else self.__dict__.get("_lazy_dtype")
        data = empty(tuple(shape), dtype=dtype, device=device)._data
        self.__class__ = Parameter
        self._set_data(data)
        self.__dict__.pop("_lazy_device", None)
        self.__dict__.pop("_lazy_dtype", None)
        return self

    def __deepcopy__(self, memo):
        out = UninitializedParameter(self.requires_grad, self.__dict__.get("_lazy_device"),
                                     self.__dict__.get("_lazy_dtype"))
        memo[id(self)] = out
        return out


def is_lazy(obj) -> bool:
    """True if ``obj`` is an :class:`UninitializedParameter`."""
    return isinstance(obj, UninitializedParameter)
