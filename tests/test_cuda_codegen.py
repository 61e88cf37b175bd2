"""The CUDA backend without a GPU: the CUDA C it generates for the chapter's blocks and for
every op compiles with ``nvcc`` (device code only, ``--cubin``, as NVRTC compiles it; skipped
without ``nvcc``), it renders the *same* lowered Program the numba backend renders (one
kernel per fused group, the same groups), and ``fuse`` picks it by the inputs' placement.

What the generated code computes is checked by ``tests/test_cuda_emulation.py``; on a GPU
by ``tests/test_cuda_gpu.py``.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import fusionnet as fn
from fusionnet import nn, zoo
from fusionnet.codegen import get_backend, lower
from fusionnet.codegen.cuda.module import loop_kernel_name, render
from fusionnet.codegen.cuda.loops import why_not_device_loop
from fusionnet.codegen.cuda.spellings import PRELUDE
from fusionnet.codegen.lower import Kernel, Loop, walk_steps
from fusionnet.codegen.numba.driver import render as render_numba
from fusionnet.ops import OPS, Kind
from fusionnet.passes import optimize
from fusionnet.runtime.compiler import Fallback, _backend_for
from fusionnet.runtime.signature import placement
from fusionnet.tracer import trace

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="needs nvcc (the CUDA toolkit)")


def _program(module, *inputs):
    with fn.no_grad():
        module(*inputs)  # materialise lazy layers
        return lower(optimize(trace(module, *inputs)), {}, backend=get_backend("cuda"))


def _nvcc(tmp_path, name: str, source: str) -> None:
    path = tmp_path / f"{name}.cu"
    path.write_text(source)
    proc = subprocess.run([NVCC, "--cubin", "-arch=sm_80", "--std=c++17", "-w", str(path),
                           "-o", str(tmp_path / f"{name}.cubin")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _chapter(name):
    fn.manual_seed(0)
    cls, features = zoo.CHAPTER_BLOCKS[name]
    return _program(cls(), fn.randn(2, features))


@needs_nvcc
@pytest.mark.parametrize("name", sorted(zoo.CHAPTER_BLOCKS))
def test_chapter_block_modules_compile_with_nvcc(tmp_path, name):
    source, kernels = render(_chapter(name))
    assert kernels
    _nvcc(tmp_path, name, source)


class Fn(nn.Module):
    """A block whose forward is ``f``."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, *xs):
        return self.f(*xs)


def _op_program(name, op, dtype):
    """A block applying elementwise row ``name`` to inputs of ``dtype`` (bool operands
    for the logical ops and ``where``'s condition)."""
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "f":
        x, y = (fn.from_numpy(rng.standard_normal((3, 4)).astype(dtype)) for _ in range(2))
    else:  # non-negative: integer pow refuses negative exponents
        x, y = (fn.from_numpy(rng.integers(0, 5, (3, 4)).astype(dtype)) for _ in range(2))
    extra = {"clamp": {"min": -0.5, "max": 0.5}, "cast": {"dtype": np.dtype(np.float64)}}
    attrs = extra.get(name, {})

    def f(a, b):
        from fusionnet.dispatch import apply  # noqa: PLC0415
        args = [a > 0, b > 0] if name.startswith("logical") else [a, b]
        if name == "where":
            args = [a > 0, a, b]
        return apply(name, *args[:op.arity], **attrs) * 1
    return _program(Fn(f), x, y)


def _all_op_modules():
    cuda = get_backend("cuda")
    for name, op in sorted(OPS.items()):
        if op.kind is Kind.ELEMENTWISE and cuda.supports(op) and op.arity:
            for dtype in (np.float32, np.float64, np.int64, np.int32):
                if dtype in (np.int64, np.int32) and name in ("exp", "log", "sqrt", "tanh",
                                                              "sigmoid", "erf"):
                    continue  # float-math rows turn integers into floats first anyway
                yield f"{name}_{np.dtype(dtype).name}", _op_program(name, op, dtype)
            if name == "pow":  # a single-element exponent: the square-root spelling
                for dtype in (np.float32, np.float64):
                    x = fn.from_numpy(np.arange(12, dtype=dtype).reshape(3, 4))
                    yield (f"pow_half_{np.dtype(dtype).name}",
                           _program(Fn(lambda a: a.pow(0.5) * 1), x))
        elif op.kind is Kind.REDUCTION and cuda.supports(op):
            for dtype in (np.float32, np.float64, np.int64):
                x = fn.from_numpy(np.arange(12, dtype=dtype).reshape(3, 4))
                for dim in (None, 1):
                    if dim is not None and name in ("max", "min"):
                        continue  # max(dim) also returns the argmax: not generated
                    if name == "mean" and dtype == np.int64:
                        continue  # eager refuses it
                    attrs = {} if dim is None else {"dim": dim}
                    yield (f"{name}_{np.dtype(dtype).name}_{dim}",
                           _program(Fn(lambda a, n=name, at=attrs: getattr(a * 1, n)(**at)), x))


@needs_nvcc
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # eager's log(-x), 1/0 while tracing
def test_every_elementwise_op_and_reduction_compiles_with_nvcc(tmp_path):
    sources = []
    for i, (_, prog) in enumerate(_all_op_modules()):
        # One translation unit: the kernels' names are made unique per program.
        sources += [k.source.replace(f" {name}(", f" {name}_{i}(", 1)
                    for name, k in render(prog)[1].items()]
    assert len(sources) > 80
    _nvcc(tmp_path, "ops", PRELUDE + "\n\n".join(sources))


@pytest.mark.parametrize("name", sorted(zoo.CHAPTER_BLOCKS))
def test_cuda_renders_the_programs_numba_renders(name):
    prog = _chapter(name)
    _, numba_kernels = render_numba(prog)
    _, cuda_kernels = render(prog)
    groups = [s for s in walk_steps(prog.steps) if isinstance(s, Kernel)]
    names = {k.name for k in groups}
    assert {n for n in numba_kernels if n != "forward" and not n.endswith("_par")} == names
    # one CUDA kernel per group (a GEMM with an epilogue also has the cuBLAS epilogue)
    by_step = {}
    for k in cuda_kernels.values():
        by_step.setdefault(id(k.step), []).append(k.launch)
    for g in groups:
        launches = sorted(by_step[id(g)])
        want = {"elementwise": ["elementwise"], "reduction": ["reduction"],
                "gemm": ["epilogue", "tiled"] if g.body else ["tiled"]}[g.kind]
        assert launches == want, (g.name, launches)
    loops = [s for s in walk_steps(prog.steps) if isinstance(s, Loop)]
    assert {loop_kernel_name(lp) for lp in loops if not why_not_device_loop(lp)} == \
        {n for n, k in cuda_kernels.items() if k.launch == "loop"}


def test_fixed_hidden_mlp_loop_runs_on_the_device():
    prog = _chapter("FixedHiddenMLP")
    (loop,) = [s for s in walk_steps(prog.steps) if isinstance(s, Loop)]
    assert why_not_device_loop(loop) == ""
    source, kernels = render(prog)
    assert kernels[loop_kernel_name(loop)].launch == "loop" and "while (go_)" in source


def test_kernel_parameters_are_pointer_strides_and_sizes():
    source, kernels = render(_chapter("MLP"))
    tiled = [k for k in kernels.values() if k.launch == "tiled"][0]
    kinds = [p[0] for p in tiled.params]
    assert kinds[:3] == ["array"] * 3 and kinds[-3:] == ["size"] * 3
    assert tiled.params[2][3] is True  # nn.Linear's weight is read transposed (x @ W.T)
    assert "long long B__s0, long long B__s1" in tiled.source


class FakeDeviceArray:
    """Enough of a CuPy array for placement(): a type and a device with an id."""

    def __init__(self, index):
        self.device = type("Dev", (), {"id": index})()


class _Runner:
    def __init__(self, backend="auto"):
        self.backend = backend


class _T:
    def __init__(self, data):
        self._data = data


def test_placement_is_the_device_guard():
    assert placement(np.zeros(2)) is np.ndarray
    assert placement(FakeDeviceArray(0)) == (FakeDeviceArray, 0)
    assert placement(FakeDeviceArray(0)) != placement(FakeDeviceArray(1))


def test_fuse_picks_the_backend_by_placement():
    where, backend = _backend_for(_Runner(), [_T(np.zeros(2))])
    assert where is np.ndarray and backend.name == "numba"
    where, backend = _backend_for(_Runner(), [_T(FakeDeviceArray(1))])
    assert where == (FakeDeviceArray, 1) and backend.name == "cuda"
    with pytest.raises(Fallback, match="different devices") as info:
        _backend_for(_Runner(), [_T(np.zeros(2)), _T(FakeDeviceArray(0))])
    assert info.value.partial is False  # runs eagerly, so eager raises its device error
    with pytest.raises(Fallback, match="backend='numba' was requested for inputs on a CUDA"):
        _backend_for(_Runner("numba"), [_T(FakeDeviceArray(0))])
    with pytest.raises(Fallback, match="backend='cuda' was requested for inputs on the CPU"):
        _backend_for(_Runner("cuda"), [_T(np.zeros(2))])
