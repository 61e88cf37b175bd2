"""The training-step section of ``fusionnet bench``: one SGD step of an MLP with MSE.

Model: ``Linear(20, 256) -> ReLU -> Linear(256, 10)``, MSE loss, plain SGD (lr 0.01),
one step = zero_grad, forward, loss, backward, update. The implementations:

* ``torch``: PyTorch eager (CPU), if installed;
* ``eager``: fusionnet eager;
* ``fused-module``: ``fuse(net)`` with eager loss and optimiser (compiled forward and
  backward, one native call each);
* ``fused-step``: ``fuse(step)``, the whole step as one native call;
* ``numba-step``: a hand-written ``@njit`` step (forward, backward, update in one
  function, BLAS for the products), the floor for this machine.

Every implementation starts from the same weights and is checked against ``eager``
after a few steps (loss and weights). The ratios the docs quote are computed from one
run (:func:`ratios`).
"""
from __future__ import annotations

import functools

import numpy as np

from .timing import measure

__all__ = ["IMPLS", "BATCHES", "run_training", "ratios", "numba_step"]

IMPLS = ("torch", "eager", "fused-module", "fused-step", "numba-step")
BATCHES = (2, 4096)
LR = 0.01


def _weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((256, 20)) * 0.2).astype(np.float32)
    b1 = (rng.standard_normal(256) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((10, 256)) * 0.06).astype(np.float32)
    b2 = (rng.standard_normal(10) * 0.1).astype(np.float32)
    return [w1, b1, w2, b2]


@functools.cache
def numba_step():
    """The hand-written step: ``step(X, Y, W1, b1, W2, b2, lr) -> loss`` in place."""
    import numba  # noqa: PLC0415

    @numba.njit
    def step(X, Y, W1, b1, W2, b2, lr):
        B = X.shape[0]
        H = np.dot(X, W1.T)
        for i in range(B):
            for j in range(H.shape[1]):
                H[i, j] = max(H[i, j] + b1[j], np.float32(0))
        O = np.dot(H, W2.T)
        n = np.float32(B * O.shape[1])
        loss = 0.0
        for i in range(B):
            for j in range(O.shape[1]):
                d = O[i, j] + b2[j] - Y[i, j]
                loss += d * d
                O[i, j] = np.float32(2) * d / n      # dL/dO
        gW2 = np.dot(O.T, H)
        gb2 = O.sum(axis=0)
        GH = np.dot(O, W2)
        for i in range(B):
            for j in range(GH.shape[1]):
                if H[i, j] <= 0:
                    GH[i, j] = 0
        gW1 = np.dot(GH.T, X)
        gb1 = GH.sum(axis=0)
        W1 -= lr * gW1
        b1 -= lr * gb1
        W2 -= lr * gW2
        b2 -= lr * gb2
        return np.float32(loss / n)

    return step


def _fusionnet_net(weights):
    import fusionnet  # noqa: PLC0415
    from fusionnet import nn  # noqa: PLC0415

    net = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10))
    for p, w in zip(net.parameters(), weights):
        p.data = fusionnet.tensor(w.copy())
    return net


def _builders(weights):
    """name -> (make() -> (step(X, Y) -> loss float-like, params() -> arrays), to_input)."""
    def fusionnet_impl(kind):
        import fusionnet  # noqa: PLC0415
        from fusionnet import nn, optim  # noqa: PLC0415

        net = _fusionnet_net(weights)
        model = fusionnet.fuse(net) if kind == "fused-module" else net
        opt = optim.SGD(net.parameters(), lr=LR)
        loss_fn = nn.MSELoss()

        def step(X, Y):
            opt.zero_grad()
            loss = loss_fn(model(X), Y)
            loss.backward()
            opt.step()
            return loss
        run = fusionnet.fuse(step) if kind == "fused-step" else step
        return (lambda xy: run(*xy), lambda: [p._data for p in net.parameters()],
                lambda X, Y: (fusionnet.from_numpy(X), fusionnet.from_numpy(Y)))

    def torch_impl():
        import torch  # noqa: PLC0415

        torch.set_num_threads(max(1, torch.get_num_threads()))
        net = torch.nn.Sequential(torch.nn.Linear(20, 256), torch.nn.ReLU(),
                                  torch.nn.Linear(256, 10))
        with torch.no_grad():
            for p, w in zip(net.parameters(), weights):
                p.copy_(torch.from_numpy(w))
        opt = torch.optim.SGD(net.parameters(), lr=LR)
        loss_fn = torch.nn.MSELoss()

        def step(xy):
            opt.zero_grad()
            loss = loss_fn(net(xy[0]), xy[1])
            loss.backward()
            opt.step()
            return loss
        return (step, lambda: [p.detach().numpy() for p in net.parameters()],
                lambda X, Y: (torch.from_numpy(X), torch.from_numpy(Y)))

    def numba_impl():
        fn = numba_step()
        ws = [w.copy() for w in weights]
        lr = np.float32(LR)
        return (lambda xy: fn(xy[0], xy[1], *ws, lr), lambda: ws, lambda X, Y: (X, Y))

    return {"torch": torch_impl, "eager": lambda: fusionnet_impl("eager"),
            "fused-module": lambda: fusionnet_impl("fused-module"),
            "fused-step": lambda: fusionnet_impl("fused-step"), "numba-step": numba_impl}


def _scalar(loss) -> float:
    return float(loss.item()) if hasattr(loss, "item") else float(loss)


def run_training(batches=BATCHES, impls=IMPLS, repeats: int = 7,
                 min_sample_s: float = 0.02, progress=None) -> list[dict]:
    """Time one training step per implementation and batch size; returns rows
    ``{"batch", "impl", "status", "median_us", "q1_us", "q3_us", "note"}``."""
    weights = _weights()
    rows = []
    for batch in batches:
        rng = np.random.default_rng(batch)
        X = rng.standard_normal((batch, 20)).astype(np.float32)
        Y = rng.standard_normal((batch, 10)).astype(np.float32)
        reference = None
        for name in impls:
            if progress is not None:
                print(f"\rtraining step b={batch} {name}          ", end="", file=progress,
                      flush=True)
            try:
                step, params, to_input = _builders(weights)[name]()
            except ImportError as err:
                rows.append({"batch": batch, "impl": name, "status": "skipped",
                             "note": f"{type(err).__name__}: {err}"})
                continue
            xy = to_input(X, Y)
            losses = [_scalar(step(xy)) for _ in range(3)]   # also compiles
            got = [np.array(a, copy=True) for a in params()]
            status, note = "ok", ""
            if name == "eager":
                reference = (losses, got)
            elif reference is not None:
                same = np.allclose(losses, reference[0], rtol=1e-4, atol=1e-6) and all(
                    np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(got, reference[1]))
                status = "ok" if same else "FAILED"
                note = "" if same else "losses or weights differ from eager after 3 steps"
            t = measure(step, xy, repeats=repeats, min_sample_s=min_sample_s)
            rows.append({"batch": batch, "impl": name, "status": status,
                         "median_us": t.median_us, "q1_us": t.q1_us, "q3_us": t.q3_us,
                         "note": note})
    if progress is not None:
        print(file=progress)
    return rows


def ratios(rows) -> dict:
    """The ratios the issue's targets are stated in, per batch size (from one run)."""
    at = {(r["batch"], r["impl"]): r.get("median_us") for r in rows}
    out = {}
    for batch in sorted({r["batch"] for r in rows}):
        def ratio(a, b):
            x, y = at.get((batch, a)), at.get((batch, b))
            return None if x is None or y is None else x / y
        out[batch] = {"fused-step / numba-step": ratio("fused-step", "numba-step"),
                      "fused-step / torch": ratio("fused-step", "torch"),
                      "eager / fused-module": ratio("eager", "fused-module")}
    return out


def summary_text(rows) -> str:
    """The section as a table, with the ratios."""
    lines = ["training step: MLP 20-256-10, MSE, SGD (median us per step)",
             f"{'batch':>6}  {'impl':<13} {'median':>10} {'IQR':>16}  status"]
    for r in rows:
        if r["status"] == "skipped":
            lines.append(f"{r['batch']:>6}  {r['impl']:<13} {'-':>10} {'':>16}  skipped "
                         f"({r['note']})")
            continue
        lines.append(f"{r['batch']:>6}  {r['impl']:<13} {r['median_us']:>10.1f} "
                     f"{r['q1_us']:>7.1f}-{r['q3_us']:<8.1f}  {r['status']} {r['note']}")
    for batch, rs in ratios(rows).items():
        text = ", ".join(f"{k} = {v:.3f}" for k, v in rs.items() if v is not None)
        lines.append(f"b={batch}: {text}")
    return "\n".join(lines)
