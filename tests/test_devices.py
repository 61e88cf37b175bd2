"""Devices: fusionnet.device, fusionnet.cuda, device= on factories, Tensor.to/cuda/cpu.

The CPU tests simulate "no CUDA" (or a fake CuPy) by patching fusionnet/device.py's
cached CuPy state, so they mean the same thing on a GPU machine. Tests marked
``gpu`` need a real GPU and CuPy (tests/conftest.py skips them otherwise).
"""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import fusionnet as fn
import fusionnet.cuda

devmod = sys.modules["fusionnet.device"]  # the module (``fusionnet.device`` is the class)
HINT = "pip install 'fusionnet[gpu]'"


@pytest.fixture
def no_cuda(monkeypatch):
    """Behave as on a machine without CuPy."""
    monkeypatch.setattr(devmod, "_cupy_tried", True)
    monkeypatch.setattr(devmod, "_cupy", None)
    monkeypatch.setattr(devmod, "_cupy_count", 0)
    monkeypatch.setattr(devmod, "_cupy_reason", "CuPy is not installed")


def fake_cupy(count: int = 1, current: int = 0, device_count=None):
    """A stand-in for the few CuPy entry points that device.py and cuda.py touch."""
    state = {"current": current, "synced": []}

    class Device:
        def __init__(self, i):
            self.i = i

        def use(self):
            state["current"] = self.i

        def synchronize(self):
            state["synced"].append(self.i)

    runtime = types.SimpleNamespace(
        getDeviceCount=device_count or (lambda: count),
        getDevice=lambda: state["current"],
        getDeviceProperties=lambda i: {"name": f"Fake GPU {i}".encode()})
    mod = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime, Device=Device))
    return mod, state


@pytest.fixture
def fake_gpus(monkeypatch):
    """Behave as on a machine whose CuPy sees two GPUs (no arrays can be made)."""
    cp, state = fake_cupy(count=2)
    monkeypatch.setattr(devmod, "_cupy_tried", True)
    monkeypatch.setattr(devmod, "_cupy", cp)
    monkeypatch.setattr(devmod, "_cupy_count", 2)
    return state


# ---- fusionnet.device ----------------------------------------------------------------------

@pytest.mark.parametrize("args, kind, index, text", [
    (("cpu",), "cpu", None, "cpu"),
    (("cpu:0",), "cpu", None, "cpu"),
    (("cuda",), "cuda", None, "cuda"),
    (("cuda:1",), "cuda", 1, "cuda:1"),
    (("cuda", 3), "cuda", 3, "cuda:3"),
    ((2,), "cuda", 2, "cuda:2"),
    ((fn.device("cuda:4"),), "cuda", 4, "cuda:4"),
])
def test_device_objects_can_be_made_without_a_gpu(args, kind, index, text, no_cuda):
    d = fn.device(*args)
    assert (d.type, d.index, str(d)) == (kind, index, text)
    assert d == text and d == fn.device(text) and hash(d) == hash(fn.device(text))
    assert eval(repr(d), {"device": fn.device}) == d


@pytest.mark.parametrize("args, err", [
    (("tpu",), RuntimeError), (("cuda:x",), RuntimeError), (("cuda:-1",), RuntimeError),
    (("cuda:1", 1), RuntimeError), (("cpu", 1), RuntimeError), (("cuda", -1), RuntimeError),
    ((1.5,), TypeError), ((None,), TypeError), (("cuda", "1"), TypeError),
    (("cuda:１",), RuntimeError),  # a non-ASCII digit
])
def test_bad_device_specs(args, err):
    with pytest.raises(err, match="fusionnet.device"):
        fn.device(*args)


def test_devices_are_immutable_and_compare_sanely():
    d = fn.device("cuda:0")
    with pytest.raises(AttributeError):
        d.index = 1
    assert d != "cpu" and d != "cuda:1" and d != "not a device" and d != 0
    assert fn.device("cuda") != fn.device("cuda:0")  # 'cuda' means "the current one"
    assert len({fn.device("cpu"), fn.device("cpu:0"), fn.device("cuda:0")}) == 2


# ---- fusionnet.cuda without CUDA -----------------------------------------------------------

def test_cuda_module_without_cuda(no_cuda):
    assert fn.cuda.is_available() is False
    assert fn.cuda.device_count() == 0
    for call in (fn.cuda.current_device, lambda: fn.cuda.set_device(0),
                 fn.cuda.synchronize, fn.cuda.get_device_name):
        with pytest.raises(RuntimeError, match="CUDA is not available") as info:
            call()
        assert HINT in str(info.value) and "cupy-cuda12x" in str(info.value)


def test_this_machine_matches_the_conftest_skip():
    # The gpu-marked tests are skipped exactly when this is False.
    assert fn.cuda.is_available() == (fn.cuda.device_count() > 0)


@pytest.mark.parametrize("put", [
    lambda: fn.ones(2).cuda(),
    lambda: fn.ones(2).cuda(1),
    lambda: fn.ones(2).cuda(fn.device("cuda:0")),
    lambda: fn.ones(2).to("cuda"),
    lambda: fn.ones(2).to("cuda:0", fn.float64),
    lambda: fn.ones(2).to(device=fn.device("cuda")),
    lambda: fn.Tensor([1.0], device="cuda"),
    lambda: fn.tensor([1.0], device="cuda"),
    lambda: fn.as_tensor([1.0], device="cuda"),
    lambda: fn.zeros(2, device="cuda"),
    lambda: fn.ones(2, 3, device="cuda:0"),
    lambda: fn.empty(2, device=fn.device("cuda")),
    lambda: fn.full((2,), 1.0, device="cuda"),
    lambda: fn.rand(2, device="cuda"),
    lambda: fn.randn(2, device="cuda"),
    lambda: fn.randint(0, 5, (2,), device="cuda"),
    lambda: fn.arange(3, device="cuda"),
    lambda: fn.eye(2, device="cuda"),
    lambda: fn.zeros_like(fn.ones(2), device="cuda"),
    lambda: fn.ones_like(fn.ones(2), device="cuda"),
    lambda: fn.empty_like(fn.ones(2), device="cuda"),
    lambda: fn.full_like(fn.ones(2), 3.0, device="cuda"),
    lambda: fn.rand_like(fn.ones(2), device="cuda"),
    lambda: fn.randn_like(fn.ones(2), device="cuda"),
    lambda: fn.FloatTensor(2, device="cuda"),
])
def test_putting_data_on_cuda_without_cuda_says_how_to_install(put, no_cuda):
    with pytest.raises(RuntimeError, match="CUDA is not available") as info:
        put()
    assert HINT in str(info.value)


def test_unavailable_reasons(monkeypatch):
    for name in ("_cupy_tried", "_cupy", "_cupy_reason", "_cupy_count"):  # restored after
        monkeypatch.setattr(devmod, name, getattr(devmod, name))

    def reason_with(cupy_module):
        monkeypatch.setitem(sys.modules, "cupy", cupy_module)
        monkeypatch.setattr(devmod, "_cupy_tried", False)
        monkeypatch.setattr(devmod, "_cupy", None)
        return devmod.cuda_unavailable_reason()

    assert "not installed" in reason_with(None)  # None in sys.modules makes import fail
    assert "sees no GPU" in reason_with(fake_cupy(count=0)[0])

    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver")

    assert "cudaErrorInsufficientDriver" in reason_with(fake_cupy(device_count=no_driver)[0])
    assert reason_with(fake_cupy(count=1)[0]) == "" and fn.cuda.device_count() == 1


# ---- fusionnet.cuda with a fake CuPy (logic only: no arrays) -------------------------------

def test_cuda_module_with_fake_gpus(fake_gpus):
    assert fn.cuda.is_available() and fn.cuda.device_count() == 2
    assert fn.cuda.current_device() == 0
    fn.cuda.set_device(1)
    assert fn.cuda.current_device() == 1 and devmod.as_device("cuda") == fn.device("cuda:1")
    fn.cuda.set_device("cuda:0")
    fn.cuda.synchronize()
    fn.cuda.synchronize(fn.device("cuda:1"))
    assert fake_gpus["synced"] == [0, 1]
    assert fn.cuda.get_device_name(1) == "Fake GPU 1"
    with pytest.raises(RuntimeError, match="cuda:2 does not exist: this machine has 2"):
        fn.cuda.set_device(2)
    with pytest.raises(ValueError, match="expected a CUDA device"):
        fn.cuda.set_device("cpu")


def test_as_device_checks_the_gpu_index(fake_gpus):
    assert devmod.as_device("cuda:1") == fn.device("cuda", 1)
    assert devmod.as_device(None) == fn.device("cpu")
    with pytest.raises(RuntimeError, match="cuda:7 does not exist"):
        devmod.as_device("cuda:7")
    with pytest.raises(RuntimeError, match="cuda:7 does not exist"):
        fn.ones(2).cuda(7)


def test_device_guard(fake_gpus):
    import contextlib
    assert isinstance(devmod.device_guard("cpu"), contextlib.nullcontext)
    assert devmod.device_guard("cuda:1").i == 1


# ---- device= and Tensor.to on the CPU ------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda d: fn.tensor([1.0, 2.0], device=d),
    lambda d: fn.as_tensor([1, 2], device=d),
    lambda d: fn.Tensor([1.0], device=d),
    lambda d: fn.zeros(2, 3, device=d),
    lambda d: fn.ones((2,), device=d),
    lambda d: fn.empty(size=(2,), device=d),
    lambda d: fn.full((2,), 7, device=d),
    lambda d: fn.rand(2, device=d),
    lambda d: fn.randn(2, device=d),
    lambda d: fn.randint(0, 9, (3,), device=d),
    lambda d: fn.arange(0, 1, 0.25, device=d),
    lambda d: fn.eye(3, device=d),
    lambda d: fn.zeros_like(fn.ones(2), device=d),
    lambda d: fn.ones_like(fn.ones(2), device=d),
    lambda d: fn.empty_like(fn.ones(2), device=d),
    lambda d: fn.full_like(fn.ones(2), 2, device=d),
    lambda d: fn.rand_like(fn.ones(2), device=d),
    lambda d: fn.randn_like(fn.ones(2), device=d),
    lambda d: fn.FloatTensor(2, device=d),
    lambda d: fn.LongTensor([1, 2], device=d),
], ids=lambda f: "")
@pytest.mark.parametrize("where", [None, "cpu", "cpu:0", fn.device("cpu")], ids=str)
def test_every_factory_takes_a_cpu_device(make, where):
    t = make(where)
    assert t.device == fn.device("cpu") and t.device == "cpu" and not t.is_cuda
    assert type(t._data) is np.ndarray


def test_to_cpu_and_dtype_forms():
    x = fn.tensor([1.5, -2.0])
    assert x.cpu() is x and x.to("cpu") is x and x.to(fn.device("cpu")) is x
    assert x.to(fn.float32) is x and x.to(device="cpu", dtype=fn.float32) is x
    y = x.to(fn.float64)
    assert y.dtype == fn.float64 and y.tolist() == [1.5, -2.0]
    assert x.to("cpu", fn.int64).tolist() == [1, -2]
    assert x.to(dtype=fn.int32).dtype == fn.int32
    assert x.to(fn.arange(2)).dtype == fn.int64          # to(other): other's dtype and device
    c = x.to("cpu", copy=True)
    assert c is not x and c._data is not x._data and c.tolist() == x.tolist()


def test_to_keeps_autograd_across_a_cast():
    x = fn.tensor([1.0, 2.0], requires_grad=True)
    x.to(fn.float64).sum().backward()
    assert x.grad.dtype == fn.float32 and x.grad.tolist() == [1.0, 1.0]


def test_move_in_place_keeps_identity_and_moves_grad():
    p = fn.ones(3, requires_grad=True)
    (p * 2).sum().backward()
    i = fn.arange(3)
    assert devmod.move_(p, "cpu", fn.float64) is p
    assert p.dtype == fn.float64 and p.grad.dtype == fn.float64 and p.requires_grad
    assert devmod.move_(i, None, fn.float64).dtype == fn.int64  # only floats are cast
    assert devmod.move_(i) is i and i.tolist() == [0, 1, 2]


# ---- mixing devices ------------------------------------------------------------------------

class FakeGpuArray:
    """Enough of a CuPy array for dispatch to see a tensor on cuda:1."""

    device = types.SimpleNamespace(id=1)
    dtype = np.dtype(np.float32)
    shape = (2,)
    ndim = 1
    size = 2


@pytest.mark.parametrize("op", [
    lambda a, b: a + b,
    lambda a, b: b * a,
    lambda a, b: a @ b,
    lambda a, b: fn.maximum(a, b),
    lambda a, b: fn.where(a > 0, a, b),
])
def test_an_op_mixing_devices_names_both(op):
    cpu = fn.ones(2)
    gpu = fn.Tensor._wrap(FakeGpuArray())
    assert gpu.device == fn.device("cuda:1")
    with pytest.raises(RuntimeError, match="same device") as info:
        op(cpu, gpu)
    assert "cpu" in str(info.value) and "cuda:1" in str(info.value)


def test_writing_a_tensor_from_another_device_names_both():
    gpu = fn.Tensor._wrap(FakeGpuArray())
    with pytest.raises(RuntimeError, match="cuda:1.*cpu"):
        fn.zeros(2)[...] = gpu


# ---- on a real GPU -------------------------------------------------------------------------

FACTORIES = {
    "tensor": lambda d: fn.tensor([1.0, 2.0], device=d),
    "zeros": lambda d: fn.zeros(2, 3, device=d),
    "ones": lambda d: fn.ones(2, device=d),
    "empty": lambda d: fn.empty(2, device=d),
    "full": lambda d: fn.full((2,), 3, device=d),
    "rand": lambda d: fn.rand(4, device=d),
    "randn": lambda d: fn.randn(4, device=d),
    "randint": lambda d: fn.randint(0, 5, (4,), device=d),
    "arange": lambda d: fn.arange(5, device=d),
    "eye": lambda d: fn.eye(3, device=d),
    "zeros_like": lambda d: fn.zeros_like(fn.ones(2), device=d),
    "full_like": lambda d: fn.full_like(fn.ones(2), 2.0, device=d),
    "randn_like": lambda d: fn.randn_like(fn.ones(2), device=d),
    "FloatTensor": lambda d: fn.FloatTensor(2, device=d),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("where", ["cuda", "cuda:0", fn.device("cuda", 0)], ids=str)
def test_gpu_factories(name, where):
    t = FACTORIES[name](where)
    assert t.is_cuda and t.device == fn.device("cuda", fn.cuda.current_device())
    assert type(t._data).__module__.startswith("cupy")
    cpu = FACTORIES[name]("cpu")
    assert t.shape == cpu.shape and t.dtype == cpu.dtype


@pytest.mark.gpu
def test_gpu_to_cuda_and_cpu_round_trips():
    x = fn.randn(3, 4)
    g = x.cuda()
    assert g.is_cuda and g.cuda() is g and g.cuda(g.device.index) is g and g.to("cuda") is g
    assert g.to(g.device) is g and g.cpu() is not g
    assert g.cpu()._data.tobytes() == x._data.tobytes()   # bit-identical round trip
    assert g.to("cpu").device == fn.device("cpu")
    d = x.to("cuda", fn.float64)
    assert d.is_cuda and d.dtype == fn.float64 and np.array_equal(d.cpu().numpy(), x.numpy())
    i = fn.arange(4).cuda()
    assert i.dtype == fn.int64 and i.tolist() == [0, 1, 2, 3] and i.sum().item() == 6
    with pytest.raises(TypeError, match="cpu"):
        g.numpy()
    assert np.array_equal(np.asarray(g), x.numpy())


@pytest.mark.gpu
def test_gpu_ops_and_autograd_match_cpu():
    fn.manual_seed(0)
    xs, ws, bs = fn.randn(8, 5), fn.randn(5, 3), fn.randn(3)

    def run(dev):
        x = xs.to(dev)
        w = ws.to(dev).requires_grad_(True)
        b = bs.to(dev).requires_grad_(True)
        h = fn.relu(x @ w + b)
        z = (h.exp() / h.exp().sum(dim=1, keepdim=True)).log()
        loss = (z.mean() + fn.sigmoid(h).max() + fn.tanh(h).abs().sum()) * 0.5
        loss.backward()
        return loss, h, w.grad, b.grad

    cpu, gpu = run("cpu"), run("cuda")
    for c, g in zip(cpu, gpu):
        assert g.is_cuda and g.dtype == c.dtype and g.shape == c.shape
        np.testing.assert_allclose(g.cpu().detach().numpy(), c.detach().numpy(),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_gpu_indexing_reductions_and_inplace_match_cpu():
    x = fn.arange(12, dtype=fn.float32).reshape(3, 4)
    g = x.cuda()
    for f in (lambda t: t[1], lambda t: t[:, 1:3], lambda t: t[fn.tensor([0, 2], device=t.device)],
              lambda t: t.sum(0), lambda t: t.argmax(1), lambda t: t.T @ t,
              lambda t: fn.cat([t, t], 0), lambda t: t.clamp(2, 5)):
        assert np.array_equal(f(g).cpu().numpy(), f(x).numpy())
    g[0] = 7.0
    g += 1
    assert g.is_cuda and g[0].tolist() == [8.0] * 4


@pytest.mark.gpu
def test_gpu_mixing_cpu_and_cuda_names_both():
    with pytest.raises(RuntimeError, match="same device") as info:
        fn.ones(2) + fn.ones(2, device="cuda")
    assert "cpu" in str(info.value) and "cuda:" in str(info.value)


@pytest.mark.gpu
def test_gpu_second_device():
    if fn.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    x = fn.ones(2).cuda(1)
    assert x.device == fn.device("cuda:1") and x.cuda(1) is x
    assert x.cuda(0).device == fn.device("cuda:0")
    assert fn.zeros(2, device="cuda:1").device == fn.device("cuda:1")
    with pytest.raises(RuntimeError, match="cuda:0.*cuda:1|cuda:1.*cuda:0"):
        x + fn.ones(2, device="cuda:0")
    assert (x + x).device == fn.device("cuda:1")
