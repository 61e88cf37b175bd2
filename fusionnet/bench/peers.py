"""The implementations the suite compares: fusionnet eager and fused, and the peers.

A builder takes ``(spec, net)`` and returns an :class:`Impl`, or raises
:class:`Skip` with a note when the peer is not installed or not written for that
model. Optional libraries are imported inside the builders (through
``import_optional``, which tests replace) so a missing one never breaks the suite.
"""
from __future__ import annotations

import functools
import importlib
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

import fusionnet

from .models import ModelSpec, chimera_parts, layers, lenet_parts

__all__ = ["Impl", "Skip", "BUILDERS", "import_optional"]


class Skip(Exception):
    """This implementation cannot run here; the message is the note shown for the row."""


@dataclass
class Impl:
    """One implementation of one model: ``call(prepare(X))`` is what gets timed."""

    name: str
    prepare: Callable[[np.ndarray], object]   # NumPy input -> the impl's own input (untimed)
    call: Callable[[object], object]          # the forward that is timed
    to_numpy: Callable[[object], np.ndarray]  # the impl's output -> NumPy (untimed)
    fused: object = None                      # the FusedModule, for the fused impl
    compile_s: float | None = None            # first-call time, for jit peers that report it
    note: str = ""


def import_optional(name: str):
    """Import an optional peer library; tests monkeypatch this to simulate its absence."""
    return importlib.import_module(name)


def _need(name: str):
    try:
        return import_optional(name)
    except Exception as err:  # noqa: BLE001 - a broken install is as absent as a missing one
        raise Skip(f"{name} not available ({type(err).__name__}: {err})") from None


def _tensor_out(y) -> np.ndarray:
    return np.asarray(y.detach().numpy())


def _eager(spec: ModelSpec, net) -> Impl:
    return Impl("eager", fusionnet.from_numpy, net, _tensor_out)


def _fused(spec: ModelSpec, net) -> Impl:
    fused = fusionnet.fuse(net)
    return Impl("fused", fusionnet.from_numpy, fused, _tensor_out, fused=fused)


# ---- NumPy ----------------------------------------------------------------------------------

def _np_chain(X, chain):
    for W, b, relu in chain:
        X = X @ W.T + b
        if relu:
            np.maximum(X, 0, out=X)
    return X


def _np_chimera(X, p):
    X = _np_chain(X, p["chain"])
    X = X @ p["W"].T + p["b"]                                   # FixedHiddenMLP.linear
    X = np.maximum(X @ p["rand_weight"] + np.float32(1), 0)
    X = X @ p["W"].T + p["b"]                                   # the same layer, reused
    while np.abs(X).sum() > 1:
        X /= 2
    return X.sum()


def _np_lenet(X, p):
    view = np.lib.stride_tricks.sliding_window_view
    for W, b, pad in p["convs"]:
        X = np.pad(X, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        windows = view(X, W.shape[2:], axis=(2, 3))           # (N, C, OH, OW, kh, kw)
        X = np.tensordot(windows, W, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
        X = np.maximum(X + b[:, None, None], 0)
        n, c, h, w = X.shape                                  # 2x2 max pooling, stride 2
        X = X.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    return _np_chain(np.ascontiguousarray(X.reshape(X.shape[0], -1)), p["linears"])


def _numpy(spec: ModelSpec, net) -> Impl:
    if spec.conv:
        parts = lenet_parts(net)
        return Impl("numpy", np.ascontiguousarray, lambda X: _np_lenet(X, parts), np.asarray)
    if spec.chain is None:
        parts = chimera_parts(net)
        return Impl("numpy", np.ascontiguousarray, lambda X: _np_chimera(X, parts), np.asarray)
    chain = layers(spec, net)
    return Impl("numpy", np.ascontiguousarray, lambda X: _np_chain(X, chain), np.asarray)


# ---- numba: one hand-written @njit forward --------------------------------------------------

@functools.cache
def _njit_funcs():
    import numba  # noqa: PLC0415 - compiled only when the njit peer is asked for

    # Written the way a careful numba user would: BLAS for the products (np.dot reads
    # the transposed weight in place) and one loop for bias + ReLU. The one-liner
    # `np.maximum(X @ W1.T + b1, 0) @ W2.T + b2` is several times slower at large
    # batches (temporaries, and numba's `@` copes badly with a transposed operand).
    @numba.njit
    def linear(X, W, b, relu):
        out = np.dot(X, W.T)
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                v = out[i, j] + b[j]
                out[i, j] = max(v, np.float32(0)) if relu else v
        return out

    @numba.njit
    def mlp(X, W1, b1, W2, b2):
        return linear(linear(X, W1, b1, True), W2, b2, False)

    @numba.njit
    def chain(X, Ws, bs, relus):
        for i in range(len(Ws)):
            X = linear(X, Ws[i], bs[i], relus[i])
        return X

    @numba.njit
    def chimera(X, Ws, bs, relus, W, b, R):
        X = chain(X, Ws, bs, relus)
        X = linear(X, W, b, False)
        X = np.maximum(np.dot(X, R) + np.float32(1), np.float32(0))
        X = linear(X, W, b, False)
        while np.abs(X).sum() > 1:
            X = X / np.float32(2)
        return np.float32(X.sum())  # numba sums float32 into float64; NumPy keeps float32

    return mlp, chain, chimera


def _njit(spec: ModelSpec, net) -> Impl:
    if spec.conv:
        raise Skip(f"no njit forward written for {spec.name}")
    return _njit_mlp(spec, net)


def _njit_mlp(spec: ModelSpec, net) -> Impl:
    mlp, chain_fn, chimera_fn = _njit_funcs()
    if spec.chain is None:
        p = chimera_parts(net)
        Ws, bs, relus = (tuple(x) for x in zip(*p["chain"]))
        W, b, R = p["W"], p["b"], p["rand_weight"]
        return Impl("njit", np.ascontiguousarray,
                    lambda X: chimera_fn(X, Ws, bs, relus, W, b, R), np.asarray)
    chain = layers(spec, net)
    if [r for _, _, r in chain] == [True, False]:  # the reference: MLP-shaped nets
        (W1, b1, _), (W2, b2, _) = chain
        return Impl("njit", np.ascontiguousarray, lambda X: mlp(X, W1, b1, W2, b2), np.asarray)
    Ws, bs, relus = (tuple(x) for x in zip(*chain))
    return Impl("njit", np.ascontiguousarray, lambda X: chain_fn(X, Ws, bs, relus), np.asarray)


# ---- PyTorch and JAX (optional) -------------------------------------------------------------

def _torch_lenet(torch, net):
    parts = lenet_parts(net)
    convs = [(torch.from_numpy(W), torch.from_numpy(b), pad) for W, b, pad in parts["convs"]]
    chain = [(torch.from_numpy(W), torch.from_numpy(b), r) for W, b, r in parts["linears"]]
    F = torch.nn.functional

    def forward(X):
        for W, b, pad in convs:
            X = F.max_pool2d(F.relu(F.conv2d(X, W, b, padding=pad)), 2)
        X = X.flatten(1)
        for W, b, relu in chain:
            X = F.linear(X, W, b)
            if relu:
                X = F.relu(X)
        return X

    return torch, forward


def _torch_forward(spec: ModelSpec, net):
    torch = _need("torch")
    if spec.conv:
        return _torch_lenet(torch, net)
    F = torch.nn.functional

    def run_chain(X, chain):
        for W, b, relu in chain:
            X = F.linear(X, W, b)
            if relu:
                X = F.relu(X)
        return X

    if spec.chain is None:  # the chapter's chimera, as its PyTorch code runs it
        p = chimera_parts(net)
        chain = [(torch.from_numpy(W), torch.from_numpy(b), r) for W, b, r in p["chain"]]
        W, b, R = (torch.from_numpy(p[k]) for k in ("W", "b", "rand_weight"))

        def chimera(X):
            X = F.linear(run_chain(X, chain), W, b)
            X = F.relu(torch.mm(X, R) + 1)
            X = F.linear(X, W, b)
            while X.abs().sum() > 1:
                X /= 2
            return X.sum()

        return torch, chimera
    chain = [(torch.from_numpy(W), torch.from_numpy(b), r) for W, b, r in layers(spec, net)]
    return torch, lambda X: run_chain(X, chain)


def _torch_impl(name, fn, torch, compile_s=None) -> Impl:
    def call(X):
        with torch.inference_mode():
            return fn(X)
    return Impl(name, torch.from_numpy, call, lambda y: y.detach().numpy(), compile_s=compile_s)


def _torch(spec: ModelSpec, net) -> Impl:
    torch, forward = _torch_forward(spec, net)
    return _torch_impl("torch", forward, torch)


def _torch_compile(spec: ModelSpec, net) -> Impl:
    torch, forward = _torch_forward(spec, net)
    try:
        compiled = torch.compile(forward)
        start = time.perf_counter()
        with torch.inference_mode():  # compile now, so a failure is a skip, not an error
            compiled(torch.zeros(2, *spec.sample_shape))
        took = time.perf_counter() - start
    except Exception as err:  # noqa: BLE001 - no compiler, unsupported Python, ...
        raise Skip(f"torch.compile failed: {type(err).__name__}: {str(err)[:200]}") from None
    return _torch_impl("torch.compile", compiled, torch, compile_s=took)


def _jax(spec: ModelSpec, net) -> Impl:
    jax = _need("jax")
    jnp = importlib.import_module("jax.numpy")
    if spec.chain is None or spec.conv:
        raise Skip(f"no jax forward written for {spec.name}")
    chain = [(jnp.asarray(W), jnp.asarray(b), r) for W, b, r in layers(spec, net)]

    @jax.jit
    def forward(X):
        for W, b, relu in chain:
            X = X @ W.T + b
            if relu:
                X = jnp.maximum(X, 0)
        return X

    start = time.perf_counter()
    forward(jnp.zeros((2, *spec.sample_shape), jnp.float32)).block_until_ready()
    took = time.perf_counter() - start
    # block_until_ready: JAX dispatches asynchronously, so time the finished result.
    return Impl("jax.jit", jnp.asarray, lambda X: forward(X).block_until_ready(), np.asarray,
                compile_s=took, note="compile_cold_s: jit of the batch-2 shape")


#: impl name -> builder, in the order the table shows them.
BUILDERS: dict[str, Callable[[ModelSpec, object], Impl]] = {
    "eager": _eager, "fused": _fused, "numpy": _numpy, "njit": _njit, "torch": _torch,
    "torch.compile": _torch_compile, "jax.jit": _jax,
}
