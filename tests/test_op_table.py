"""Walk the op table: every row is complete, matches an independent NumPy reference,
obeys its own shape/dtype rules, and (if differentiable) has a gradient that matches
central finite differences in float64.

A new op without an entry in SAMPLES below fails ``test_every_op_has_a_sample``.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.special

import fusionnet as fn
from fusionnet.dispatch import apply
from fusionnet.ops import LAYOUT_STEPS, OPS, Kind, encode_key, layout_steps

from _conv_refs import CONV_SAMPLES  # noqa: E402 - tests/ is on sys.path under pytest

rng = np.random.default_rng(1234)


def _pos(*shape):
    return rng.uniform(0.5, 2.0, shape)


def _any(*shape):
    return rng.standard_normal(shape)


def _away_from_zero(*shape):
    x = rng.uniform(0.3, 2.0, shape)
    return x * rng.choice([-1, 1], shape)


_KEY = encode_key((slice(None), slice(1, 3)), fn.is_tensor)[0]
_IKEY = encode_key((fn.tensor([0, 2, 0]),), fn.is_tensor)[0]


def _scatter_ref(g, idx, shape):
    out = np.zeros(shape)
    np.add.at(out, (idx,), g)
    return out


def _setitem_ref(x, v):
    out = x.copy()
    out[:, 1:3] = v
    return out


# name -> (inputs, attrs, NumPy reference written independently of the op table)
SAMPLES = {
    "neg": ([_any(3, 4)], {}, np.negative),
    "abs": ([_away_from_zero(3, 4)], {}, np.abs),
    "sign": ([_away_from_zero(3, 4)], {}, np.sign),
    "exp": ([_any(3, 4)], {}, np.exp),
    "log": ([_pos(3, 4)], {}, np.log),
    "sqrt": ([_pos(3, 4)], {}, np.sqrt),
    "sigmoid": ([_any(3, 4)], {}, lambda x: 1 / (1 + np.exp(-x))),
    "tanh": ([_any(3, 4)], {}, np.tanh),
    "relu": ([_away_from_zero(3, 4)], {}, lambda x: x * (x > 0)),
    "erf": ([_any(3, 4)], {}, scipy.special.erf),
    "sin": ([_any(3, 4)], {}, np.sin),
    "cos": ([_any(3, 4)], {}, np.cos),
    "cast": ([_any(3, 4)], {"dtype": np.dtype(np.float32)}, lambda x: x.astype(np.float32)),
    "clamp": ([_any(3, 4) * 2], {"min": -0.5, "max": 0.7}, lambda x: np.clip(x, -0.5, 0.7)),
    "add": ([_any(3, 4), _any(4)], {}, np.add),
    "sub": ([_any(3, 1), _any(4)], {}, np.subtract),
    "mul": ([_any(2, 3, 4), _any(3, 1)], {}, np.multiply),
    "div": ([_any(3, 4), _pos(3, 4)], {}, np.divide),
    "pow": ([_pos(3, 4), _any(3, 4)], {}, np.power),
    "maximum": ([_any(3, 4), _any(3, 4)], {}, np.maximum),
    "minimum": ([_any(3, 4), _any(4)], {}, np.minimum),
    "eq": ([np.array([1.0, 2, 3]), np.array([1.0, 0, 3])], {}, np.equal),
    "ne": ([np.array([1.0, 2, 3]), np.array([1.0, 0, 3])], {}, np.not_equal),
    "lt": ([_any(3, 4), _any(3, 4)], {}, np.less),
    "le": ([_any(3, 4), _any(3, 4)], {}, np.less_equal),
    "gt": ([_any(3, 4), _any(4)], {}, np.greater),
    "ge": ([_any(3, 4), _any(4)], {}, np.greater_equal),
    "logical_and": ([_any(5) > 0, _any(5) > 0], {}, np.logical_and),
    "logical_or": ([_any(5) > 0, _any(5) > 0], {}, np.logical_or),
    "logical_not": ([_any(5) > 0], {}, np.logical_not),
    "where": ([_any(3, 4) > 0, _any(3, 4), _any(4)], {}, np.where),
    "sum": ([_any(3, 4, 5)], {"dim": (0, 2), "keepdim": False},
            lambda x: x.sum(axis=(0, 2))),
    "mean": ([_any(3, 4)], {"dim": 1, "keepdim": True}, lambda x: x.mean(1, keepdims=True)),
    "max": ([_any(3, 4)], {"dim": 0, "keepdim": False}, lambda x: x.max(0)),
    "min": ([_any(3, 4)], {"dim": None, "keepdim": False}, lambda x: x.min()),
    "argmax": ([_any(3, 4)], {"dim": 1, "keepdim": False}, lambda x: x.argmax(1)),
    "argmin": ([_any(3, 4)], {"dim": None, "keepdim": False}, lambda x: x.argmin()),
    "matmul": ([_any(2, 3, 4), _any(4, 5)], {}, np.matmul),
    "reshape": ([_any(3, 4)], {"shape": (2, -1)}, lambda x: x.reshape(2, 6)),
    "permute": ([_any(2, 3, 4)], {"dims": (2, 0, 1)}, lambda x: x.transpose(2, 0, 1)),
    "expand": ([_any(3, 1)], {"shape": (2, 3, 4)}, lambda x: np.broadcast_to(x, (2, 3, 4))),
    "copy": ([_any(3, 4)], {}, np.copy),
    "detach": ([_any(3, 4)], {}, lambda a: a),
    "getitem": ([_any(3, 4)], {"key": _KEY}, lambda x: x[:, 1:3]),
    "getitem_grad": ([_any(3, 4), np.array([0, 2, 0])], {"key": _IKEY, "shape": (4, 4)},
                     lambda g, i: _scatter_ref(g, i, (4, 4))),
    "setitem": ([_any(3, 4), _any(3, 2)], {"key": _KEY}, _setitem_ref),
    "cat": ([_any(2, 3), _any(4, 3)], {"dim": 0}, lambda a, b: np.concatenate([a, b])),
    "stack": ([_any(2, 3), _any(2, 3)], {"dim": 1}, lambda a, b: np.stack([a, b], 1)),
    "to_device": ([_any(3, 4)], {"device": "cpu"}, lambda x: x),
    "mse_loss": ([_any(3, 4), _any(3, 4)], {"reduction": "mean"},
                 lambda a, b: np.mean((a - b) ** 2)),
}

SAMPLES.update(CONV_SAMPLES)  # convolution and pooling: loop references in _conv_refs.py

# Inputs that are not differentiated even when the op is (indices, conditions).
NOT_DIFFERENTIATED = {("getitem_grad", 1), ("where", 0)}


def test_every_op_has_a_sample():
    assert sorted(OPS) == sorted(SAMPLES)


@pytest.mark.parametrize("name", sorted(OPS))
def test_row_is_complete(name):
    op = OPS[name]
    assert op.name == name
    assert isinstance(op.kind, Kind)
    assert callable(op.eager) and callable(op.shape) and callable(op.dtype)
    assert callable(op.saves)
    assert op.grad is None or callable(op.grad)
    assert op.doc.strip()
    # The facts stages read instead of the op's name (how backends spell an op is
    # checked by tests/test_backends.py).
    if op.reduction is not None:
        assert op.kind is Kind.REDUCTION
        combine = OPS[op.reduction.combine]
        assert combine.kind is Kind.ELEMENTWISE and combine.arity == 2
    assert not op.neutral or (op.arity == 2 and set(op.neutral) <= {0, 1})
    if op.layout is not None:
        assert op.kind is Kind.INJECTIVE and op.view and op.arity == 1
        assert all(step in LAYOUT_STEPS for step, _ in op.layout(
            SAMPLES[name][0][0].shape, op.shape(SAMPLES[name][0][0].shape, **SAMPLES[name][1]),
            **SAMPLES[name][1]))
    assert op.write_back is None or op.view


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.layout is not None))
def test_layout_steps_reproduce_eager(name):
    """A view row's primitive steps, applied one by one with the steps' own rows, give
    exactly the row's eager result (what fused code computes from the steps)."""
    arrays, attrs, _ = SAMPLES[name]
    want = apply(name, *_tensors(arrays), **attrs).numpy()
    got = fn.from_numpy(arrays[0].copy())
    for step, arg in layout_steps(OPS[name], arrays[0].shape, want.shape, attrs):
        got = apply(step, got, **{LAYOUT_STEPS[step].attr: arg})
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.neutral))
def test_neutral_elements_give_the_other_operand(name):
    x = _any(3, 4)
    for pos, value in OPS[name].neutral.items():
        args = [x, x]
        args[pos] = np.full_like(x, value)
        np.testing.assert_array_equal(apply(name, *_tensors(args)).numpy(), x)


@pytest.mark.parametrize("name", sorted(OPS))
def test_may_alias_says_whether_eager_shares_memory(name):
    """``Op.may_alias`` (buffer planning reads it) is true exactly for the rows whose eager
    result shares memory with the first input on their sample."""
    arrays, attrs, _ = SAMPLES[name]
    inputs = _tensors(arrays)
    out = apply(name, *inputs, **attrs)
    assert np.may_share_memory(out._data, inputs[0]._data) == OPS[name].may_alias


def _tensors(arrays, requires_grad=False):
    out = []
    for a in arrays:
        t = fn.tensor(a) if not isinstance(a, np.ndarray) else fn.from_numpy(a.copy())
        if requires_grad and t.dtype.is_floating_point:
            t.requires_grad_(True)
        out.append(t)
    return out


@pytest.mark.parametrize("name", sorted(OPS))
def test_forward_matches_numpy(name):
    arrays, attrs, ref = SAMPLES[name]
    got = apply(name, *_tensors(arrays), **attrs)
    want = np.asarray(ref(*arrays))
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy().astype(np.float64), want.astype(np.float64),
                               rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", sorted(n for n in OPS if OPS[n].kind is Kind.ELEMENTWISE))
def test_elementwise_rows_work_on_0d_tensors(name):
    """A 0-d input (a reduction's result) gives a 0-d array, element for element the same
    as the 1-element case (NumPy returns scalars for 0-d arrays: sign once choked on it)."""
    arrays, attrs, _ = SAMPLES[name]
    zero_d = [np.asarray(a.reshape(-1)[0]) for a in arrays]
    got = apply(name, *_tensors(zero_d), **attrs)
    one = apply(name, *_tensors([a.reshape(1) for a in zero_d]), **attrs)
    assert got.shape == () and isinstance(got._data, np.ndarray)
    np.testing.assert_array_equal(got.numpy().reshape(1), one.numpy())
    if arrays[0].dtype.kind == "f":  # and with a NaN, which several rows special-case
        nan = [np.asarray(np.nan, a.dtype) if a.dtype.kind == "f" else z
               for a, z in zip(arrays, zero_d)]
        got = apply(name, *_tensors(nan), **attrs)
        one = apply(name, *_tensors([a.reshape(1) for a in nan]), **attrs)
        np.testing.assert_array_equal(got.numpy().reshape(1), one.numpy())


@pytest.mark.parametrize("name", sorted(OPS))
def test_shape_and_dtype_rules_match_eager(name):
    arrays, attrs, _ = SAMPLES[name]
    op = OPS[name]
    got = apply(name, *_tensors(arrays), **attrs)
    assert tuple(got.shape) == tuple(op.shape(*[a.shape for a in arrays], **attrs))
    assert got.dtype == op.dtype(*[a.dtype for a in arrays], **attrs)


def _numeric_grad(name, arrays, attrs, i, weights, eps=1e-6):
    def f(x):
        args = list(arrays)
        args[i] = x
        out = apply(name, *_tensors(args), **attrs).numpy()
        return float((out * weights).sum())

    x = arrays[i].astype(np.float64)
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        grad[idx] = (f(plus) - f(minus)) / (2 * eps)
    return grad


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if op.differentiable))
def test_gradient_matches_finite_differences(name):
    arrays, attrs, _ = SAMPLES[name]
    if name == "cast":
        attrs = {"dtype": np.dtype(np.float64)}  # float64 throughout for a tight check
    inputs = _tensors(arrays, requires_grad=True)
    out = apply(name, *inputs, **attrs)
    weights = rng.standard_normal(tuple(out.shape))
    (out * fn.from_numpy(weights)).sum().backward()
    checked = 0
    for i, t in enumerate(inputs):
        if not t.dtype.is_floating_point or (name, i) in NOT_DIFFERENTIATED:
            continue
        assert t.grad is not None, f"{name}: no gradient for input {i}"
        want = _numeric_grad(name, arrays, attrs, i, weights)
        np.testing.assert_allclose(t.grad.numpy(), want, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{name} input {i}")
        checked += 1
    assert checked, f"{name} is marked differentiable but no input was checked"


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if not op.differentiable))
def test_non_differentiable_ops_record_nothing(name):
    arrays, attrs, _ = SAMPLES[name]
    inputs = _tensors([a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays],
                      requires_grad=True)
    out = apply(name, *inputs, **attrs)
    assert out.grad_fn is None and not out.requires_grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64, np.int8,
                                   np.bool_])
def test_the_fast_eager_sum_and_mean_are_numpys_bit_for_bit(dtype):
    # sum and mean skip np.sum's / np.mean's Python wrappers (half an eager op's cost on
    # small arrays); the values, dtypes and scalar-ness must be NumPy's exactly.
    import warnings

    from fusionnet.ops.reduction import numpy_mean, numpy_sum
    gen = np.random.default_rng(0)
    for shape in ((), (7,), (3, 5), (4, 3, 6), (0, 3), (1000, 3)):
        a = (gen.standard_normal(shape) * 100).astype(dtype)
        axes = [None, *range(len(shape))] + ([(0, len(shape) - 1)] if len(shape) > 1 else [])
        for axis in axes:
            for keep in (False, True):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the mean of an empty slice
                    pairs = [(np.sum(a, axis=axis, keepdims=keep),
                              numpy_sum(np, a, axis=axis, keepdims=keep))]
                    if np.dtype(dtype).kind == "f":
                        pairs.append((np.mean(a, axis=axis, keepdims=keep),
                                      numpy_mean(np, a, axis=axis, keepdims=keep)))
                for want, got in pairs:
                    assert type(got) is type(want) and np.asarray(got).dtype == \
                        np.asarray(want).dtype
                    np.testing.assert_array_equal(got, want)
