"""Backends say what they generate: every op of the table is supported by every backend or
its lack is stated (``Backend.unsupported``), never silently missing; support comes from
the backend's spelling tables and the rows' facts, so a new reduction (``Op.reduction``)
or view op (``Op.layout``) is supported with no backend edit.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fusionnet.codegen import BACKENDS, Program, Unsupported, get_backend
from fusionnet.codegen.numba.emitters import ELEMENTWISE, render_op
from fusionnet.ops import LAYOUT_STEPS, OPS, Kind, Op, Reduction, register
from fusionnet.ops.rules import reduced_shape, same_dtype, same_shape


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_is_supported_or_stated_unsupported(backend, name):
    b = get_backend(backend)
    op = OPS[name]
    if b.supports(op):
        assert name not in b.unsupported
    else:
        assert name in b.unsupported, (f"{backend} neither generates {name!r} nor states why "
                                       f"not (it would say: {b.why_unsupported(op)})")
        assert b.why_unsupported(op) == b.unsupported[name] and b.unsupported[name].strip()


@pytest.mark.parametrize("backend", BACKENDS)
def test_tables_name_only_ops_of_the_right_kind(backend):
    b = get_backend(backend)
    kinds = {n: op.kind for n, op in OPS.items()}
    assert all(kinds.get(n) is Kind.ELEMENTWISE for n in b.elementwise), "stale spelling"
    assert all(kinds.get(n) is Kind.MATMUL for n in b.gemm)
    assert set(b.unsupported) <= set(OPS), "a stated op that is not in the table"
    assert not set(b.unsupported) & (set(b.elementwise) | set(b.gemm)), "spelled and refused"
    assert set(b.layout) == set(LAYOUT_STEPS)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_numba_spellings_render_with_their_operands(name):
    op = OPS[name]
    args = [f"v{i}" for i in range(op.arity)]
    attrs = {"dtype": np.dtype(np.float32), "min": 0.5, "max": 1.5}
    text = render_op(name, attrs, args, "float32", "float32")
    assert all(a in text for a in args)
    compile(text, name, "eval")  # valid Python


def test_cuda_backend_answers_supports_but_does_not_compile():
    cuda = get_backend("cuda")
    assert cuda.supports(OPS["add"]) and cuda.supports(OPS["sum"])
    assert not cuda.supports(OPS["matmul"])
    with pytest.raises(Unsupported, match="not built yet"):
        cuda.compile(Program("g"))
    with pytest.raises(Unsupported, match="no code generator for backend 'tpu'"):
        get_backend("tpu")


@pytest.fixture
def new_rows():
    """Register rows that only state facts (no spelling anywhere); removed afterwards."""
    added = []

    def add(op):
        added.append(register(op).name)
        return op

    yield add
    for name in added:
        OPS.pop(name, None)


def _reduction(name, combine):
    return Op(name, Kind.REDUCTION, 1, lambda xp, a, dim=None, keepdim=False: a,
              reduced_shape, same_dtype, None, "test reduction",
              reduction=Reduction(combine=combine, start=0) if combine else None)


def test_a_new_reduction_is_supported_through_the_op_it_combines_with(new_rows):
    new_rows(_reduction("test_sum_of_max", "maximum"))
    new_rows(_reduction("test_no_facts", None))
    for backend in BACKENDS:
        b = get_backend(backend)
        assert b.supports(OPS["test_sum_of_max"])
        assert "Op.reduction" in b.why_unsupported(OPS["test_no_facts"])


def test_a_reduction_must_combine_with_a_binary_elementwise_op(new_rows):
    for combine in ("no_such_op", "neg", "sum"):
        with pytest.raises(ValueError, match="binary elementwise"):
            register(_reduction("test_bad", combine))
    assert "test_bad" not in OPS


def test_a_new_view_op_is_supported_through_its_layout_steps(new_rows):
    new_rows(Op("test_flip2d", Kind.INJECTIVE, 1, lambda xp, a: a.T, same_shape, same_dtype,
                None, "test view", view=True,
                layout=lambda src, out: (("permute", (1, 0)),)))
    new_rows(Op("test_opaque_view", Kind.INJECTIVE, 1, lambda xp, a: a, same_shape, same_dtype,
                None, "a view with no layout steps", view=True))
    for backend in BACKENDS:
        b = get_backend(backend)
        assert b.supports(OPS["test_flip2d"])
        assert not b.supports(OPS["test_opaque_view"])


def test_asking_a_backend_and_optimizing_load_no_numba():
    code = ("import sys, fusionnet; from fusionnet import zoo; from fusionnet.codegen import "
            "get_backend, lower; from fusionnet.ops import OPS\n"
            "b = get_backend('numba'); [b.supports(op) for op in OPS.values()]\n"
            "net = zoo.MLP(); x = fusionnet.rand(2, 20); net(x)\n"
            "lower(fusionnet.optimize(fusionnet.trace(net, x)))\n"
            "assert 'numba' not in sys.modules, 'numba was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_fused_op_without_a_spelling_runs_eagerly_and_says_why(new_rows):
    import fusionnet as fn
    from fusionnet.dispatch import apply
    from fusionnet.runtime import FusionFallbackWarning, fuse

    new_rows(Op("test_twice", Kind.ELEMENTWISE, 1, lambda xp, a: a * 2, same_shape, same_dtype,
                None, "2 * x, spelled by no backend"))
    block = fn.nn.Module()
    block.forward = lambda t: apply("test_twice", t.exp())
    x = fn.tensor([0.0, 1.0])
    with pytest.warns(FusionFallbackWarning, match="no spelling for elementwise op 'test_twice'"):
        got = fuse(block)(x)
    # exp in double, rounded once (ops/elementwise.py: in_double)
    np.testing.assert_array_equal(got.numpy(), 2 * np.exp(x.numpy().astype(np.float64)).astype(np.float32))
