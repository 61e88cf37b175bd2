"""Data-parallel training of a small MLP over MPI ranks.

Run ``mpiexec -n 2 python examples/ddp_train.py`` (add ``--steps N``, ``--fuse`` to
compile the model with ``fusionnet.fuse``). Each rank reads its shard of the data
through ``DistributedSampler``; ``DistributedDataParallel`` starts every rank from
rank 0's weights and averages the gradients after each backward, so all ranks apply
the same update. A plain ``python examples/ddp_train.py`` is a world of one. For
several hosts, see docs/distributed.md (``mpiexec -f hostfile -n 4 ...``).
"""
from __future__ import annotations

import argparse

import numpy as np

import fusionnet as torch
from fusionnet import distributed as dist
from fusionnet import nn


def make_data(n: int = 1024, d: int = 10, seed: int = 0):
    """The same synthetic regression set on every rank: a fixed nonlinear target plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((d, 1)).astype(np.float32)
    y = (np.tanh(X @ w) + 0.01 * rng.standard_normal((n, 1))).astype(np.float32)
    return X, y


def batches(sampler, batch_size: int):
    """This rank's index batches for one epoch (what ``DataLoader(sampler=...)`` yields)."""
    indices = list(sampler)
    for start in range(0, len(indices) - batch_size + 1, batch_size):
        yield indices[start:start + batch_size]


def train(steps: int, global_batch: int, fused: bool, lr: float = 0.05):
    """Train on every rank; returns the model and the loss (averaged over the ranks)
    after each step."""
    rank, world = dist.init()
    X, y = make_data()
    torch.manual_seed(rank)  # deliberately different: DDP gives every rank rank 0's weights
    net = nn.Sequential(nn.Linear(X.shape[1], 64), nn.ReLU(), nn.Linear(64, 1))
    model = dist.DistributedDataParallel(torch.fuse(net) if fused else net)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.MSELoss()
    sampler = dist.DistributedSampler(range(len(X)), shuffle=True, seed=0)
    shard_batch = global_batch // world  # the global batch is split over the ranks
    losses, epoch = [], 0
    while len(losses) < steps:
        sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        for idx in batches(sampler, shard_batch):
            opt.zero_grad()
            loss = loss_fn(model(torch.tensor(X[idx])), torch.tensor(y[idx]))
            loss.backward()  # gradients are averaged over the ranks here
            opt.step()
            losses.append(dist.all_reduce(loss.detach(), op=dist.ReduceOp.AVG).item())
            if len(losses) == steps:
                break
        epoch += 1
    return model, losses


def replicas_identical(module) -> bool:
    """True when every rank holds bit-identical parameters."""
    flat = np.concatenate([p.detach().numpy().ravel() for p in module.parameters()])
    everyone = dist.comm.world().allgather(flat)
    return all(np.array_equal(everyone[0], other) for other in everyone)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64, help="global batch (all ranks)")
    parser.add_argument("--fuse", action="store_true", help="compile the model")
    args = parser.parse_args()
    model, losses = train(args.steps, args.batch, args.fuse)
    rank, world = dist.get_rank(), dist.get_world_size()
    identical = replicas_identical(model)  # collective: every rank takes part
    if rank == 0:
        print(f"world size {world}: loss fell from {losses[0]:.4f} to {losses[-1]:.4f} "
              f"in {len(losses)} steps")
        print(f"replicas identical: {identical}")


if __name__ == "__main__":
    main()
