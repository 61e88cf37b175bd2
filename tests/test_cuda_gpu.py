"""The CUDA backend on a real GPU: fused results equal eager CuPy and the CPU, a forward
is one CUDA graph launch, the device-side and host loops agree, the device is guarded,
mixed devices give eager's error. Every test is marked ``gpu`` and skipped (with the
reason) without CuPy and a GPU; ``benchmarks/gpu_check.py`` runs them and the benchmark.

Not yet run on a GPU: see docs/gpu.md ("remains to verify on a GPU").
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import fusionnet as fn
from fusionnet import nn, zoo
from fusionnet.runtime import FusionFallbackWarning, fuse

pytestmark = pytest.mark.gpu


def _to_cuda(module):
    """``module.cuda()`` plus plain tensor attributes (``FixedHiddenMLP.rand_weight``),
    which ``Module.to`` leaves where they are, as PyTorch does."""
    module.cuda()
    for m in module.modules():
        for key, value in list(vars(m).items()):
            if isinstance(value, fn.Tensor):
                setattr(m, key, value.cuda())
    return module


def _fused_cuda(name, batch=2, seed=0):
    fn.manual_seed(seed)
    cls, features = zoo.CHAPTER_BLOCKS[name]
    module = cls()
    x = fn.randn(batch, features)
    with fn.no_grad():
        module(x)  # materialise lazy layers on the CPU, then move
    want_cpu = module(x).detach().numpy()
    _to_cuda(module)
    return module, fuse(module, fallback=False), x, want_cpu


def _entry(fused):
    (entry,) = {id(e): e for e in fused._fusion_runner.exact.values()}.values()
    assert entry.fn is not None, entry.reason
    return entry


@pytest.mark.parametrize("name", sorted(zoo.CHAPTER_BLOCKS))
def test_chapter_blocks_fused_on_cuda_match_eager_and_cpu(name):
    module, fused, x, want_cpu = _fused_cuda(name)
    xc = x.cuda()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusionFallbackWarning)
        with fn.no_grad():
            outs = [fused(xc) for _ in range(3)]
            eager = module(xc)
    for out in outs:
        assert out.is_cuda and out.dtype == eager.dtype
        np.testing.assert_allclose(out.cpu().numpy(), eager.cpu().numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.cpu().numpy(), want_cpu, rtol=1e-4, atol=1e-5)
    assert outs[0] is not outs[1], "each call returns its own output"
    assert _entry(fused).compiled.__class__.__name__ == "CudaCompiled"


def test_mlp_batch_2_is_one_graph_launch():
    module, fused, x, _ = _fused_cuda("MLP")
    xc = x.cuda()
    with fn.no_grad():
        for _ in range(3):
            fused(xc)
    compiled = _entry(fused).compiled
    assert compiled.compile_stats() == {"plans": 1, "graphs": 1}, compiled.notes


@pytest.mark.parametrize("loops", ["device", "host"])
def test_fixed_hidden_mlp_loop_on_the_device_and_on_the_host(loops, monkeypatch):
    monkeypatch.setenv("FUSIONNET_CUDA_LOOPS", loops)
    module, fused, x, want_cpu = _fused_cuda("FixedHiddenMLP")
    with fn.no_grad():
        for scale in (1.0, 100.0, 1e4):  # 0, a few and many iterations
            xc = (x * scale).cuda()
            got = fused(xc)
            np.testing.assert_allclose(got.cpu().numpy(), module(xc).cpu().numpy(),
                                       rtol=1e-5, atol=1e-6)
    stats = _entry(fused).compiled.compile_stats()
    assert stats["graphs"] == (1 if loops == "device" else 0), _entry(fused).compiled.notes


def test_cublas_path_and_capture_of_cublas(monkeypatch):
    """cuBLAS plus the epilogue kernel gives the tiled kernel's result; and whether this
    CuPy lets cuBLAS run during stream capture (the runner assumes it does not)."""
    import cupy  # noqa: PLC0415

    monkeypatch.setenv("FUSIONNET_CUDA_GEMM", "cublas")
    module, fused, x, want_cpu = _fused_cuda("MLP", batch=64)
    with fn.no_grad():
        got = fused(x.cuda())
    np.testing.assert_allclose(got.cpu().numpy(), want_cpu, rtol=1e-4, atol=1e-5)
    a = cupy.ones((8, 8), cupy.float32)
    out = cupy.empty((8, 8), cupy.float32)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        try:
            cupy.matmul(a, a, out=out)
            allowed = True
        except NotImplementedError:
            allowed = False
        finally:
            stream.end_capture()
    print(f"cuBLAS during stream capture allowed by CuPy {cupy.__version__}: {allowed}")


def test_large_gemm_uses_cublas_and_matches():
    fn.manual_seed(1)
    lin = nn.Linear(1024, 1024)
    x = fn.randn(1024, 1024)
    want = lin(x).detach().numpy()
    lin.cuda()
    fused = fuse(nn.Sequential(lin, nn.ReLU()), fallback=False)
    with fn.no_grad():
        got = fused(x.cuda())
    np.testing.assert_allclose(got.cpu().numpy(), np.maximum(want, 0), rtol=1e-3, atol=1e-3)
    assert "cublas" in _entry(fused).compiled.notes[0]


def test_device_is_guarded_and_mixed_devices_give_the_eager_error():
    fn.manual_seed(2)
    module = zoo.MLP()
    x = fn.randn(2, 20)
    module(x)
    fused = fuse(module)
    with fn.no_grad():
        cpu = fused(x)
        with pytest.raises(RuntimeError) as eager_err:
            module(x.cuda())  # parameters on the CPU, input on the GPU
        with pytest.raises(RuntimeError) as fused_err, warnings.catch_warnings():
            warnings.simplefilter("ignore", FusionFallbackWarning)
            fused(x.cuda())
        assert str(fused_err.value).splitlines()[0] == str(eager_err.value).splitlines()[0]
        module.cuda()
        gpu = fused(x.cuda())
    assert len(fused._fusion_runner.exact) >= 2  # a CPU and a CUDA signature
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=1e-5, atol=1e-6)


def test_elementwise_ops_and_reductions_match_eager_cupy():
    rng = np.random.default_rng(3)
    a = fn.from_numpy(rng.standard_normal((64, 33)).astype(np.float32)).cuda()
    b = fn.from_numpy(rng.standard_normal((64, 33)).astype(np.float32)).cuda()

    class Ops(nn.Module):
        def forward(self, a, b):
            return (a.sigmoid() * b.tanh() + a.relu() - b.abs().sqrt(), a.exp().sum(dim=1),
                    (a - a.mean(dim=0, keepdim=True)).amax(), fn.where(a > b, a, b).clamp(-1, 1),
                    a.erf() / (b.abs() + 1), (a > 0).sum())
    module = Ops()
    with fn.no_grad():
        got, want = fuse(module, fallback=False)(a, b), module(a, b)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(g.cpu().numpy(), w.cpu().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(fn.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device_gets_its_own_entry():
    module, fused, x, want_cpu = _fused_cuda("MLP")
    with fn.no_grad():
        a = fused(x.cuda(0))
        module.cuda(1)
        b = fused(x.cuda(1))
    assert b.device == fn.device("cuda:1")
    np.testing.assert_allclose(a.cpu().numpy(), b.cpu().numpy(), rtol=1e-5, atol=1e-6)
