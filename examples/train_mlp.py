"""Train a small MLP on synthetic regression data with SGD and print the falling loss.

Run ``python examples/train_mlp.py`` (add ``--steps N``). The same code runs
under PyTorch with ``import torch`` in place of ``import fusionnet as torch``.
"""
from __future__ import annotations

import argparse

import fusionnet as torch
from fusionnet import nn


def make_data(n: int = 256, d: int = 10):
    """Inputs ``X`` (n, d) and targets from a fixed random 'teacher' MLP, plus a little noise."""
    X = torch.randn(n, d)
    teacher = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 1))
    with torch.no_grad():
        y = teacher(X) + 0.01 * torch.randn(n, 1)
    return X, y


def train(steps: int = 300, seed: int = 0, lr: float = 0.05, log_every: int = 0) -> list[float]:
    """Fit a student MLP to the teacher's data; returns the loss after every step."""
    torch.manual_seed(seed)
    X, y = make_data()
    net = nn.Sequential(nn.Linear(X.shape[1], 64), nn.ReLU(), nn.Linear(64, 1))
    loss_fn = nn.MSELoss()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(net(X), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {losses[-1]:.6f}")
    return losses


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    losses = train(args.steps, args.seed, log_every=max(args.steps // 10, 1))
    print(f"loss fell from {losses[0]:.4f} to {losses[-1]:.4f} "
          f"({losses[0] / losses[-1]:.0f}x)")


if __name__ == "__main__":
    main()
