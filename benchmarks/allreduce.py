"""All-reduce time vs message size, the alpha-beta fit, and a data-parallel scaling estimate.

Run on 2 ranks: ``mpiexec -n 2 python benchmarks/allreduce.py`` (``--quick`` for a short
run, ``--json FILE`` to keep the numbers). It prints the markdown tables of
docs/distributed.md:

1. ``MPI_Allreduce`` (float32, sum) time per message size; every size is timed as the
   fastest of 5 rounds of back-to-back calls (the least disturbed figure on a shared
   machine), the slower rank's.
2. The alpha-beta fit ``t(n) = a + b * n`` (weighted by 1/t, so small and large messages
   count alike), and ``b`` refitted on the messages of 32 MiB and more, where the
   per-byte cost steps up. For N ranks: ``t(N, n) = a * log2(N) + b(n) * n * 2(N-1)/N``
   (latency: recursive doubling's log2(N) rounds; bandwidth: reduce-scatter +
   all-gather, which sends 2(N-1)/N of the message), with ``b(n)`` the measured 2-rank
   per-byte cost at that message size, so it equals the measurement at N = 2.
3. Per model (the chapter's MLP, the benchmark suite's WideMLP): compute time of one
   training step (forward, backward, SGD) per rank batch, fitted as ``c0 + c1 * b``;
   the measured 2-rank DDP step against the model's prediction; and the projected
   step time for N ranks at a fixed global batch, without and with overlapping the
   all-reduce with backward.
Both ranks compute at the same time, as in training; batch sizes are timed interleaved
(min over rounds), so warm-up and a neighbour's load do not land on one size.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per rank; before NumPy loads

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import fusionnet as torch  # noqa: E402
from fusionnet import distributed as dist  # noqa: E402
from fusionnet import nn, zoo  # noqa: E402

#: An assumed (not measured) cluster link for the projection: 10 Gb Ethernet with TCP.
NETWORK = {"name": "10 GbE (assumed)", "a": 30e-6, "b": 1 / 1.1e9}


def time_allreduce(comm, nbytes: int, budget_s: float) -> float:
    """Seconds per ``Allreduce`` of ``nbytes`` (float32), the slower rank's median."""
    from mpi4py import MPI

    buf = np.ones(max(nbytes // 4, 1), dtype=np.float32)
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)  # warm the path (and the buffers)
    comm.Barrier()
    t = time.perf_counter()
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    one = comm.allreduce(time.perf_counter() - t, op=MPI.MAX)
    reps = max(1, min(2000, int(budget_s / 5 / max(one, 1e-7))))
    rounds = []
    for _ in range(5):
        comm.Barrier()
        t = time.perf_counter()
        for _ in range(reps):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        rounds.append((time.perf_counter() - t) / reps)
    return comm.allreduce(min(rounds), op=MPI.MAX)


def fit_alpha_beta(sizes, times) -> tuple[float, float]:
    """Least squares ``t = a + b n`` in relative error (rows divided by ``t``)."""
    n, t = np.asarray(sizes, float), np.asarray(times, float)
    (a, b), *_ = np.linalg.lstsq(np.stack([1 / t, n / t], axis=1), np.ones_like(t),
                                 rcond=None)
    return float(a), float(b)


def per_byte(link: dict, nbytes: float) -> float:
    """The bandwidth term's cost per byte at this message size: from the measured table
    (interpolated in log-log) when the link has one, else the link's ``b``."""
    if "sizes" not in link:
        return link["b"]
    n = np.clip(nbytes, link["sizes"][0], link["sizes"][-1])
    t = math.exp(np.interp(math.log(n), np.log(link["sizes"]), np.log(link["times"])))
    return max(t - link["a"], 0.0) / n


def allreduce_model(link: dict, ranks: int, nbytes: float, messages: int) -> float:
    """Seconds to all-reduce ``nbytes`` split into ``messages`` equal buckets."""
    if ranks == 1:
        return 0.0
    bucket = nbytes / messages
    return messages * (link["a"] * math.log2(ranks)
                       + per_byte(link, bucket) * bucket * 2 * (ranks - 1) / ranks)


def _min_s(fns: dict, reps: int) -> dict:
    """Fastest time of each function over ``reps`` interleaved rounds (after a warm-up)."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, math.inf)
    for _ in range(reps):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t)
    return best


def time_model(comm, name, make, d_in, batches, global_batch, reps) -> dict:
    """Compute time per rank batch (fit), backward share, and the real 2-rank DDP step."""
    from mpi4py import MPI

    net = make()
    net(torch.randn(2, d_in))  # materialise lazy layers
    ddp = dist.DistributedDataParallel(net, auto_reduce=False)
    opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    loss_fn = nn.MSELoss()
    n_out = net(torch.randn(1, d_in)).shape[1]

    def step(b, reduce):
        X, y = torch.randn(b, d_in), torch.randn(b, n_out)
        def run():
            opt.zero_grad()
            loss_fn(ddp(X), y).backward()
            if reduce:
                ddp.reduce_gradients()
            opt.step()
        return run

    def slowest(seconds):
        return comm.allreduce(seconds, op=MPI.MAX)

    b_half = global_batch // comm.Get_size()
    X, y = torch.randn(b_half, d_in), torch.randn(b_half, n_out)
    fns = {b: step(b, False) for b in batches}
    fns.update({"forward": lambda: loss_fn(ddp(X), y), "ddp": step(b_half, True),
                "reduce": ddp.reduce_gradients})
    best = {k: slowest(v) for k, v in _min_s(fns, reps).items()}
    compute = {b: best[b] for b in batches}
    c1, c0 = np.polyfit(list(compute), list(compute.values()), 1)
    nbytes = sum(p.numel() * 4 for p in net.parameters())
    return {"name": name, "params": nbytes // 4, "bytes": nbytes, "buckets": len(ddp.buckets),
            "compute": compute, "c0": float(c0), "c1": float(c1),
            "backward_share": max(0.0, 1 - best["forward"] / (c0 + c1 * b_half)),
            "ddp_step": best["ddp"], "reduce": best["reduce"]}


def project(model: dict, link: dict, global_batch: int, ranks_list) -> list[dict]:
    """Step time per rank count at a fixed global batch (strong scaling). Communication
    is the Allreduce model plus the bucket copies (``model["copy"]``: the measured
    ``reduce_gradients`` time less the modelled 2-rank Allreduce), which do not
    depend on the rank count."""
    rows = []
    base = model["c0"] + model["c1"] * global_batch
    for ranks in ranks_list:
        comp = model["c0"] + model["c1"] * global_batch / ranks
        comm_s = allreduce_model(link, ranks, model["bytes"], model["buckets"])
        comm_s += model["copy"] if ranks > 1 else 0.0
        # Overlap hides communication behind backward, except the last bucket's.
        exposed = max(comm_s / model["buckets"], comm_s - model["backward_share"] * comp)
        rows.append({"ranks": ranks, "compute": comp, "comm": comm_s, "step": comp + comm_s,
                     "speedup": base / (comp + comm_s),
                     "step_overlap": comp + (exposed if ranks > 1 else 0.0),
                     "speedup_overlap": base / (comp + (exposed if ranks > 1 else 0.0))})
    return rows


def _fmt_s(s: float) -> str:
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def _size(n: int) -> str:
    for unit, k in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= k:
            return f"{n / k:g} {unit}"
    return f"{n} B"


def main() -> None:
    """Command-line entry point (every rank runs it; rank 0 prints)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--global-batch", type=int, default=256)
    args = parser.parse_args()
    rank, world = dist.init()
    if world != 2:
        raise SystemExit("run on two ranks: mpiexec -n 2 python benchmarks/allreduce.py")
    comm = dist.comm.world()
    sizes = [4 * 4**k for k in range(10)] + [2**k for k in range(21, 27 if args.quick else 28)]
    times = [time_allreduce(comm, n, 0.1 if args.quick else 0.4) for n in sizes]  # 4 B..128 MiB
    a, b = fit_alpha_beta(sizes, times)
    big = [i for i, n in enumerate(sizes) if n >= 32 * 2**20]
    b_big = float(np.polyfit([sizes[i] for i in big], [times[i] - a for i in big], 1)[0])
    gb = args.global_batch
    reps = 3 if args.quick else 9
    models = [time_model(comm, "MLP (zoo.MLP, 20-256-10)", zoo.MLP, 20, [8, 32, 128], gb, reps),
              time_model(comm, "WideMLP (zoo.WideMLP, 1024-4096-1024)", zoo.WideMLP, 1024,
                         [8, 32, 128], gb, max(2, reps // 2))]
    if rank:
        return
    print("| message | all-reduce (2 ranks) | alpha-beta fit | bandwidth |")
    print("| ---: | ---: | ---: | ---: |")
    for n, t in zip(sizes, times):
        print(f"| {_size(n)} | {_fmt_s(t)} | {_fmt_s(a + b * n)} | {n / t / 1e9:.2f} GB/s |")
    print(f"\nfit: a = {a * 1e6:.2f} us, b = {b * 1e9:.4f} ns/byte "
          f"({1 / b / 1e9:.2f} GB/s); half-bandwidth size a/b = {_size(int(a / b))}; "
          f"messages >= 32 MiB: b = {b_big * 1e9:.4f} ns/byte ({1 / b_big / 1e9:.2f} GB/s)\n")
    shm = {"name": "this machine (measured)", "a": a, "b": b, "sizes": sizes, "times": times}
    for m in models:
        modelled = allreduce_model(shm, 2, m["bytes"], m["buckets"])
        m["copy"] = max(0.0, m["reduce"] - modelled)
        predicted = m["c0"] + m["c1"] * gb / 2 + modelled + m["copy"]
        print(f"### {m['name']}: {m['params']:,} parameters, {_size(m['bytes'])}, "
              f"{m['buckets']} bucket(s)")
        print("compute per step (per rank batch): " + ", ".join(
            f"b={k}: {_fmt_s(v)}" for k, v in m["compute"].items()) +
              f"; fit {_fmt_s(m['c0'])} + {_fmt_s(m['c1'])}/sample; "
              f"backward share {m['backward_share']:.0%}")
        print(f"2 ranks, global batch {gb}: measured DDP step {_fmt_s(m['ddp_step'])}, "
              f"model {_fmt_s(predicted)}; reduce_gradients {_fmt_s(m['reduce'])} = "
              f"Allreduce model {_fmt_s(modelled)} + bucket copies {_fmt_s(m['copy'])}\n")
        for link in (shm, NETWORK):
            print(f"{link['name']}, global batch {gb}:\n")
            print("| ranks | compute | all-reduce | step | speedup | step, overlapped | "
                  "speedup, overlapped |")
            print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for r in project(m, link, gb, [1, 2, 4, 8, 16, 32, 64]):
                print(f"| {r['ranks']} | {_fmt_s(r['compute'])} | {_fmt_s(r['comm'])} | "
                      f"{_fmt_s(r['step'])} | {r['speedup']:.2f}x | "
                      f"{_fmt_s(r['step_overlap'])} | {r['speedup_overlap']:.2f}x |")
            print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sizes": sizes, "times": times, "a": a, "b": b, "b_big": b_big,
                       "models": models,
                       "network_assumed": NETWORK}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
