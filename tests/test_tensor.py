"""Tensor surface: factories, dtypes, operators, indexing, printing, Python conversions."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fusionnet as fn

# ---- factories and dtypes -----------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda f: f(2, 3), lambda f: f((2, 3)), lambda f: f([2, 3]),
                                  lambda f: f(size=(2, 3))])
@pytest.mark.parametrize("factory", [fn.rand, fn.randn, fn.zeros, fn.ones])
def test_factories_accept_torch_size_forms(factory, make):
    t = make(factory)
    assert t.shape == (2, 3) and t.dtype == fn.float32


def test_factory_keywords():
    t = fn.zeros(2, dtype=fn.float64, device="cpu", requires_grad=True)
    assert t.dtype == fn.float64 and t.requires_grad and t.is_leaf
    assert str(t.device) == "cpu"
    assert fn.ones(3, dtype=fn.int64).tolist() == [1, 1, 1]
    assert fn.full((2,), 7).dtype == fn.int64 and fn.full((2,), 7.0).dtype == fn.float32


def test_default_dtypes_follow_pytorch():
    assert fn.tensor([1.0, 2.0]).dtype == fn.float32
    assert fn.tensor([1, 2]).dtype == fn.int64
    assert fn.tensor([True]).dtype == fn.bool_
    assert fn.tensor(np.zeros(2)).dtype == fn.float64  # NumPy arrays keep their dtype
    assert fn.arange(4).dtype == fn.int64 and fn.arange(0.0, 1.0, 0.5).dtype == fn.float32
    assert fn.FloatTensor(2, 3).shape == (2, 3)
    assert fn.FloatTensor([1, 2]).dtype == fn.float32


def test_tensor_copies_numpy_but_from_numpy_shares():
    a = np.zeros(3)
    t, s = fn.tensor(a), fn.from_numpy(a)
    a[0] = 5
    assert t[0].item() == 0 and s[0].item() == 5


def test_like_factories_and_eye():
    x = fn.ones(2, 3, dtype=fn.float64)
    for f in (fn.zeros_like, fn.ones_like, fn.rand_like):
        y = f(x)
        assert y.shape == x.shape and y.dtype == fn.float64
    np.testing.assert_array_equal(fn.eye(3).numpy(), np.eye(3))


def test_manual_seed_repeats():
    fn.manual_seed(3)
    a = fn.rand(4)
    fn.manual_seed(3)
    assert fn.equal(a, fn.rand(4))


def test_type_promotion_like_pytorch():
    i = fn.tensor([1, 2])
    f = fn.tensor([1.0, 2.0])
    assert (i + f).dtype == fn.float32          # NumPy would give float64
    assert (i + 1.5).dtype == fn.float32        # weak Python float
    assert (f + 1).dtype == fn.float32
    assert (i * 2).dtype == fn.int64
    assert (i / 2).dtype == fn.float32          # true division
    assert (f.double() + f).dtype == fn.float64
    assert (i > 1).dtype == fn.bool_


def test_zero_dim_tensors_promote_only_across_categories():
    # PyTorch's rule (found by the fuzzer's --torch run): a 0-d tensor does not widen a
    # dimensioned tensor of its own category, but lifts one of a lower category.
    x32 = fn.ones(3)
    z64 = fn.tensor(2.0, dtype=fn.float64)
    assert (x32 * z64).dtype == fn.float32
    assert (z64 * x32).dtype == fn.float32
    assert (fn.ones(3, dtype=fn.int32) * z64).dtype == fn.float64
    assert (fn.ones(3, dtype=fn.int32) + fn.tensor(5)).dtype == fn.int32
    assert (fn.ones(3, dtype=fn.bool) + fn.tensor(5)).dtype == fn.int64
    assert (z64 + fn.tensor(1.0)).dtype == fn.float64            # both 0-d: ordinary
    assert fn.where(x32 > 0, x32, z64).dtype == fn.float32


def test_promotion_matches_pytorch_for_every_dtype_and_rank_pair():
    torch = pytest.importorskip("torch")
    import itertools
    import operator
    names = ["bool", "int32", "int64", "float32", "float64"]
    for a, b in itertools.product(names, names):
        for sa, sb in [((3,), ()), ((), (3,)), ((), ()), ((3,), (3,))]:
            ta, fa = torch.ones(sa, dtype=getattr(torch, a)), fn.ones(sa, dtype=getattr(fn, a))
            tb, fb = torch.ones(sb, dtype=getattr(torch, b)), fn.ones(sb, dtype=getattr(fn, b))
            for name, op in [("mul", operator.mul), ("gt", operator.gt),
                             ("maximum", None), ("where", None)]:
                if name == "maximum":
                    want, got = torch.maximum(ta, tb), fn.maximum(fa, fb)
                elif name == "where":
                    want, got = torch.where(ta > 0, ta, tb), fn.where(fa > 0, fa, fb)
                else:
                    want, got = op(ta, tb), op(fa, fb)
                assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1], (
                    name, a, sa, b, sb, want.dtype, got.dtype)


def test_fused_zero_dim_buffer_keeps_the_dimensioned_dtype():
    from fusionnet import nn

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", fn.tensor(0.5, dtype=fn.float64))

        def forward(self, x):
            return (x * self.scale).relu() + self.scale

    block = Scaled()
    fused = fn.fuse(block, fallback=False)
    x = fn.randn(4, 3)
    with fn.no_grad():
        got, want = fused(x), block(x)
    assert got.dtype == want.dtype == fn.float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


_SUPPORTED = "float32, float64, int32, int64, bool"
_UNSUPPORTED = {"complex": np.array([1 + 2j]), "str": np.array(["a"]),
                "object": np.array([object()], dtype=object),
                "datetime": np.array(["2020-01-01"], "datetime64[D]"),
                "uint64": np.array([1], np.uint64)}


@pytest.mark.parametrize("make", [fn.tensor, fn.as_tensor, fn.from_numpy, fn.Tensor],
                         ids=["tensor", "as_tensor", "from_numpy", "Tensor"])
@pytest.mark.parametrize("kind", sorted(_UNSUPPORTED))
def test_unsupported_array_dtypes_raise_a_type_error_naming_the_supported(make, kind):
    with pytest.raises(TypeError, match=f"unsupported dtype .*{_SUPPORTED}"):
        make(_UNSUPPORTED[kind])


@pytest.mark.parametrize("make", [
    lambda: fn.tensor([1 + 2j]), lambda: fn.tensor(["a", "b"]),
    lambda: fn.tensor([1.0], dtype=np.complex64), lambda: fn.tensor([1 + 2j], dtype=fn.float32),
    lambda: fn.zeros(2, dtype=np.complex128), lambda: fn.ones(2).to(np.complex64),
    lambda: fn.ones(2).to(dtype=np.dtype("U3")), lambda: fn.ones(2) + 1j,
    lambda: fn.ones(2) * np.complex64(2), lambda: fn.as_tensor([1j]),
], ids=["list-complex", "list-str", "dtype-complex", "complex-as-float", "zeros", "to",
        "to-str-dtype", "python-complex-scalar", "numpy-complex-scalar", "as_tensor-list"])
def test_every_way_to_a_complex_or_string_tensor_says_what_is_supported(make):
    with pytest.raises(TypeError, match=_SUPPORTED):
        make()


def test_float16_and_narrow_ints_convert_when_a_tensor_is_made():
    half, small = np.array([1.5], np.float16), np.array([200], np.uint8)
    for t, want in [(fn.tensor(half), fn.float32), (fn.as_tensor(half), fn.float32),
                    (fn.ones(1).to(np.float16), fn.float32), (fn.tensor(small), fn.int64),
                    (fn.tensor([1.0], dtype=np.float16), fn.float32),
                    (fn.ones(1).to(np.int8), fn.int64)]:
        assert t.dtype == want and t._data.dtype == want.np  # the data is what dtype says
    assert fn.tensor(small).tolist() == [200]
    with pytest.raises(TypeError, match="fusionnet.tensor\\(array\\) makes a float32 copy"):
        fn.from_numpy(half)  # sharing memory rules out converting


# ---- properties and conversions --------------------------------------------------------------


def test_basic_properties():
    x = fn.arange(12).reshape(3, 4)
    assert x.shape == fn.Size([3, 4]) and x.size() == (3, 4) and x.size(1) == 4
    assert x.ndim == 2 and x.dim() == 2 and x.numel() == 12 and len(x) == 3
    assert repr(x.shape) == "fusionnet.Size([3, 4])"
    assert [r.tolist() for r in x][1] == [4, 5, 6, 7]
    assert x.tolist()[2][3] == 11


def test_python_scalars_from_one_element_tensors():
    t = fn.tensor([2.5])
    assert float(t) == 2.5 and int(t) == 2 and bool(t) and t.item() == 2.5
    with pytest.raises(RuntimeError, match="3 elements cannot be converted"):
        fn.tensor([1.0, 2.0, 3.0]).item()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(fn.tensor([1.0, 2.0]))


def test_data_shares_storage_and_is_untracked():
    w = fn.ones(2, 2, requires_grad=True)
    d = w.data
    assert not d.requires_grad
    d *= 3
    assert w.sum().item() == 12
    assert w.detach().requires_grad is False


def test_numpy_refuses_grad_tensors():
    w = fn.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        w.numpy()
    assert w.detach().numpy().tolist() == [1.0, 1.0]


# ---- printing ------------------------------------------------------------------------------


def test_repr_like_pytorch():
    assert repr(fn.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(fn.tensor([[1.5, -2.0], [3.0, 4.0]])) == (
        "tensor([[ 1.5000, -2.0000],\n        [ 3.0000,  4.0000]])")
    assert repr(fn.tensor(3)) == "tensor(3)"
    assert repr(fn.tensor([True, False])) == "tensor([ True, False])"
    assert repr(fn.tensor([1.0], dtype=fn.float64)) == "tensor([1.], dtype=fusionnet.float64)"
    assert repr(fn.ones(2, requires_grad=True)) == "tensor([1., 1.], requires_grad=True)"
    assert repr(fn.ones(2, requires_grad=True) * 2) == "tensor([2., 2.], grad_fn=<MulBackward0>)"
    assert repr(fn.zeros(0, 3)) == "tensor([], size=(0, 3))"


# ---- operators and methods ---------------------------------------------------------------

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)


@settings(max_examples=40, deadline=None)
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4),
       st.sampled_from(["+", "-", "*", "/", "**", "<", ">=", "=="]))
def test_binary_operators_broadcast_like_numpy(bs, op):
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 2, bs.input_shapes[0]).astype(np.float32)
    b = rng.uniform(0.5, 2, bs.input_shapes[1]).astype(np.float32)
    expr = f"x {op} y"
    got = eval(expr, {"x": fn.tensor(a), "y": fn.tensor(b)})  # noqa: S307 - fixed operator set
    want = eval(expr, {"x": a, "y": b})  # noqa: S307
    assert tuple(got.shape) == np.shape(want)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, shapes, elements=st.floats(-3, 3)),
       st.sampled_from(["abs", "exp", "tanh", "sigmoid", "relu", "neg"]))
def test_unary_methods_match_numpy(a, name):
    ref = {"abs": np.abs, "exp": np.exp, "tanh": np.tanh, "neg": np.negative,
           "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "relu": lambda x: np.maximum(x, 0)}[name]
    got = getattr(fn.tensor(a), name)()
    np.testing.assert_allclose(got.numpy(), ref(a), rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
                  elements=st.floats(-3, 3)), st.data())
def test_reductions_match_numpy(a, data):
    dim = data.draw(st.integers(-a.ndim, a.ndim - 1))
    keep = data.draw(st.booleans())
    t = fn.tensor(a)
    np.testing.assert_allclose(t.sum(dim, keep).numpy(), a.sum(dim, keepdims=keep))
    np.testing.assert_allclose(t.mean(dim, keep).numpy(), a.mean(dim, keepdims=keep))
    values, indices = t.max(dim, keep)
    np.testing.assert_allclose(values.numpy(), a.max(dim, keepdims=keep))
    np.testing.assert_array_equal(indices.numpy(), a.argmax(dim, keepdims=keep))
    np.testing.assert_allclose(t.min().item(), a.min())
    assert t.argmax().item() == a.argmax()


def test_layout_methods():
    a = np.arange(24.0).reshape(2, 3, 4)
    t = fn.tensor(a)
    np.testing.assert_array_equal(t.reshape(4, -1).numpy(), a.reshape(4, -1))
    np.testing.assert_array_equal(t.view(6, 4).numpy(), a.reshape(6, 4))
    np.testing.assert_array_equal(t.flatten().numpy(), a.ravel())
    np.testing.assert_array_equal(t.flatten(1).numpy(), a.reshape(2, 12))
    np.testing.assert_array_equal(t.transpose(0, 2).numpy(), a.transpose(2, 1, 0))
    np.testing.assert_array_equal(t.permute(1, 2, 0).numpy(), a.transpose(1, 2, 0))
    np.testing.assert_array_equal(t.T.numpy(), a.T)
    assert t.unsqueeze(1).shape == (2, 1, 3, 4) and t.unsqueeze(-1).shape == (2, 3, 4, 1)
    assert t.unsqueeze(0).squeeze().shape == (2, 3, 4)
    assert fn.ones(1, 3, 1).squeeze(0).shape == (3, 1)
    assert fn.ones(3, 1).expand(3, 5).shape == (3, 5)
    assert fn.ones(3, 1).expand(2, -1, 4).shape == (2, 3, 4)
    m = fn.tensor(a[0])
    np.testing.assert_array_equal(m.t().numpy(), a[0].T)
    np.testing.assert_allclose(m.mm(m.t()).numpy(), a[0] @ a[0].T)
    np.testing.assert_allclose(fn.matmul(t, m.t()).numpy(), a @ a[0].T)


def test_conversions():
    x = fn.tensor([1.7, -2.2])
    assert x.long().tolist() == [1, -2] and x.long().dtype == fn.int64
    assert x.double().dtype == fn.float64 and x.float() is x
    assert x.to(fn.float64).dtype == fn.float64 and x.to("cpu") is x
    assert x.clamp(min=0).tolist() == [pytest.approx(1.7), 0.0]


def test_cat_stack_and_functions():
    a, b = fn.ones(2, 3), fn.zeros(1, 3)
    assert fn.cat([a, b]).shape == (3, 3) and fn.cat((a, a), dim=1).shape == (2, 6)
    assert fn.stack([a, a]).shape == (2, 2, 3) and fn.stack([a, a], dim=2).shape == (2, 3, 2)
    x = fn.tensor([-1.0, 2.0])
    assert fn.relu(x).tolist() == [0.0, 2.0] and fn.exp(fn.zeros(1)).item() == 1.0
    assert fn.where(x > 0, x, fn.zeros(2)).tolist() == [0.0, 2.0]
    assert fn.max(x).item() == 2.0 and fn.maximum(x, fn.zeros(2)).tolist() == [0.0, 2.0]


# ---- indexing ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [
    1, -1, slice(1, 3), (Ellipsis, 0), (None, 1), (slice(None), None, 2),
    (slice(None, None, 2), slice(1, None)), ([0, 2],), (slice(None), [1, 0, 1]),
])
def test_getitem_matches_numpy(key):
    a = np.arange(20.0).reshape(4, 5)
    t = fn.tensor(a)
    k = tuple(fn.tensor(x) if isinstance(x, list) else x for x in key) if isinstance(
        key, tuple) else key
    np.testing.assert_array_equal(t[k].numpy(), a[key])


def test_boolean_mask_indexing_and_assignment():
    a = np.arange(6.0).reshape(2, 3)
    t = fn.tensor(a)
    np.testing.assert_array_equal(t[t > 2].numpy(), a[a > 2])
    t[t > 2] = 0
    a[a > 2] = 0
    np.testing.assert_array_equal(t.numpy(), a)


def test_setitem_forms():
    t = fn.zeros(3, 4)
    t[:] = 1
    t[0, 0] = 42
    t[1] = fn.arange(4).float()
    t[:, 3] += 5
    t[fn.tensor([2, 2])] = -1
    want = np.ones((3, 4))
    want[0, 0] = 42
    want[1] = np.arange(4)
    want[:, 3] += 5
    want[2] = -1
    np.testing.assert_array_equal(t.numpy(), want)
    with pytest.raises(IndexError):
        t[5] = 1


def test_inplace_operators_write_in_place():
    x = fn.ones(3)
    y = x
    x += 1
    x *= 3
    x -= 1
    x /= 5
    assert y is x and x.tolist() == [1.0, 1.0, 1.0]
    i = fn.tensor([1, 2])
    with pytest.raises(RuntimeError, match="can't be cast"):
        i /= 2


# ---- errors --------------------------------------------------------------------------------


def test_mismatched_shapes_name_both_shapes():
    with pytest.raises(RuntimeError, match=r"\(2, 3\) and \(4,\)"):
        fn.ones(2, 3) + fn.ones(4)
    with pytest.raises(RuntimeError, match=r"\(2, 3\) and \(2, 3\) cannot be multiplied"):
        fn.ones(2, 3) @ fn.ones(2, 3)
    with pytest.raises(RuntimeError, match=r"invalid for input of size 6"):
        fn.ones(2, 3).reshape(4, 2)


def test_index_out_of_range_is_an_index_error():
    with pytest.raises(IndexError, match="getitem"):
        fn.ones(2, 3)[5]
