"""Train d2l's LeNet ("Convolutional Neural Networks", 7.6) on synthetic 28x28 images, eagerly
and fused, and show that both give the same losses.

The model and training loop are the book's PyTorch code with ``import fusionnet as torch``:
``LazyConv2d``/``LazyLinear`` layers, Xavier initialisation after a first forward, a
``DataLoader`` over a ``TensorDataset`` shuffled under ``manual_seed``, cross-entropy and
SGD. The modern variant (ReLU and max pooling, as the chapter's exercises suggest) is the
default, so ``fuse`` compiles each conv + bias + ReLU into one kernel and each pooling into
another; ``--classic`` trains the book's original (sigmoid, average pooling).

Run ``python examples/lenet.py`` (``--epochs N``, ``--samples N``, ``--classic``).
"""
from __future__ import annotations

import argparse
import time

import fusionnet as torch
from fusionnet import nn
from fusionnet.utils import data


def lenet(num_classes: int = 10, classic: bool = False) -> nn.Sequential:
    """LeNet-5 as d2l writes it (``classic``: sigmoid and average pooling)."""
    act = nn.Sigmoid if classic else nn.ReLU
    pool = (lambda: nn.AvgPool2d(kernel_size=2, stride=2)) if classic else \
        (lambda: nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(
        nn.LazyConv2d(6, kernel_size=5, padding=2), act(), pool(),
        nn.LazyConv2d(16, kernel_size=5), act(), pool(),
        nn.Flatten(),
        nn.LazyLinear(120), act(),
        nn.LazyLinear(84), act(),
        nn.LazyLinear(num_classes))


def init_cnn(module: nn.Module) -> None:
    """d2l's ``init_cnn``: Xavier-uniform weights for Linear and Conv2d layers."""
    if type(module) == nn.Linear or type(module) == nn.Conv2d:  # noqa: E721 - the book's test
        nn.init.xavier_uniform_(module.weight)


def make_data(n: int, num_classes: int = 10):
    """``n`` noisy 28x28 images of ``num_classes`` random smooth patterns, and their labels."""
    coarse = torch.randn(num_classes, 1, 7, 7).reshape(num_classes, 1, 7, 1, 7, 1)
    templates = coarse.expand(num_classes, 1, 7, 4, 7, 4).reshape(num_classes, 1, 28, 28)
    y = torch.randint(0, num_classes, (n,))
    X = 0.3 * templates[y] + torch.randn(n, 1, 28, 28)
    return X, y


def train(fused: bool, epochs: int = 3, samples: int = 1024, batch_size: int = 64,
          lr: float = 0.1, seed: int = 0, classic: bool = False):
    """Train from seed ``seed``; returns (loss of every batch, mean loss per epoch, seconds)."""
    torch.manual_seed(seed)
    X, y = make_data(samples)
    net = lenet(classic=classic)
    net(X[:2])               # materialise the lazy layers (d2l: apply_init with a dummy batch)
    net.apply(init_cnn)
    model = torch.fuse(net, fallback=False) if fused else net
    loader = data.DataLoader(data.TensorDataset(X, y), batch_size=batch_size, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    losses, per_epoch = [], []
    start = time.perf_counter()
    for _ in range(epochs):
        epoch = []
        for Xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(Xb), yb)
            loss.backward()
            opt.step()
            epoch.append(loss.item())
        losses += epoch
        per_epoch.append(sum(epoch) / len(epoch))
    took = time.perf_counter() - start
    if fused:  # fallback=False raised had it run eagerly; say what was compiled
        print(f"fused: compiled {len(model._fusion_runner.compiles)} time(s): "
              f"{', '.join(model._fusion_runner.compiles)}")
    return losses, per_epoch, took


def main() -> None:
    """Command-line entry point: train eagerly, then fused, and compare."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classic", action="store_true", help="sigmoid + average pooling")
    args = parser.parse_args()
    runs = {mode: train(mode == "fused", args.epochs, args.samples, seed=args.seed,
                        classic=args.classic) for mode in ("eager", "fused")}
    print("epoch  eager loss  fused loss")
    for e, (a, b) in enumerate(zip(runs["eager"][1], runs["fused"][1])):
        print(f"{e:5d}  {a:10.6f}  {b:10.6f}")
    diff = max(abs(a - b) for a, b in zip(runs["eager"][0], runs["fused"][0]))
    print(f"largest per-batch loss difference: {diff:.2e} over {len(runs['eager'][0])} batches")
    print(f"training time: eager {runs['eager'][2]:.2f} s, fused {runs['fused'][2]:.2f} s "
          f"(fused includes its first-call compile)")


if __name__ == "__main__":
    main()
