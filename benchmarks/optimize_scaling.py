"""How ``optimize`` time grows with graph size (it should grow about linearly).

Builds a block of ``n`` residual units (Linear + bias + ReLU, an elementwise chain, a
reduction), traces it once per size, and times the whole default pass pipeline on
the traced graph (median of several runs), printing one JSON line per size and the
ratio of time per node between the largest and the smallest graph.

    python benchmarks/optimize_scaling.py            # 1,000 / 2,000 / 4,000 nodes
    python benchmarks/optimize_scaling.py --sizes 500 1000
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import fusionnet as torch
from fusionnet import nn


class Unit(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x):
        h = self.lin(x).relu()
        h = (h * 0.5 + 1.0).tanh() - h.mean(dim=1, keepdim=True)
        return x + h


def build(units: int, width: int = 8):
    """A stack of ``units`` residual units."""
    return nn.Sequential(*[Unit(width) for _ in range(units)])


# Nodes per unit in the traced graph (measured once; used to pick unit counts).
def _nodes(units):
    return torch.trace(build(units), torch.rand(2, 8)).nx.number_of_nodes()


def measure(target_nodes: int, repeats: int) -> dict:
    """Trace a block of about ``target_nodes`` nodes and time ``optimize`` on it."""
    per_unit = (_nodes(4) - _nodes(2)) / 2
    units = max(1, round(target_nodes / per_unit))
    graph = torch.trace(build(units), torch.rand(2, 8))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.optimize(graph)
        times.append(time.perf_counter() - start)
    n = graph.nx.number_of_nodes()
    median = statistics.median(times)
    return {"nodes": n, "optimize_s": round(median, 4), "us_per_node": round(1e6 * median / n, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = [measure(n, args.repeats) for n in args.sizes]
    for row in rows:
        print(json.dumps(row))
    growth = rows[-1]["us_per_node"] / rows[0]["us_per_node"]
    print(json.dumps({"machine": platform.processor() or platform.machine(),
                      "per_node_time_ratio_largest_vs_smallest": round(growth, 2)}))


if __name__ == "__main__":
    main()
