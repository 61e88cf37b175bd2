"""The CUDA backend's generated code *runs* here, on the CPU: every kernel of the module is
compiled with the host C++ compiler behind a small shim (one OS thread per CUDA thread, a
barrier for ``__syncthreads()``, ``static`` for ``__shared__``), and the backend's own host
runner (``fusionnet/codegen/cuda/runner.py``) drives it through a stand-in for the few
CuPy functions it calls. The stand-in keeps CUDA graph semantics: while a stream captures,
launches and copies are recorded, not run, and ``Graph.launch`` replays them with the
arguments bound at capture; ``cupy.matmul`` refuses to run during capture, as CuPy's
cuBLAS wrapper does. So this checks, without a GPU, what the kernels compute and what the
runner's buffers, views, graphs and loops do, against eager.

What it cannot check: real GPU scheduling (warps, memory ordering beyond barriers),
NVRTC's math library, cuBLAS, and speed. Those are the ``gpu`` tests
(``tests/test_cuda_gpu.py``). Skipped without a C++20 compiler.
"""
from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types

import numpy as np
import pytest

import fusionnet as fn
from fusionnet import nn, zoo
from fusionnet.codegen import get_backend, lower
from fusionnet.codegen.cuda import CudaBackend
from fusionnet.passes import optimize
from fusionnet.runtime.symbolic import analyse_batch
from fusionnet.tracer import trace

CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="needs a C++20 compiler (g++)")

_SHIM = r"""
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>
using namespace std;
struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
static std::barrier<>* emu_barrier = nullptr;
static inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
template <class F> static void emu_run(unsigned gx, unsigned gy, unsigned bx, unsigned by, F f) {
    gridDim = {gx, gy, 1}; blockDim = {bx, by, 1};
    for (unsigned y = 0; y < gy; ++y) for (unsigned x = 0; x < gx; ++x) {
        std::barrier<> bar(bx * by); emu_barrier = &bar;
        std::vector<std::thread> threads;
        for (unsigned ty = 0; ty < by; ++ty) for (unsigned tx = 0; tx < bx; ++tx)
            threads.emplace_back([&, x, y, tx, ty] {
                blockIdx = {x, y, 1}; threadIdx = {tx, ty, 1}; f(); });
        for (auto& t : threads) t.join();
    }
}
"""

_BUILT: dict = {}
_FOLDER: list = []  # one temporary folder for this process's builds, removed at exit


_SIGNATURE = re.compile(r'^extern "C" __global__ void (\w+)\((.*)\) \{$', re.M)


def _wrappers(source: str) -> list[str]:
    """A host entry point per kernel of ``source`` (read from its signature line) that runs
    it on an emulated grid: ``emu_<name>(gx, gy, bx, by, <the kernel's parameters>)``."""
    out = []
    for name, params in _SIGNATURE.findall(source):
        names = [p.split()[-1].lstrip("*") for p in params.split(", ")] if params else []
        sep = ", " if params else ""
        out.append(f'extern "C" void emu_{name}(unsigned gx_, unsigned gy_, unsigned bx_, '
                   f'unsigned by_{sep}{params}) {{ emu_run(gx_, gy_, bx_, by_, [&]() {{ '
                   f'{name}({", ".join(names)}); }}); }}')
    return out


def _build(source: str) -> ctypes.CDLL:
    text = _SHIM + source + "\n" + "\n".join(_wrappers(source))
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    if key not in _BUILT:
        if not _FOLDER:
            _FOLDER.append(tempfile.mkdtemp(prefix="fusionnet-cuda-emu-"))
            atexit.register(shutil.rmtree, _FOLDER[0], ignore_errors=True)
        src, lib = (os.path.join(_FOLDER[0], f"{key}.{ext}") for ext in ("cpp", "so"))
        with open(src, "w") as fh:
            fh.write(text)
        proc = subprocess.run([CXX, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread",
                               "-w", src, "-o", lib], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        _BUILT[key] = ctypes.CDLL(lib)
    return _BUILT[key]


class FakeCupy:
    """The CuPy functions the runner calls, over NumPy arrays and the emulated kernels."""

    def __init__(self):
        self.capturing = None          # the list being recorded while a stream captures
        self.launches = 0              # kernel launches that ran (not recorded)
        self.graph_launches = 0
        fake = self

        class Stream:
            def __init__(self, non_blocking=False):
                assert non_blocking, "capture needs a non-blocking stream"
                self.prev = None

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def begin_capture(self):
                fake.capturing = []

            def end_capture(self):
                recorded, fake.capturing = fake.capturing, None
                return Graph(recorded)

            def wait_event(self, event):
                pass

            def record(self, event=None):
                return Event()

        class Graph:
            def __init__(self, recorded):
                self.recorded = recorded

            def launch(self, stream=None):
                fake.graph_launches += 1
                for f in self.recorded:
                    f()

        class Event:
            def __init__(self, *a, **k):
                pass

            def record(self, stream=None):
                pass

        class Device:
            def __init__(self, i=0):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        null = Stream(non_blocking=True)
        self.cuda = types.SimpleNamespace(
            Stream=Stream, Event=Event, Device=Device, get_current_stream=lambda: null,
            runtime=types.SimpleNamespace(getDevice=lambda: 0))

    # the array functions the runner calls
    empty = staticmethod(np.empty)
    empty_like = staticmethod(np.empty_like)
    asarray = staticmethod(np.asarray)
    asnumpy = staticmethod(np.asarray)
    broadcast_to = staticmethod(np.broadcast_to)

    def _do(self, f):
        if self.capturing is not None:
            self.capturing.append(f)
        else:
            f()

    def copyto(self, dst, src, casting="same_kind"):
        self._do(lambda: np.copyto(dst, src, casting=casting))

    def matmul(self, a, b, out):
        if self.capturing is not None:  # as CuPy's cuBLAS wrapper refuses
            raise NotImplementedError("calling cuBLAS API during stream capture is "
                                      "currently unsupported")
        np.matmul(a, b, out=out)

    def RawModule(self, code, options=()):  # noqa: N802 - CuPy's name
        fake = self
        lib = _build(code)

        class Module:
            def get_function(self, name):
                f = getattr(lib, "emu_" + name)

                def launch(grid, block, args):
                    grid, block = tuple(grid) + (1,) * (2 - len(grid)), \
                        tuple(block) + (1,) * (2 - len(block))
                    cargs = [ctypes.c_void_p(a.__array_interface__["data"][0])
                             if isinstance(a, np.ndarray) else ctypes.c_longlong(int(a))
                             for a in args]

                    def run():
                        fake.launches += 1
                        f(ctypes.c_uint(grid[0]), ctypes.c_uint(grid[1]),
                          ctypes.c_uint(block[0]), ctypes.c_uint(block[1]), *cargs)
                    fake._do(run)
                return launch
        return Module()


def _compiled(module, *inputs, generic=False):
    """(CudaCompiled over a FakeCupy, the program's tail arrays) for ``module``."""
    with fn.no_grad():
        module(*inputs)  # materialise lazy layers
        traced = trace(module, *inputs)
        symbols = {}
        graph = optimize(traced)
        if generic:
            analysis = analyse_batch(module, list(inputs), traced, optimize)
            assert analysis.generic, analysis.reason
            graph, symbols = analysis.graph, {"B": ("x0", 0)}
    prog = lower(graph, symbols, backend=CudaBackend())
    xp = FakeCupy()
    compiled = CudaBackend().compile(prog, xp=xp)
    tail = [p.ref._data for p in prog.params] + [v for _, v in prog.constants]
    return compiled, tail, xp


def _check(module, compiled, tail, x, rtol=1e-5, atol=1e-6):
    with fn.no_grad():
        want = module(x)
    got = compiled.call([x._data], tail)
    if isinstance(want, tuple):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w.numpy(), rtol=rtol, atol=atol)
    else:
        assert got.dtype == want.numpy().dtype and got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), rtol=rtol, atol=atol)


CHAPTER = ["MLP", "SequentialMLP", "MySequential", "FixedHiddenMLP", "NestMLP", "Chimera",
           "TiedMLP", "CenteredLayer", "MyLinear", "LazyMLP"]


@pytest.mark.parametrize("name", CHAPTER)
def test_chapter_blocks_run_as_one_graph_and_match_eager(name, monkeypatch):
    monkeypatch.delenv("FUSIONNET_CUDA_GEMM", raising=False)
    fn.manual_seed(0)
    cls, features = zoo.CHAPTER_BLOCKS[name]
    module = cls()
    x = fn.randn(2, features)
    compiled, tail, xp = _compiled(module, x)
    _check(module, compiled, tail, x)                 # first call: launches, no graph
    assert xp.graph_launches == 0 and xp.launches > 0
    launches = xp.launches
    for seed in (1, 2):                               # then one graph launch per call
        fn.manual_seed(seed)
        _check(module, compiled, tail, fn.randn(2, features))
    assert xp.graph_launches == 2, compiled.notes
    assert xp.launches == launches * 3, "the graph replays the first call's launches"
    # The numba backend, rendering the very same Program, agrees.
    numba = get_backend("numba").compile(compiled.program)
    np.testing.assert_allclose(compiled.call([x._data], tail), numba.call([x._data], tail),
                               rtol=1e-5, atol=1e-6)


def test_gemms_through_cublas_are_not_captured(monkeypatch):
    monkeypatch.setenv("FUSIONNET_CUDA_GEMM", "cublas")
    module = zoo.MLP()
    x = fn.randn(3, 20)
    compiled, tail, xp = _compiled(module, x)
    for _ in range(3):
        _check(module, compiled, tail, x)
    assert xp.graph_launches == 0 and "launched one by one" in compiled.notes[0]
    # cuBLAS + one epilogue kernel per GEMM group (bias + relu, bias)
    assert xp.launches == 2 * 3


def test_a_failed_capture_keeps_launching(monkeypatch):
    monkeypatch.setenv("FUSIONNET_CUDA_GEMM", "cublas")
    module = zoo.MLP()
    x = fn.randn(2, 20)
    compiled, tail, xp = _compiled(module, x)
    _check(module, compiled, tail, x)
    plan = next(iter(compiled.plans.values()))
    plan.capture = True  # as if capture were attempted with cuBLAS in it
    for _ in range(2):
        _check(module, compiled, tail, x)
    assert plan.graph is None and any("capture failed (NotImplementedError" in n
                                      for n in compiled.notes)


@pytest.mark.parametrize("loops", ["device", "host"])
def test_data_dependent_loop_device_and_host(loops, monkeypatch):
    monkeypatch.setenv("FUSIONNET_CUDA_LOOPS", loops)
    fn.manual_seed(3)
    module = zoo.FixedHiddenMLP()
    x = fn.randn(2, 20) * 50  # many halvings
    compiled, tail, xp = _compiled(module, x)
    for _ in range(3):
        _check(module, compiled, tail, x)
    graphs = xp.graph_launches
    assert (graphs == 2) if loops == "device" else (graphs == 0)


def test_batch_generic_program_keeps_one_plan_per_batch_size():
    fn.manual_seed(4)
    module = zoo.MLP()
    compiled, tail, xp = _compiled(module, fn.randn(4, 20), generic=True)
    assert compiled.program.symbols == {"B": ("x0", 0)}
    for batch in (4, 7, 4, 1):
        _check(module, compiled, tail, fn.randn(batch, 20))
    assert compiled.compile_stats()["plans"] == 3


def test_a_moved_parameter_makes_a_new_plan():
    module = zoo.MLP()
    x = fn.randn(2, 20)
    compiled, tail, xp = _compiled(module, x)
    for _ in range(2):
        _check(module, compiled, tail, x)
    w = module.hidden.weight
    w.data = fn.from_numpy(np.ascontiguousarray(w.detach().numpy() * 2))  # new storage
    tail = [p.ref._data for p in compiled.program.params]
    _check(module, compiled, tail, x)
    assert compiled.compile_stats()["plans"] == 2


class Fn(nn.Module):
    """A block whose forward is ``f``."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, *xs):
        return self.f(*xs)


_RNG = np.random.default_rng(7)
_X = _RNG.standard_normal((3, 5)) * 2

UNARY = ["neg", "abs", "sign", "exp", "log", "sqrt", "sigmoid", "tanh", "relu", "erf"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_ops_match_eager(dtype):
    x = fn.from_numpy(_X.astype(dtype))
    y = fn.from_numpy((_RNG.standard_normal((3, 5)) + 0.1).astype(dtype))

    def f(a, b):
        outs = [getattr(a, u)() if u not in ("log", "sqrt") else getattr(a.abs() + 0.5, u)()
                for u in UNARY]
        outs += [a + b, a - b, a * b, a / b, a.abs() ** b, fn.maximum(a, b), fn.minimum(a, b),
                 (a > b).float(), (a <= b).float(), (a == a).float(), (a != b).float(),
                 fn.where(a > 0, a, b), a.clamp(-0.5, 0.7), a.clamp(min=0.1),
                 ((a > 0) & (b > 0)).float(), ((a > 0) | ~(b > 0)).float(), a.double(),
                 a.sigmoid().log()]
        return tuple(outs)
    module = Fn(f)
    compiled, tail, xp = _compiled_many(module, x, y)
    with fn.no_grad():
        want = module(x, y)
    got = compiled.call([x._data, y._data], tail)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.numpy().dtype
        np.testing.assert_allclose(g, w.numpy(), rtol=rtol, atol=1e-7)


def _compiled_many(module, *inputs):
    with fn.no_grad():
        traced = trace(module, *inputs)
    prog = lower(optimize(traced), {}, backend=CudaBackend())
    xp = FakeCupy()
    compiled = CudaBackend().compile(prog, xp=xp)
    return compiled, [p.ref._data for p in prog.params] + [v for _, v in prog.constants], xp


def test_integer_arithmetic_wraps_as_numpy():
    big = np.array([2**62, -2**62, 2**63 - 1, -2**63, 3, -7], dtype=np.int64)
    a, b = fn.from_numpy(big), fn.from_numpy(np.array([4, 4, 1, 3, 2, 3], dtype=np.int64))
    module = Fn(lambda a, b: (a * b, a + a, -a, a - b, a ** b, a.abs(), a / b, a.sum()))
    compiled, tail, _ = _compiled_many(module, a, b)
    with np.errstate(all="ignore"), fn.no_grad():
        want = module(a, b)
    got = compiled.call([a._data, b._data], tail)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w.numpy())


@pytest.mark.parametrize("case", ["sum", "sum_dim", "mean_keep", "amax", "amin_dim0",
                                  "int_sum", "sum_3d_mid", "side_output", "epilogue",
                                  "int_epilogue"])
def test_reductions_match_eager(case):
    x = fn.from_numpy(_RNG.standard_normal((4, 300)).astype(np.float32))
    x3 = fn.from_numpy(_RNG.standard_normal((3, 4, 5)))
    xi = fn.from_numpy(_RNG.integers(-10**12, 10**12, (4, 300)))
    f, arg = {
        "sum": (lambda a: (a * 2).sum(), x),
        "sum_dim": (lambda a: a.exp().sum(dim=1), x),
        "mean_keep": (lambda a: (a - a.mean(dim=1, keepdim=True)), x),
        "amax": (lambda a: a.amax(), x),
        "amin_dim0": (lambda a: a.amin(dim=0) + 1, x),
        "int_sum": (lambda a: (a * 3).sum(dim=1), xi),
        "sum_3d_mid": (lambda a: a.sum(dim=1), x3),
        # exp(a) stored by the reduction kernel that sums it, then read by the division
        "side_output": (lambda a: (lambda e: e / e.sum(dim=1, keepdim=True))(a.exp()), x),
        # a full reduction's 0-d consumers run once on the finished value (thread 0)
        "epilogue": (lambda a: a.abs().mean() * 2 - 1, x),
        "int_epilogue": (lambda a: (a * 3).sum() > 0, xi),
    }[case]
    module = Fn(f)
    compiled, tail, _ = _compiled_many(module, arg)
    with fn.no_grad():
        want = module(arg).numpy()
    got = compiled.call([arg._data], tail)
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_views_transposed_gemm_and_mixed_dtypes():
    a = fn.from_numpy(_RNG.standard_normal((6, 4)).astype(np.float32))
    w = fn.from_numpy(_RNG.standard_normal((6, 5)))
    module = Fn(lambda a, w: (a.t() @ w.float(), (a.t() @ w.float()).relu() * 2,
                              a.reshape(4, 6).t().sum(dim=0), a.unsqueeze(0).expand(2, 6, 4) + 1))
    compiled, tail, _ = _compiled_many(module, a, w)
    with fn.no_grad():
        want = module(a, w)
    got = compiled.call([a._data, w._data], tail)
    for g, w_ in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w_.numpy(), rtol=1e-5, atol=1e-5)


class FakeCudaArray(np.ndarray):
    """A NumPy array that reports a CUDA device: ``placement`` sees a device array, so
    ``fuse`` compiles with the CUDA backend, while eager ops still run on NumPy."""

    @property
    def device(self):
        """Device 0, as a CuPy array's ``device`` (only ``id`` is read)."""
        return types.SimpleNamespace(id=0)


def test_fuse_compiles_device_arrays_with_the_cuda_backend(monkeypatch):
    """The whole runtime path: signature with the placement, backend choice, the runner,
    one graph launch per call from the second; a host input of the same shape gets its own
    numba entry (the inline cache never hands it the device entry)."""
    from fusionnet.codegen.cuda.runner import CudaCompiled  # noqa: PLC0415
    from fusionnet.codegen.numba import NumbaCompiled  # noqa: PLC0415
    from fusionnet.runtime import fuse  # noqa: PLC0415

    xp = FakeCupy()
    # (fusionnet.device the attribute is the device class; the module is in sys.modules)
    monkeypatch.setattr(sys.modules["fusionnet.device"], "require_cupy", lambda dev=None: xp)
    fn.manual_seed(5)
    module = zoo.MLP()
    x = fn.randn(2, 20)
    module(x)
    fused = fuse(module, fallback=False)
    on_device = fn.Tensor._wrap(x._data.view(FakeCudaArray))
    with fn.no_grad():
        want = module(x).numpy()
        for _ in range(3):
            np.testing.assert_allclose(np.asarray(fused(on_device)._data), want, rtol=1e-5,
                                       atol=1e-6)
        for _ in range(2):
            np.testing.assert_allclose(fused(x).numpy(), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(fused(on_device)._data), want, rtol=1e-5,
                                   atol=1e-6)
    entries = {id(e): e for e in fused._fusion_runner.exact.values()}.values()
    kinds = sorted(type(e.compiled).__name__ for e in entries)
    assert kinds == sorted([CudaCompiled.__name__, NumbaCompiled.__name__])
    (device_entry,) = [e for e in entries if isinstance(e.compiled, CudaCompiled)]
    assert device_entry.placement == (FakeCudaArray, 0) and not device_entry.fast
    assert xp.graph_launches == 3
    runtime = dict(fn.explain(fused, on_device).sections)["runtime"]
    assert "CUDA module for 'MLP'" in runtime and "CUDA plans {'plans': 1, 'graphs': 1}" in runtime


def test_a_kept_output_survives_the_next_graph_launch():
    """Outputs are copied out of the plan's buffers, which the next launch overwrites."""
    module = zoo.MLP()
    x1, x2 = fn.randn(2, 20), fn.randn(2, 20)
    compiled, tail, xp = _compiled(module, x1)
    compiled.call([x1._data], tail)
    first = compiled.call([x1._data], tail)      # captured here, then launched
    kept = first.copy()
    second = compiled.call([x2._data], tail)     # a graph launch over the same buffers
    assert xp.graph_launches == 2
    np.testing.assert_array_equal(first, kept)
    assert not np.allclose(first, second)
