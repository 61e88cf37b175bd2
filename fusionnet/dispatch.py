"""Apply one op from the table to tensors: the single path every eager op takes.

``apply(name, *args, **attrs)`` converts Python scalars to weakly typed
tensors, checks devices, promotes dtypes, runs the row's eager
implementation on the inputs' array module (NumPy or CuPy) and, when grad
mode is on and an input requires grad, records an autograd :class:`Node`. Rows that
may return a view of their input (``op.view``) are reported to autograd, which
tracks views and their bases (see :mod:`fusionnet.autograd`).
A tracer can install itself with :func:`set_trace_hook` to see every call.
"""
from __future__ import annotations

import operator
import threading

import numpy as np

from . import autograd
from .autograd import _state as _GRAD  # grad mode, read on every op
from .dtypes import result_dtype, scalar_dtype
from .ops import ShapeError, get_op

__all__ = ["apply", "run_eager", "record", "set_trace_hook", "trace_hook", "note_python_value",
           "note_random", "note_shape_read"]

_DTYPE = operator.attrgetter("dtype")

class _Local(threading.local):
    # The hook is per thread: tracing in one thread never captures another thread's ops.
    # A class default makes the read on every op a plain attribute read.
    hook = None


_local = _Local()


def set_trace_hook(hook):
    """Install ``hook(op, inputs, attrs) -> Tensor | NotImplemented`` for this thread.

    ``None`` removes it; the previous hook is returned so callers can restore it.
    The tracer uses this to record every op that runs while it traces.
    """
    prev = _local.hook
    _local.hook = hook
    return prev


def trace_hook():
    """This thread's trace hook, or None."""
    return _local.hook


def note_python_value(tensor, why: str):
    """Called before a tensor's value is turned into a Python value (``bool``, ``item``...).

    A tracer uses this to stop (graph break) instead of baking in the value
    it happens to see.
    """
    hook = _local.hook
    if hook is not None and hasattr(hook, "on_python_value"):
        hook.on_python_value(tensor, why)


def note_shape_read(tensor):
    """Called when Python reads a tensor's sizes (``.shape``, ``size()``, ``len()``).

    A tracer records reads made by user code: sizes baked into Python control
    flow mean the compiled code may not be reused for other batch sizes.
    """
    hook = _local.hook
    if hook is not None and hasattr(hook, "on_shape_read"):
        hook.on_shape_read(tensor)


def note_untracked_alias(alias, source):
    """Called when ``alias`` shares ``source``'s storage outside the op table (``detach()``,
    ``.data``): a tracer records it now, so a later in-place write into ``source`` is seen
    through ``alias`` as eager's shared storage shows it."""
    hook = _local.hook
    if hook is not None and hasattr(hook, "on_untracked_alias"):
        hook.on_untracked_alias(alias, source)


def note_random(what: str):
    """Called before random numbers are drawn; a tracer stops there (values would freeze)."""
    hook = _local.hook
    if hook is not None and hasattr(hook, "on_random"):
        hook.on_random(what)


def _to_tensors(op, args, Tensor):
    """Tensors for every argument; scalars take a dtype from the tensors (weak typing)."""
    tensors = [a for a in args if isinstance(a, Tensor)]
    if not tensors:
        raise TypeError(f"fusionnet.{op.name}: expected at least one tensor argument")
    like = tensors[0]
    if len(tensors) == len(args):
        return args, like
    ref = like._data.dtype if len(tensors) == 1 else result_dtype(
        [t._data.dtype for t in tensors], [t._data.ndim for t in tensors])
    xp = like._xp
    out = []
    for a in args:
        if isinstance(a, Tensor):
            out.append(a)
        elif isinstance(a, (bool, int, float, np.number, np.bool_)):
            out.append(Tensor._wrap(xp.asarray(a, dtype=scalar_dtype(a, ref)), like._device))
        else:
            out.append(Tensor(a, device=like._device))
    return tuple(out), like


def _refuse_bools(op, args, Tensor):
    for a in args:
        if isinstance(a, Tensor) and a._data.dtype.kind == "b":
            raise TypeError(f"fusionnet.{op.name}: {op.refuses_bool}")


def _check_devices(op, tensors, like):
    dev = like._device
    for t in tensors:
        if t._device != dev:
            raise RuntimeError(f"fusionnet.{op.name}: expected all tensors to be on the same "
                               f"device, but found at least two devices, {dev} and "
                               f"{t._device}")


def _promoted(op, arrays):
    if not op.promote:
        return arrays
    first = arrays[0].dtype
    # The common case: one dtype, not bool (rows with ``bools_as`` convert bools even
    # when every input is bool), so nothing to convert.
    if first.kind != "b" and all(a.dtype is first for a in arrays):
        return arrays
    casts = op.casts(list(map(_DTYPE, arrays)), [a.ndim for a in arrays])
    if not casts:
        return arrays
    return [a.astype(casts[i]) if i in casts else a for i, a in enumerate(arrays)]


def _explain_failure(op, arrays, attrs, err):
    """Re-raise ``err`` with the op's name and, when the shape rule can tell, the shapes."""
    try:
        op.shape(*[a.shape for a in arrays], **attrs)
    except Exception as shape_err:  # the rule's message is the clear one
        raise _like(shape_err, f"fusionnet.{op.name}: {shape_err}") from None
    raise _like(err, f"fusionnet.{op.name}: {err}") from err


def _like(err, message):
    """A new exception of ``err``'s kind (one of the common built-in kinds) with ``message``."""
    for kind in (ShapeError, IndexError, TypeError, ZeroDivisionError, ValueError):
        if isinstance(err, kind):
            return kind(message)
    return RuntimeError(message)


def apply(name, *args, **attrs):
    """Run op ``name`` on ``args`` (tensors or scalars) with ``attrs``; return a Tensor."""
    Tensor = _tensor.Tensor

    op = get_op(name)
    if op.refuses_bool:
        _refuse_bools(op, args, Tensor)
    tensors, like = _to_tensors(op, args, Tensor)
    hook = _local.hook
    if hook is not None:
        out = hook(op, tensors, attrs)
        if out is not NotImplemented:
            return out
    out = run_eager(op, tensors, attrs)
    if op.view:  # may alias its input: share the version counter, know the base
        autograd.note_view(op, tensors, out, attrs)
    # Only floating-point results carry gradients (PyTorch: ints and bools never require
    # grad, so `x.int()` or `maximum` of ints is a constant for autograd).
    if _GRAD.enabled and op.grad is not None and out._data.dtype.kind == "f":
        needs = tuple(t.requires_grad for t in tensors)
        if True in needs:
            _record(op, tensors, attrs, out, needs, Tensor)
    return out


def record(op, tensors, attrs, out):
    """Record ``out = op(*tensors, **attrs)`` for autograd (when grad mode is on and an
    input requires grad) without computing anything; returns ``out``."""
    Tensor = _tensor.Tensor

    if autograd.is_grad_enabled() and op.grad is not None and out._data.dtype.kind == "f":
        needs = tuple(t.requires_grad for t in tensors)
        if any(needs):
            _record(op, tensors, attrs, out, needs, Tensor)
    return out


def run_eager(op, tensors, attrs):
    """Compute ``op`` on tensors (no scalars, no hooks, no autograd recording)."""
    Tensor = _tensor.Tensor

    like = tensors[0]
    arrays = [t._data for t in tensors]
    on_cpu = True
    for a in arrays:
        if type(a) is not np.ndarray:
            on_cpu = False
            break
    # (a device copy has one input: nothing to compare; NumPy arrays are all on the CPU)
    if not on_cpu and len(tensors) > 1:
        _check_devices(op, tensors, like)
    arrays = _promoted(op, arrays)
    out_dtype = op.dtype(*[a.dtype for a in arrays], **attrs)
    xp = np if on_cpu else like._xp
    try:
        if xp is np:
            result = op.eager(xp, *arrays, **attrs)
        else:  # CuPy computes on its *current* GPU: make that the inputs' GPU
            with xp.cuda.Device(like._device.index):
                result = op.eager(xp, *arrays, **attrs)
    except Exception as err:  # noqa: BLE001 - re-raised with a clearer message
        _explain_failure(op, arrays, attrs, err)
    if type(result) is not np.ndarray and (not hasattr(result, "shape") or
                                           isinstance(result, np.generic)):
        result = xp.asarray(result)  # a NumPy scalar (a full reduction), a Python number
    dtype = result.dtype
    if dtype is not out_dtype and dtype != out_dtype:
        result = result.astype(out_dtype)
    return Tensor._wrap(result)


def _record(op, tensors, attrs, out, needs, Tensor):
    saved_inputs, saves_out = op.saves(needs)
    saved = tuple((tensors[i], tensors[i]._version[0], f"input {i}") for i in saved_inputs)
    out_alias = None
    if saves_out:
        out_alias = Tensor._wrap(out._data, version=out._version)
        saved += ((out_alias, out._version[0], "output 0"),)
    out.requires_grad = True
    out._ctx = autograd.Node(op, tensors, attrs, out_alias, saved, needs)


# tensor.py imports this module, so this import comes last (a cycle). A function-level
# import instead would run the import machinery on every op (~2 us each, most of an
# eager op's cost on small tensors); this is one module attribute read.
from . import tensor as _tensor  # noqa: E402
