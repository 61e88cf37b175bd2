"""Layout rows of the op table (``Kind.INJECTIVE``): reshape, permute, expand,
indexing, concatenation; plus the opaque device copy.

Index keys are stored as plain data (tuples of tagged items), never as live
slices or arrays, so a graph that holds them stays hashable and printable;
index *tensors* are ordinary op inputs.

View rows that a backend can build as array views say what they are made of
(``Op.layout``): a short list of the primitive steps in :data:`LAYOUT_STEPS`
(``reshape``, ``permute``, ``expand``), which every backend spells. Passes read the
steps (:func:`layout_steps`) to drop steps that change nothing, compose chains and
recognise a 2-D transpose (:func:`is_transpose`); code generators lower the steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .registry import SAVES_NONE, Kind, Op, register
from .rules import ShapeError, broadcast, normalize_dim, same_dtype, same_shape

__all__ = ["encode_key", "decode_key", "DataDependentShape", "LayoutStep", "LAYOUT_STEPS",
           "layout_steps", "is_transpose"]

I = Kind.INJECTIVE


class DataDependentShape(ShapeError):
    """The output shape depends on tensor values (boolean-mask indexing)."""


# ---- layout steps: what view rows are made of -------------------------------------------


@dataclass(frozen=True)
class LayoutStep:
    """A primitive layout step; the row of the same name is that one step.

    Attributes:
        attr: the attribute of that row that holds the step's argument.
        result: ``result(src_shape, arg) -> shape`` (sizes may be symbolic).
        noop: ``noop(src_shape, arg) -> bool``: the step changes nothing.
        compose: ``compose(inner_arg, outer_arg) -> arg`` of one step that does both in
            turn, or None when two such steps do not merge into one.
    """

    attr: str
    result: Callable[[tuple, tuple], tuple]
    noop: Callable[[tuple, tuple], bool]
    compose: Callable[[tuple, tuple], tuple] | None = None


def _same_shape_step(src, shape) -> bool:
    return tuple(shape) == tuple(src)


#: The layout steps every backend spells: ``reshape`` (arg: the new shape), ``permute``
#: (arg: the dims, non-negative) and ``expand`` (arg: the broadcast shape).
LAYOUT_STEPS = {
    "reshape": LayoutStep("shape", lambda src, shape: tuple(shape), _same_shape_step,
                          compose=lambda inner, outer: outer),
    "permute": LayoutStep("dims", lambda src, dims: tuple(src[d] for d in dims),
                          lambda src, dims: tuple(dims) == tuple(range(len(dims))),
                          compose=lambda inner, outer: tuple(inner[q] for q in outer)),
    "expand": LayoutStep("shape", lambda src, shape: tuple(shape), _same_shape_step),
}


def layout_steps(op, src_shape, out_shape, attrs) -> tuple | None:
    """``op``'s primitive layout steps from ``src_shape`` to ``out_shape`` (ints, or
    symbolic sizes), the steps that change nothing left out: ``((step, arg), ...)``.
    ``None`` when the row has no layout decomposition (``Op.layout``)."""
    if op.layout is None:
        return None
    shape, steps = tuple(src_shape), []
    for step, arg in op.layout(tuple(src_shape), tuple(out_shape), **dict(attrs)):
        rule = LAYOUT_STEPS[step]
        arg = tuple(arg)
        if not rule.noop(shape, arg):
            steps.append((step, arg))
        shape = rule.result(shape, arg)
    if shape != tuple(out_shape):
        raise ValueError(f"{op.name}: its layout steps give shape {shape}, not "
                         f"{tuple(out_shape)}")
    return tuple(steps)


def is_transpose(steps) -> bool:
    """Whether layout ``steps`` (from :func:`layout_steps`) are one 2-D transpose, which a
    GEMM reads in place."""
    return steps == (("permute", (1, 0)),)


# ---- reshape / permute / expand ---------------------------------------------------------

def resolve_shape(shape_in, shape) -> tuple:
    """``shape`` with a single -1 filled in; checks the element count matches."""
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape_in)
    if shape.count(-1) > 1:
        raise ShapeError("only one dimension can be inferred (-1)")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or numel % known:
            raise ShapeError(f"shape {list(shape)} is invalid for input of size {numel}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    if math.prod(shape) != numel or any(s < 0 for s in shape):
        raise ShapeError(f"shape {list(shape)} is invalid for input of size {numel}")
    return shape


register(Op("reshape", I, 1, lambda xp, a, shape: xp.reshape(a, resolve_shape(a.shape, shape)),
            lambda s, shape: resolve_shape(s, shape), same_dtype,
            lambda g, x, shape, **_: (g.reshape(x.shape),),
            "reshape to `shape` (one -1 allowed)", saves=SAVES_NONE,
            view=True, layout=lambda src, out, shape: (("reshape", out),),
            write_back=lambda parent, value, shape: ("reshape", (value,),
                                                     {"shape": tuple(parent.shape)})))


def _check_perm(shape, dims, **_):
    dims = tuple(normalize_dim(d, len(shape)) for d in dims)
    if sorted(dims) != list(range(len(shape))):
        raise ShapeError(f"permute dims {list(dims)} do not match a tensor of rank {len(shape)}")
    return tuple(shape[d] for d in dims)


def _inverse_perm(dims, ndim) -> tuple:
    dims = [normalize_dim(d, ndim) for d in dims]
    inverse = [0] * len(dims)
    for i, d in enumerate(dims):
        inverse[d] = i
    return tuple(inverse)


def _permute_grad(g, x, dims, **_):
    return (g.permute(*_inverse_perm(dims, x.ndim)),)


def _permute_layout(src, out, dims):
    return (("permute", tuple(d % max(len(src), 1) for d in dims)),)


def _permute_write_back(parent, value, dims):
    return "permute", (value,), {"dims": _inverse_perm(dims, parent.ndim)}


register(Op("permute", I, 1, lambda xp, a, dims: xp.transpose(a, dims), _check_perm,
            same_dtype, _permute_grad, "reorder dimensions", saves=SAVES_NONE,
            view=True, layout=_permute_layout, write_back=_permute_write_back))


def _expand_shape(s, shape, **_):
    s, shape = tuple(s), tuple(shape)
    if len(shape) < len(s):
        raise ShapeError(f"cannot expand shape {s} to fewer dimensions {shape}")
    lead = len(shape) - len(s)
    out = list(shape[:lead])
    if any(d < 0 for d in out):
        raise ShapeError(f"-1 is not allowed in a new leading dimension of expand {shape}")
    for have, want in zip(s, shape[lead:]):
        if want == -1 or want == have:
            out.append(have)
        elif have == 1:
            out.append(want)
        else:
            raise ShapeError(f"cannot expand shape {s} to {shape}: size {have} is not 1")
    return tuple(out)


register(Op("expand", I, 1, lambda xp, a, shape: xp.broadcast_to(a, _expand_shape(a.shape, shape)),
            _expand_shape, same_dtype, lambda g, x, shape, **_: (g,),  # engine sums back
            "broadcast to a larger shape without copying", saves=SAVES_NONE,
            view=True, layout=lambda src, out, shape: (("expand", out),)))  # read-only view

register(Op("copy", Kind.ELEMENTWISE, 1, lambda xp, a: a.copy(), same_shape, same_dtype,
            lambda g, x, **_: (g,), "a fresh copy (clone)", saves=SAVES_NONE))

register(Op("detach", Kind.ELEMENTWISE, 1, lambda xp, a: a, same_shape, same_dtype, None,
            "the same values, cut from autograd (`detach()`, `.data` inside forward)",
            saves=SAVES_NONE, returns_input=True))

# ---- indexing ---------------------------------------------------------------------------


def encode_key(key, is_tensor) -> tuple[tuple, list]:
    """Turn a Python index into (data-only key, list of index objects that are tensors).

    ``is_tensor(obj)`` tells tensors apart; each tensor becomes an ``("index", k)``
    or ``("mask", k)`` item pointing at the k-th extra op input.
    """
    if not isinstance(key, tuple):
        key = (key,)
    items, tensors = [], []
    for k in key:
        if k is None:
            items.append(("none",))
        elif k is Ellipsis:
            items.append(("ellipsis",))
        elif isinstance(k, slice):
            items.append(("slice", _int_or_none(k.start), _int_or_none(k.stop),
                          _int_or_none(k.step)))
        elif isinstance(k, (bool, np.bool_)):
            raise IndexError("fusionnet: a Python bool is not a valid index")
        elif isinstance(k, (int, np.integer)):
            items.append(("int", int(k)))
        elif is_tensor(k):
            kind = "mask" if k.dtype.np.kind == "b" else "index"
            if kind == "index" and k.dtype.np.kind not in "iu":
                raise IndexError("fusionnet: tensors used as indices must be integer or bool, "
                                 f"got {k.dtype}")
            items.append((kind, len(tensors)))
            tensors.append(k)
        else:
            raise IndexError(f"fusionnet: unsupported index {k!r}")
    return tuple(items), tensors


def _int_or_none(v):
    if v is None:
        return None
    if hasattr(v, "__index__"):
        return int(v.__index__())
    raise IndexError(f"fusionnet: slice bounds must be integers, got {v!r}")


def decode_key(key: tuple, arrays) -> tuple:
    """Inverse of :func:`encode_key` given the index arrays."""
    out = []
    for item in key:
        tag = item[0]
        if tag == "none":
            out.append(None)
        elif tag == "ellipsis":
            out.append(Ellipsis)
        elif tag == "slice":
            out.append(slice(*item[1:]))
        elif tag == "int":
            out.append(item[1])
        else:
            out.append(arrays[item[1]])
    return tuple(out)


def _getitem_shape(shape, *index_shapes, key):
    # Index a zero-strided dummy of the right shape: NumPy works out the result
    # shape (and range errors for ints) without touching real memory.
    dummy = np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), shape=tuple(shape),
                                            strides=(0,) * len(shape))
    arrays = []
    for item in key:
        if item[0] == "mask":
            raise DataDependentShape("boolean-mask indexing gives a shape that depends on "
                                     "the mask's values")
    arrays = [np.zeros(s, np.intp) for s in index_shapes]
    return dummy[decode_key(key, arrays)].shape


def _getitem_grad(g, x, *index, key, **_):
    return (g._op("getitem_grad", *index, key=key, shape=tuple(x.shape)),) + (None,) * len(index)


def _getitem_eager(xp, a, *idx, key):
    real = decode_key(key, idx)
    if not idx and ("ellipsis",) not in key:
        real += (Ellipsis,)  # a view even when ints select one element (NumPy: a scalar)
    return a[real]


def _getitem_write_back(parent, value, key):
    # Only basic keys (no index tensors) give views, so setitem needs no index inputs.
    return "setitem", (parent, value), {"key": key}


def _indexes_by_tensor(key, **_) -> bool:
    """Index tensors are checked against the sizes when the op runs (static parts of a
    key were checked when the graph was traced)."""
    return any(item[0] in ("index", "mask") for item in key)


def _basic_key(key, **_):
    """The Python key of a basic index (no index tensors), else None."""
    return None if _indexes_by_tensor(key) else decode_key(key, ())


register(Op("getitem", I, None, _getitem_eager,
            _getitem_shape, same_dtype, _getitem_grad,
            "x[key]: ints, slices, None, ..., integer and boolean index tensors",
            saves=SAVES_NONE, view=True,
            write_back=_getitem_write_back, value_errors=_indexes_by_tensor,
            selects=_basic_key))


def _scatter_add(xp, out, key, values):
    if xp is np:
        np.add.at(out, key, values)
    else:  # pragma: no cover - GPU only
        import cupyx  # noqa: PLC0415
        cupyx.scatter_add(out, key, values)


def _getitem_grad_eager(xp, g, *idx, key, shape):
    out = xp.zeros(shape, dtype=g.dtype)
    real = decode_key(key, idx)
    if idx:  # advanced indexing may repeat positions: accumulate
        _scatter_add(xp, out, real, g)
    else:
        out[real] = g
    return out


def _getitem_grad_grad(gg, g, *index, key, shape, **_):
    return (gg._op("getitem", *index, key=key),) + (None,) * len(index)


register(Op("getitem_grad", I, None, _getitem_grad_eager,
            lambda gs, *i, key, shape: tuple(shape), same_dtype, _getitem_grad_grad,
            "gradient of getitem: zeros of `shape` with g added at key",
            saves=SAVES_NONE, value_errors=_indexes_by_tensor, places=_basic_key))


def _setitem_eager(xp, a, v, *idx, key):
    out = a.copy()
    out[decode_key(key, idx)] = v
    return out


def _setitem_shape(shape, vshape, *index_shapes, key):
    target = _getitem_shape(shape, *index_shapes, key=key) if not any(
        item[0] == "mask" for item in key) else None
    if target is not None and broadcast(vshape, target) != tuple(target):
        raise ShapeError(f"cannot assign a value of shape {tuple(vshape)} to a selection of "
                         f"shape {tuple(target)}")
    return tuple(shape)


def _setitem_grad(g, x, v, *index, key, **_):
    gx = g._op("setitem", 0.0, *index, key=key)
    gv = g._op("getitem", *index, key=key)
    return (gx, gv) + (None,) * len(index)


register(Op("setitem", I, None, _setitem_eager, _setitem_shape, same_dtype, _setitem_grad,
            "functional x[key] = v: a copy of x with v written at key",
            saves=SAVES_NONE, value_errors=_indexes_by_tensor, assigns=_basic_key))

# ---- concatenation ----------------------------------------------------------------------


def _cat_shape(*shapes, dim):
    if not shapes:
        raise ShapeError("cat needs at least one tensor")
    for i, s in enumerate(shapes):
        if not s:
            raise ShapeError(f"zero-dimensional tensor (at position {i}) cannot be concatenated")
    first = shapes[0]
    d = normalize_dim(dim, len(first))
    for s in shapes[1:]:
        if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first))
                                       if i != d):
            raise ShapeError(f"cat: shapes {tuple(first)} and {tuple(s)} differ outside "
                             f"dimension {dim}")
    return tuple(first[:d]) + (sum(s[d] for s in shapes),) + tuple(first[d + 1:])


def _cat_grad(g, *xs, dim, **_):
    d = normalize_dim(dim, xs[0].ndim)
    grads, start = [], 0
    for x in xs:
        key = (slice(None),) * d + (slice(start, start + x.shape[d]),)
        grads.append(g[key])
        start += x.shape[d]
    return tuple(grads)


register(Op("cat", I, None, lambda xp, *arrays, dim: xp.concatenate(arrays, axis=dim),
            _cat_shape, same_dtype, _cat_grad, "concatenate along an existing dim",
            saves=SAVES_NONE, promote="all",
            joins=lambda ndim, dim: (normalize_dim(dim, ndim), False)))


def _stack_shape(*shapes, dim):
    if not shapes:
        raise ShapeError("stack needs at least one tensor")
    for s in shapes[1:]:
        if tuple(s) != tuple(shapes[0]):
            raise ShapeError(f"stack expects each tensor to be equal size, but got "
                             f"{tuple(shapes[0])} and {tuple(s)}")
    d = normalize_dim(dim, len(shapes[0]) + 1)
    return tuple(shapes[0][:d]) + (len(shapes),) + tuple(shapes[0][d:])


def _stack_grad(g, *xs, dim, **_):
    d = normalize_dim(dim, xs[0].ndim + 1)
    return tuple(g[(slice(None),) * d + (i,)] for i in range(len(xs)))


register(Op("stack", I, None, lambda xp, *arrays, dim: xp.stack(arrays, axis=dim),
            _stack_shape, same_dtype, _stack_grad, "stack along a new dim",
            saves=SAVES_NONE, promote="all",
            joins=lambda ndim, dim: (normalize_dim(dim, ndim + 1), True)))

# ---- device copy ------------------------------------------------------------------------


def _to_device_eager(xp, a, device):
    if device == "cpu":
        return a if xp is np else a.get()
    from ..device import require_cupy  # noqa: PLC0415 - CuPy only when a GPU is used
    cp = require_cupy()
    index = int(device.partition(":")[2] or 0)
    with cp.cuda.Device(index):
        return cp.array(a, copy=True)


register(Op("to_device", Kind.OPAQUE, 1, _to_device_eager, same_shape, same_dtype,
            lambda g, x, device, **_: (g.to(x.device),),
            "copy to another device ('cpu', 'cuda:N')", saves=SAVES_NONE,
            returns_input=True))  # to the device the input is on: the input itself
