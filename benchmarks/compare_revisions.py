"""The steady-state fused call of zoo.MLP at batch 2, at two git revisions, in one run.

Each revision is checked out into a temporary worktree; the timing script runs in a
fresh subprocess per revision, alternating between them (round-robin, ``--rounds``
times) so drift on the machine affects both alike; the medians of the per-round
median and the best of the per-round medians are printed as one JSON line.

    python benchmarks/compare_revisions.py 070b132 HEAD
    python benchmarks/compare_revisions.py 070b132 HEAD --instructions   # needs valgrind

``--instructions`` counts machine instructions per call under valgrind's callgrind
instead (collection switched on only around 2,000 steady-state calls): repeatable to a
few hundred instructions, where wall-clock medians on a shared VM move by 5%.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

TIMING = r"""
import statistics, sys, time, warnings
warnings.simplefilter("ignore")
import fusionnet as torch
from fusionnet import zoo
torch.manual_seed(0)
fused = torch.fuse(zoo.MLP())
X = torch.rand(2, 20)
with torch.no_grad():
    for _ in range(200):
        fused(X)
    samples = []
    for _ in range(25):
        start = time.perf_counter()
        for _ in range(2000):
            fused(X)
        samples.append((time.perf_counter() - start) / 2000 * 1e6)
print(statistics.median(samples))
"""


INSTRUCTIONS = r"""
import os, subprocess, warnings
warnings.simplefilter("ignore")
import fusionnet as torch
from fusionnet import zoo
torch.manual_seed(0)
fused = torch.fuse(zoo.MLP())
X = torch.rand(2, 20)
with torch.no_grad():
    for _ in range(300):
        fused(X)
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True)
    for _ in range(2000):
        fused(X)
    subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True)
"""


def _instructions(tree: str, env: dict) -> float:
    """Instructions per fused call, counted by callgrind around 2,000 calls."""
    subprocess.run([sys.executable, "-c", INSTRUCTIONS], env=env, cwd=tree, check=True,
                   capture_output=True)  # warm the compile cache first
    out = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                          "--callgrind-out-file=/dev/null", sys.executable, "-c",
                          INSTRUCTIONS], env=env, cwd=tree, capture_output=True, text=True)
    line = next(x for x in out.stderr.splitlines() if "Collected" in x)
    return int(line.split()[-1]) / 2000


def _checkout(rev: str, root: str) -> str:
    path = tempfile.mkdtemp(prefix=f"fusionnet-{rev[:8]}-")
    subprocess.run(["git", "-C", root, "worktree", "add", "-q", "--detach", path, rev],
                   check=True)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per call with callgrind instead of timing")
    args = parser.parse_args(argv)
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                          text=True, check=True).stdout.strip()
    trees = {rev: _checkout(rev, root) for rev in args.revisions}
    cache = tempfile.mkdtemp(prefix="fusionnet-cache-")
    times = {rev: [] for rev in args.revisions}
    try:
        for _ in range(args.rounds):
            for rev, tree in trees.items():
                env = dict(os.environ, PYTHONPATH=tree,
                           FUSIONNET_CACHE_DIR=os.path.join(cache, rev))
                if args.instructions:
                    times[rev].append(_instructions(tree, env))
                    continue
                out = subprocess.run([sys.executable, "-c", TIMING], capture_output=True,
                                     text=True, env=env, cwd=tree, check=True)
                times[rev].append(float(out.stdout.strip().splitlines()[-1]))
    finally:
        for tree in trees.values():
            subprocess.run(["git", "-C", root, "worktree", "remove", "--force", tree])
    print(json.dumps({"machine": platform.processor() or platform.machine(),
                      "what": "zoo.MLP fused call, batch 2, no_grad, " + (
                          "instructions" if args.instructions else "microseconds"),
                      "median": {rev: round(statistics.median(t), 2)
                                 for rev, t in times.items()},
                      "best": {rev: round(min(t), 2) for rev, t in times.items()},
                      "rounds": args.rounds}))


if __name__ == "__main__":
    main()
