"""Two MPI ranks against one process: ``mpiexec -n 2`` runs this file as a worker.

Each rank trains ``DistributedDataParallel`` on its ``DistributedSampler`` shard and,
alongside, a single-process copy on the concatenated batch; after every step it
records how far its weights are from the copy's and from the other rank's. The tests
read those records. Skipped, with the reason, when the ``dist`` extra (mpi4py, an
``mpiexec``) is missing; every launch is bounded by ``timeout``.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60  # a launch takes ~5-10 s on 2 cores; the bound only stops a hang


def mpiexec_path() -> str | None:
    """The ``mpiexec`` the ``mpich`` wheel installed (beside this Python, or in the user
    scheme's scripts), else the one on ``PATH``."""
    for scripts in (Path(sys.executable).parent, sysconfig.get_path("scripts"),
                    sysconfig.get_path("scripts", f"{os.name}_user")):
        if scripts and (Path(scripts) / "mpiexec").exists():
            return str(Path(scripts) / "mpiexec")
    return shutil.which("mpiexec")


def skip_reason() -> str | None:
    """Why the MPI tests cannot run here, or None."""
    if importlib.util.find_spec("mpi4py") is None:
        return "the `dist` extra is not installed (no mpi4py): pip install -e '.[dist]'"
    if mpiexec_path() is None:
        return "the `dist` extra is incomplete: no mpiexec (pip install mpich)"
    return None


def launch(args: list[str], n: int = 2) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n n python ARGS`` under ``timeout``; kill the whole launch (its own
    process group) if it still hangs past the bound."""
    cmd = [mpiexec_path(), "-n", str(n), sys.executable, *args]
    if shutil.which("timeout"):
        cmd = ["timeout", "-k", "5", str(TIMEOUT_S), *cmd]
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S + 10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"mpiexec hung past {TIMEOUT_S + 10} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


# ---- the worker (runs on every rank under mpiexec) ---------------------------------------

CASES = {
    # name: (fused, optimizer, bucket_cap_mb, mode)
    "eager_sgd": (False, "sgd", 25.0, "auto"),
    "fused_adam_small_buckets": (True, "adam", 0.001, "auto"),
    "manual_reduce": (False, "sgd", 25.0, "manual"),
    "no_sync_accumulate": (False, "adam", 25.0, "no_sync"),
}
STEPS, SHARD_BATCH, N_DATA, D_IN = 5, 8, 64, 10


def _model(rank: int):
    import fusionnet as torch
    from fusionnet import nn

    class Net(nn.Module):
        """An MLP with a buffer, so that buffers must be broadcast too."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(D_IN, 32), nn.Tanh(), nn.Linear(32, 1))
            self.register_buffer("scale", torch.tensor(1.0 + rank))  # rank 0's: 1.0

        def forward(self, x):
            return self.body(x) * self.scale

    torch.manual_seed(100 + rank)  # different initial weights on each rank
    return Net()


def _flat(module):
    import numpy as np

    return np.concatenate([p.detach().numpy().ravel() for p in module.parameters()])


def _rank_gap(flat) -> float:
    """The largest difference of ``flat`` between any two ranks."""
    import numpy as np

    from fusionnet.distributed import comm

    return float(np.ptp(np.array(comm.world().allgather(flat)), axis=0).max())


def _run_case(name: str, rank: int, world: int) -> dict:
    import numpy as np

    import fusionnet as torch
    from fusionnet import distributed as dist, nn

    fused, optimizer, cap, mode = CASES[name]
    rng = np.random.default_rng(0)  # the same data on every rank
    X = rng.standard_normal((N_DATA, D_IN)).astype(np.float32)
    y = (np.sin(X[:, :1]) + 0.1 * X[:, 1:2]).astype(np.float32)
    net = _model(rank)
    before = _flat(net)
    ddp = dist.DistributedDataParallel(torch.fuse(net) if fused else net, bucket_cap_mb=cap,
                                       auto_reduce=(mode != "manual"))
    ref = copy.deepcopy(net)  # rank 0's initial state, trained as one process
    make = {"sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
            "adam": lambda ps: torch.optim.Adam(ps, lr=0.01)}[optimizer]
    opt, ref_opt = make(ddp.parameters()), make(ref.parameters())
    loss_fn = nn.MSELoss()
    samplers = [dist.DistributedSampler(range(N_DATA), num_replicas=world, rank=r, seed=7)
                for r in range(world)]
    record = {"before_gap": _rank_gap(before), "after_bcast_gap": _rank_gap(_flat(net)),
              "ref_gap": [], "grad_gap": [], "rank_gap": [], "messages": [], "buckets": ddp.buckets,
              "n_params": len(list(net.parameters()))}
    micro = 2 if mode == "no_sync" else 1
    for epoch in range(2):
        for s in samplers:
            s.set_epoch(epoch)
        shards = [list(s) for s in samplers]
        for step in range(STEPS // 2 + 1):
            sl = slice(step * SHARD_BATCH, (step + 1) * SHARD_BATCH)
            mine = shards[rank][sl]
            everyone = [i for sh in shards for i in sh[sl]]  # the concatenated batch
            sent = ddp.comm_stats["allreduce_calls"]
            opt.zero_grad()
            ref_opt.zero_grad()
            for m in range(micro):  # no_sync: the first micro-batch accumulates locally
                mine_m = mine[m::micro]
                ctx = ddp.no_sync() if m < micro - 1 else contextlib.nullcontext()
                with ctx:
                    loss_fn(ddp(torch.tensor(X[mine_m])), torch.tensor(y[mine_m])).backward()
                part = [i for sh in shards for i in sh[sl][m::micro]]  # all ranks' micro-batch
                loss_fn(ref(torch.tensor(X[part])), torch.tensor(y[part])).backward()
            if mode == "manual":
                ddp.reduce_gradients()  # where a compiled step reduces: after backward
            # Gradients too: Adam's update barely sees a gradient's scale.
            record["grad_gap"].append(max(
                float(np.abs(p.grad.numpy() - q.grad.numpy()).max())
                for p, q in zip(net.parameters(), ref.parameters())))
            opt.step()
            ref_opt.step()
            assert sorted(everyone) == sorted(set(everyone))  # shards are disjoint
            w = _flat(net)
            record["ref_gap"].append(float(np.abs(w - _flat(ref)).max()))
            record["rank_gap"].append(_rank_gap(w))
            record["messages"].append(ddp.comm_stats["allreduce_calls"] - sent)
    runner = getattr(ddp.module, "_fusion_runner", None)
    record["compiled"] = runner.describe_compiled() if runner is not None else None
    return record


def _primitives(rank: int, world: int) -> dict:
    import fusionnet as torch
    from fusionnet import distributed as dist

    t = torch.tensor([1.0, 2.0]) * (rank + 1)
    dist.all_reduce(t)
    a = torch.tensor([float(rank)])
    dist.all_reduce(a, op=dist.ReduceOp.AVG)
    m = torch.tensor([float(rank)])
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    b = torch.tensor([10.0 * rank, 1.0])
    dist.broadcast(b, src=world - 1)
    dist.barrier()
    s = dist.DistributedSampler(range(11))  # rank and world size from MPI
    mismatch = []
    for make in (lambda: torch.nn.Linear(3 + rank, 1),  # a different shape on rank 1
                 lambda: torch.nn.Linear(3, 1, bias=rank == 0)):  # a missing parameter
        try:
            dist.DistributedDataParallel(make())
        except RuntimeError as exc:
            mismatch.append(str(exc))
    return {"rank": dist.get_rank(), "world": dist.get_world_size(), "sum": t.tolist(),
            "avg": a.tolist(), "max": m.tolist(), "bcast": b.tolist(), "sampler": list(s),
            "mismatch": mismatch}


def _worker(out_dir: str) -> None:
    from fusionnet import distributed as dist

    rank, world = dist.init()
    report = {"primitives": _primitives(rank, world)}
    for name in CASES:
        report[name] = _run_case(name, rank, world)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))


# ---- the tests (run by pytest, in one process) -------------------------------------------

@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Both ranks' records from one ``mpiexec -n 2`` launch of the worker."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("ddp")
    proc = launch([str(Path(__file__).resolve()), str(out)])
    assert proc.returncode == 0, f"mpiexec -n 2 failed (rc {proc.returncode}):\n" \
                                 f"{proc.stdout[-4000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_collectives(reports):
    for r, rep in enumerate(reports):
        p = rep["primitives"]
        assert (p["rank"], p["world"]) == (r, 2)
        assert p["sum"] == [3.0, 6.0]  # (1 + 2) * [1, 2]
        assert p["avg"] == [0.5] and p["max"] == [1.0]
        assert p["bcast"] == [10.0, 1.0]  # rank 1's value everywhere
    shards = [rep["primitives"]["sampler"] for rep in reports]
    assert len(shards[0]) == len(shards[1]) == 6  # ceil(11 / 2), padded
    assert set(shards[0]) | set(shards[1]) == set(range(11))


def test_different_models_raise_on_every_rank(reports):
    for rep in reports:
        messages = rep["primitives"]["mismatch"]
        assert len(messages) == 2 and all("differs from rank 0's" in m for m in messages)


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_follow_one_process_step_by_step(reports, case):
    for rep in reports:
        rec = rep[case]
        assert rec["before_gap"] > 0.01  # the ranks started from different weights...
        assert rec["after_bcast_gap"] == 0.0  # ...and construction gave them rank 0's
        assert len(rec["ref_gap"]) == 6
        # Float reassociation only (the mean over 16 rows vs two means over 8).
        assert max(rec["grad_gap"]) < 1e-5, rec["grad_gap"]
        assert max(rec["ref_gap"]) < 1e-5, rec["ref_gap"]
        assert max(rec["rank_gap"]) == 0.0, rec["rank_gap"]  # identical on both ranks


def test_fused_module_ran_compiled(reports):
    compiled = reports[0]["fused_adam_small_buckets"]["compiled"]
    assert compiled and "[eager]" not in compiled  # not an eager fallback


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_travel_in_buckets(reports, case):
    rec = reports[0][case]
    n_buckets = len(rec["buckets"])
    assert rec["messages"] == [n_buckets] * len(rec["messages"])  # one Allreduce a bucket
    if CASES[case][2] >= 1:
        assert n_buckets == 1  # the whole MLP in one message
    else:
        assert 1 < n_buckets < rec["n_params"]  # a small cap splits, but still groups


def test_example_runs_on_two_ranks():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    proc = launch(["examples/ddp_train.py", "--steps", "20"])
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "replicas identical: True" in proc.stdout
    assert "world size 2" in proc.stdout


if __name__ == "__main__":
    _worker(sys.argv[1])
