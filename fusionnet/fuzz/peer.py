"""``--torch``: the same case on PyTorch, compared with eager fusionnet.

A case only uses API that fusionnet and PyTorch share, so swapping its three import
lines gives the PyTorch block. Both blocks are built, run once without grad (so lazy
layers get their shapes), and fusionnet's ``state_dict`` is copied into PyTorch's as
NumPy arrays; then the first call (``BATCHES[0]``) and its backward are compared with
the tolerances of :mod:`fusionnet.fuzz.compare`. Differences are ``torch`` mismatches,
counted apart from eager-vs-fused ones: they are about fusionnet's eager semantics.
PyTorch is imported only here, and only in this mode.
"""
from __future__ import annotations

import sys

import numpy as np

import fusionnet

from .compare import (ROUNDING, case_flips, case_rtol, compare_arrays, compare_outputs,
                      describe_exception, flatten,
                      same_kind)
from .data import make_arrays
from .generate import IMPORTS, TORCH_IMPORTS

__all__ = ["compare_with_torch", "torch_module"]


def torch_module(source: str, path: str):
    """The case's source with PyTorch's imports, executed as a fresh module."""
    module = type(sys)("fusionnet_fuzz_torch_case")
    module.__file__ = path
    code = source.replace(IMPORTS, TORCH_IMPORTS, 1)
    exec(compile(code, f"{path} (torch)", "exec"), module.__dict__)  # noqa: S102
    return module


def _inputs(lib, arrays, specs, grad: bool):
    out = []
    for a, spec in zip(arrays, specs):
        t = lib.from_numpy(np.array(a, copy=True))
        if grad and spec.get("requires_grad"):
            t.requires_grad_(True)
        out.append(t)
    return out


def _call(lib, block, xs, seed: int):
    lib.manual_seed(seed)
    try:
        return block(*xs), None
    except Exception as exc:  # noqa: BLE001 - the block's error is data here
        return None, exc


def _backward(lib, outs, weights) -> Exception | None:
    try:
        loss = None
        for t, w in zip(outs, weights):
            term = (t * lib.from_numpy(np.array(w, copy=True))).sum()
            loss = term if loss is None else loss + term
        if loss is not None:
            loss.backward()
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def compare_with_torch(module, path: str, source: str | None = None) -> list:
    """Mismatches (kind ``torch``) between eager fusionnet and PyTorch on the first call."""
    import warnings  # noqa: PLC0415

    import torch  # noqa: PLC0415 - a test-only peer, loaded only in --torch mode

    from .run import Mismatch  # noqa: PLC0415 - run imports this module lazily

    torch.set_num_threads(1)
    if getattr(module, "RANDOM_OPS", False):
        return []  # dropout draws different numbers in the two libraries
    if source is None:
        with open(path) as f:
            source = f.read()
    found = []

    def mismatch(phase, detail):
        found.append(Mismatch("torch", phase, detail))

    seed, batch, specs = module.SEED, module.BATCHES[0], module.INPUTS
    arrays = make_arrays(specs, batch, seed, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmod = torch_module(source, path)
        fusionnet.manual_seed(seed)
        fb = module.Block()
        torch.manual_seed(seed)
        tb = tmod.Block()
        with fusionnet.no_grad():
            _call(fusionnet, fb, _inputs(fusionnet, arrays, specs, False), seed)
        with torch.no_grad():
            _call(torch, tb, _inputs(torch, arrays, specs, False), seed)
        from ..nn.parameter import UninitializedParameter  # noqa: PLC0415
        # A lazy layer forward never called has no values yet, here and in PyTorch: its
        # entries are left out of the copy.
        own = {k: v for k, v in fb.state_dict().items()
               if not isinstance(v, UninitializedParameter)}
        try:
            state = {k: torch.from_numpy(np.array(v.detach().numpy(), copy=True))
                     for k, v in own.items()}
            tb.load_state_dict(state, strict=len(own) == len(fb.state_dict()))
        except Exception as exc:  # noqa: BLE001
            mismatch("state", f"load_state_dict into the PyTorch block failed: "
                              f"{describe_exception(exc)}")
            return found
        xf, xt = _inputs(fusionnet, arrays, specs, True), _inputs(torch, arrays, specs, True)
        out_f, err_f = _call(fusionnet, fb, xf, seed + 1)
        out_t, err_t = _call(torch, tb, xt, seed + 1)
        if err_f is not None or err_t is not None:
            # PyTorch's error is the reference: fusionnet's must be caught where it is.
            if (err_f is None) != (err_t is None) or not same_kind(err_t, err_f):
                mismatch("call1", f"fusionnet: {_outcome(err_f)}; PyTorch: {_outcome(err_t)}")
            return found
        rtol = case_rtol(module)
        for diff in compare_outputs(out_t, out_f, rtol=rtol, flips=case_flips(source)):
            if ROUNDING not in diff:  # a last-bit flip of a discrete result (compare.py)
                mismatch("call1", diff.replace("fused", "fusionnet").replace("eager", "PyTorch"))
        _, tf = flatten(out_f)
        _, tt = flatten(out_t)
        chosen = [i for i, t in enumerate(tt) if t.requires_grad and i < len(tf)
                  and tf[i].requires_grad]
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 13])
        weights = [rng.standard_normal(tuple(tt[i].shape)).astype(str(tt[i].dtype)[6:])
                   for i in chosen]
        err_f = _backward(fusionnet, [tf[i] for i in chosen], weights)
        err_t = _backward(torch, [tt[i] for i in chosen], weights)
        if err_f is not None or err_t is not None:
            if (err_f is None) != (err_t is None):
                mismatch("grad1", f"fusionnet: {_outcome(err_f)}; PyTorch: {_outcome(err_t)}")
            return found
        fparams = dict(fb.named_parameters())
        pairs = [(f"input {i}", a.grad, b.grad) for i, (a, b) in enumerate(zip(xt, xf))]
        pairs += [(f"parameter {name}", p.grad, getattr(fparams.get(name), "grad", None))
                  for name, p in tb.named_parameters()]
        reference = max([_largest(gt) for _, gt, _ in pairs] + [0.0])
        for what, gt, gf in pairs:
            _grad(mismatch, what, gt, gf, rtol, reference)
    return found


def _largest(grad) -> float:
    if grad is None:
        return 0.0
    a = np.abs(grad.detach().numpy().astype(np.float64))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def _grad(mismatch, what: str, gt, gf, rtol, reference) -> None:
    if (gt is None) != (gf is None):
        mismatch("grad1", f"{what}: .grad is {'None' if gf is None else 'set'} in fusionnet, "
                          f"{'None' if gt is None else 'set'} in PyTorch")
    elif gt is not None:
        diff = compare_arrays(gt.detach().numpy(), gf.detach().numpy(), rtol=rtol,
                              reference=reference)
        if diff:
            diff = diff.replace("fused", "fusionnet").replace("eager", "PyTorch")
            mismatch("grad1", f"{what}.grad: {diff}")


def _outcome(exc) -> str:
    return "returned a result" if exc is None else f"raised {describe_exception(exc)}"
