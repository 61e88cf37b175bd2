"""Top-level functions against PyTorch: one definition (the Tensor method) behind both
spellings, PyTorch's signatures and keyword aliases, and one dim rule with PyTorch's error."""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import fusionnet as fn
from fusionnet import functions

torch = pytest.importorskip("torch")

_X = np.arange(-3.0, 9.0).reshape(3, 4) / 2.0   # float, with a tie-free max per row
_Y = np.flip(_X).copy()


def _pair(a=_X):
    return fn.tensor(a), torch.tensor(a)


def _same(ours, theirs):
    """Equal values (and the same structure) for a result of each library."""
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs)
        for o, t in zip(ours, theirs):
            _same(o, t)
        return
    if isinstance(theirs, torch.Tensor):
        assert tuple(ours.shape) == tuple(theirs.shape)
        assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
    else:
        assert ours == theirs


# Each case: a call written once, run with (library, x, y) for both libraries.
CALLS = {
    "exp": lambda m, x, y: m.exp(x),
    "abs": lambda m, x, y: m.abs(x),
    "neg": lambda m, x, y: m.neg(x),
    "sign": lambda m, x, y: m.sign(x),
    "sqrt": lambda m, x, y: m.sqrt(m.abs(x)),
    "log": lambda m, x, y: m.log(m.abs(x) + 1),
    "erf": lambda m, x, y: m.erf(x),
    "sigmoid": lambda m, x, y: m.sigmoid(x),
    "tanh": lambda m, x, y: m.tanh(x),
    "relu": lambda m, x, y: m.relu(x),
    "pow": lambda m, x, y: m.pow(x, 2),
    "pow_scalar_base": lambda m, x, y: m.pow(2, x),
    "pow_keyword": lambda m, x, y: m.pow(x, exponent=3),
    "clamp": lambda m, x, y: m.clamp(x, min=-1.0),
    "clamp_both": lambda m, x, y: m.clamp(x, -1.0, 2.0),
    "maximum": lambda m, x, y: m.maximum(x, y),
    "minimum": lambda m, x, y: m.minimum(x, other=y),
    "sum": lambda m, x, y: m.sum(x),
    "sum_dim": lambda m, x, y: m.sum(x, 1),
    "sum_dims_keepdim": lambda m, x, y: m.sum(x, (0, 1), True),
    "sum_dtype": lambda m, x, y: m.sum(x, dim=0, dtype=m.float64),
    "mean_dim": lambda m, x, y: m.mean(x, dim=-1, keepdim=True),
    "max_all": lambda m, x, y: m.max(x),
    "max_dim": lambda m, x, y: tuple(m.max(x, 1)),
    "max_dim_keepdim": lambda m, x, y: tuple(m.max(x, dim=0, keepdim=True)),
    "max_elementwise": lambda m, x, y: m.max(x, y),
    "max_other_keyword": lambda m, x, y: m.max(x, other=y),
    "min_dim": lambda m, x, y: tuple(m.min(x, -1)),
    "min_elementwise": lambda m, x, y: m.min(x, y),
    "argmax": lambda m, x, y: m.argmax(x),
    "argmax_dim": lambda m, x, y: m.argmax(x, 1, keepdim=True),
    "argmin_dim": lambda m, x, y: m.argmin(x, dim=0),
    "matmul": lambda m, x, y: m.matmul(x, y.T),
    "mm": lambda m, x, y: m.mm(x, mat2=y.T),
    "flatten": lambda m, x, y: m.flatten(x),
    "flatten_range": lambda m, x, y: m.flatten(m.reshape(x, (3, 2, 2)), start_dim=1),
    "transpose": lambda m, x, y: m.transpose(x, dim0=0, dim1=1),
    "unsqueeze": lambda m, x, y: m.unsqueeze(x, -1),
    "squeeze": lambda m, x, y: m.squeeze(m.unsqueeze(x, 0), dim=0),
    "clone": lambda m, x, y: m.clone(x),
    "numel": lambda m, x, y: m.numel(x),
    "allclose": lambda m, x, y: m.allclose(x, x + 1e-9),
    "allclose_not": lambda m, x, y: m.allclose(x, y, rtol=0.1),
    "equal": lambda m, x, y: (m.equal(x, x), m.equal(x, y)),
    "reshape": lambda m, x, y: m.reshape(x, (4, -1)),
    "reshape_keyword": lambda m, x, y: m.reshape(x, shape=(2, 6)),
    "permute": lambda m, x, y: m.permute(x, (1, 0)),
    "permute_keyword": lambda m, x, y: m.permute(x, dims=(1, 0)),
    "where": lambda m, x, y: m.where(x > 0, x, y),
    "where_scalar": lambda m, x, y: m.where(x > 0, x, 0.0),
    "cat": lambda m, x, y: m.cat([x, y], 1),
    "concat": lambda m, x, y: m.concat((x, y)),
    "stack": lambda m, x, y: m.stack([x, y], dim=-1),
    "sin": lambda m, x, y: m.sin(x),
    "cos": lambda m, x, y: m.cos(x),
    "square": lambda m, x, y: m.square(x),
    "norm": lambda m, x, y: m.norm(x),
    "norm_p_dim": lambda m, x, y: m.norm(x, p=1, dim=1),
    "bmm": lambda m, x, y: m.bmm(x.reshape(1, 3, 4), y.T.reshape(1, 4, 3)),
    "meshgrid": lambda m, x, y: m.meshgrid(x[0], y[1], indexing="ij"),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_function_matches_torch(name):
    (x, tx), (y, ty) = _pair(_X), _pair(_Y)
    _same(CALLS[name](fn, x, y), CALLS[name](torch, tx, ty))


def test_every_function_is_covered_against_torch():
    tested = {name.split("_")[0] for name in CALLS}
    assert set(functions.__all__) <= tested, set(functions.__all__) - tested


@pytest.mark.parametrize("name", functions._METHODS)
def test_function_is_the_method(name):
    """One definition: the function has the method's docstring and signature (``input``
    for ``self``) and gives the method's result."""
    function, method = getattr(fn, name), getattr(fn.Tensor, name)
    assert function.__doc__ == method.__doc__ and function.__doc__
    assert function.__name__ == name and function.__module__ == "fusionnet.functions"
    params = list(inspect.signature(function).parameters)
    assert params[0] == "input"
    assert params[1:] == list(inspect.signature(method).parameters)[1:]
    assert f"{name}(input" in _help_text(function)


def _help_text(obj) -> str:
    import pydoc  # noqa: PLC0415
    return pydoc.render_doc(obj, renderer=pydoc.plaintext)


def test_help_shows_pytorch_signature_and_doc():
    text = _help_text(fn.sum)
    assert "sum(input, dim=None, keepdim=False, dtype=None)" in text
    assert "Sum over" in text and "axis=" in text
    assert "exp(input)" in _help_text(fn.exp) and "e to the x" in _help_text(fn.exp)


def test_every_public_name_has_a_docstring():
    for name in fn.__all__:
        obj = getattr(fn, name)
        if callable(obj) or inspect.ismodule(obj):
            assert (obj.__doc__ or "").strip(), name


# ---- NumPy's keyword names, as PyTorch accepts them ----------------------------------------

ALIASED = {
    "sum": lambda m, x: m.sum(x, axis=1, keepdims=True),
    "mean": lambda m, x: m.mean(x, axis=0),
    "max": lambda m, x: tuple(m.max(x, axis=1, keepdims=True)),
    "min": lambda m, x: tuple(m.min(x, axis=0)),
    "argmax": lambda m, x: m.argmax(x, axis=1, keepdims=True),
    "argmin": lambda m, x: m.argmin(x, axis=0, keepdims=True),
    "cat": lambda m, x: m.cat([x, x], axis=1),
    "concat": lambda m, x: m.concat([x, x], axis=0),
    "stack": lambda m, x: m.stack([x, x], axis=1),
    "method_sum": lambda m, x: x.sum(axis=0, keepdims=True),
    "method_max": lambda m, x: tuple(x.max(axis=0)),
    "method_amax": lambda m, x: x.amax(axis=1, keepdims=True),
    "method_amin": lambda m, x: x.amin(axis=0),
    "method_argmin": lambda m, x: x.argmin(axis=1),
    "method_any": lambda m, x: (x > 3).any(axis=1),
    "method_all": lambda m, x: (x > -3).all(axis=0, keepdims=True),
    "method_softmax": lambda m, x: x.softmax(axis=0),
    "method_log_softmax": lambda m, x: x.log_softmax(axis=1),
    "method_unsqueeze": lambda m, x: x.unsqueeze(axis=1),
    "method_squeeze": lambda m, x: x.unsqueeze(0).squeeze(axis=0),
}


@pytest.mark.parametrize("name", sorted(ALIASED))
def test_numpy_aliases_match_torch(name):
    x, tx = _pair()
    _same(ALIASED[name](fn, x), ALIASED[name](torch, tx))


@pytest.mark.parametrize("lib", [fn, torch], ids=["fusionnet", "torch"])
def test_a_name_and_its_alias_together_are_refused(lib):
    x = lib.tensor(_X)
    with pytest.raises(TypeError):
        x.sum(dim=0, axis=0)
    if lib is fn:  # torch's parser reports the alias as unexpected; ours names both
        with pytest.raises(TypeError, match="both 'keepdim' and its alias 'keepdims'"):
            fn.sum(x, 0, keepdim=True, keepdims=True)


def test_max_with_other_and_dim_is_refused():
    x = fn.tensor(_X)
    with pytest.raises(TypeError, match="either dim or other"):
        x.max(0, other=x)


def test_sum_in_dtype_adds_in_that_dtype():
    # 1e8 + 1 is 1e8 in float32: adding in float64, as dtype= asks, keeps the 1.
    a = np.array([1e8, 1.0, -1e8], np.float32)
    _same(fn.tensor(a).sum(dtype=fn.float64), torch.tensor(a).sum(dtype=torch.float64))
    b = np.array([True, True, False])
    _same(fn.tensor(b).sum(dtype=fn.int32), torch.tensor(b).sum(dtype=torch.int32))


# ---- dims: one rule, PyTorch's IndexError ------------------------------------------------

BAD_DIMS = {
    "sum": lambda m, x: x.sum(3),
    "sum_tuple": lambda m, x: m.sum(x, (0, -3)),
    "mean": lambda m, x: x.mean(-3),
    "amax": lambda m, x: x.amax(2),
    "max_dim": lambda m, x: x.max(2),
    "argmax": lambda m, x: x.argmax(2),
    "argmin": lambda m, x: m.argmin(x, -3),
    "softmax": lambda m, x: x.softmax(2),
    "unsqueeze": lambda m, x: x.unsqueeze(3),
    "unsqueeze_negative": lambda m, x: x.unsqueeze(-4),
    "squeeze": lambda m, x: x.squeeze(4),
    "transpose": lambda m, x: x.transpose(0, 2),
    "flatten": lambda m, x: x.flatten(0, 4),
    "flatten_start": lambda m, x: x.flatten(-3),
    "permute": lambda m, x: x.permute(0, 3),
    "cat": lambda m, x: m.cat([x, x], 2),
    "stack": lambda m, x: m.stack([x, x], 3),
    "stack_negative": lambda m, x: m.stack([x, x], -4),
    "size": lambda m, x: x.size(2),
    "scalar_sum": lambda m, x: x[0, 0].sum(1),
    "scalar_unsqueeze": lambda m, x: x[0, 0].unsqueeze(-2),
    "scalar_stack": lambda m, x: m.stack([x[0, 0]], 1),
}


@pytest.mark.parametrize("name", sorted(BAD_DIMS))
def test_out_of_range_dims_raise_pytorchs_index_error(name):
    x, tx = _pair()
    with pytest.raises(IndexError) as theirs:
        BAD_DIMS[name](torch, tx)
    with pytest.raises(IndexError, match=re.escape(str(theirs.value))):
        BAD_DIMS[name](fn, x)


def test_scalar_tensors_take_dims_zero_and_minus_one():
    for lib in (fn, torch):
        s = lib.tensor(2.5)
        assert s.sum(0).item() == s.sum(-1).item() == 2.5
        assert tuple(s.unsqueeze(-1).shape) == tuple(s.unsqueeze(0).shape) == (1,)
        assert tuple(s.transpose(0, -1).shape) == () and tuple(s.squeeze(0).shape) == ()
        assert tuple(s.flatten(0, -1).shape) == (1,)


def test_a_dim_given_twice_is_refused():
    x, tx = _pair()
    with pytest.raises(RuntimeError) as theirs:
        tx.sum((0, -2))
    with pytest.raises(RuntimeError, match=re.escape(str(theirs.value))):
        x.sum((0, -2))


@pytest.mark.parametrize("op, shapes, attrs", [
    ("permute", [(2, 3)], {"dims": (0, 3)}),
    ("cat", [(2, 3), (2, 3)], {"dim": 2}),
    ("stack", [(2, 3), (2, 3)], {"dim": 3}),
    ("sum", [(2, 3)], {"dim": 2}),
    ("argmax", [(2, 3)], {"dim": -3}),
])
def test_shape_rules_refuse_out_of_range_dims(op, shapes, attrs):
    """The tracer and the graph verifier trust shape rules: they must not wrap a bad dim."""
    with pytest.raises(IndexError, match="Dimension out of range"):
        fn.ops.OPS[op].shape(*shapes, **attrs)


def test_cat_of_zero_dimensional_tensors_is_refused():
    with pytest.raises(RuntimeError) as theirs:
        torch.cat([torch.tensor(1.0)])
    with pytest.raises(RuntimeError, match=re.escape(str(theirs.value))):
        fn.cat([fn.tensor(1.0)])
