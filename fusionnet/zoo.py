"""The blocks of *Dive into Deep Learning*'s "Layers and Blocks" chapter, written as in
the book with only the imports changed, plus the benchmark suite's deep and wide MLPs.

Tests, benchmarks and the command line (``fusionnet explain fusionnet.zoo:MLP``)
share these definitions. Each class builds with no arguments.
"""
from __future__ import annotations

import fusionnet as torch

#: This module is written as a user writes blocks: the tracer reports its lines as the
#: user's (not fusionnet's) and guards the Python values it reads.
__fusionnet_user_code__ = True
from fusionnet import nn
from fusionnet.nn import functional as F

__all__ = ["MLP", "MySequential", "MySequentialMLP", "FixedHiddenMLP", "NestMLP", "Chimera",
           "TiedMLP", "CenteredLayer", "MyLinear", "LazyMLP", "SequentialMLP", "DeepMLP",
           "WideMLP", "LeNet", "CHAPTER_BLOCKS"]


class MLP(nn.Module):
    """20 -> 256 (ReLU) -> 10, the chapter's first custom block."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.LazyLinear(256)
        self.out = nn.LazyLinear(10)

    def forward(self, X):
        return self.out(F.relu(self.hidden(X)))


class MySequential(nn.Module):
    """The chapter's hand-written Sequential, writing ``self._modules`` directly."""

    def __init__(self, *args):
        super().__init__()
        for idx, module in enumerate(args):
            self._modules[str(idx)] = module

    def forward(self, X):
        for module in self._modules.values():
            X = module(X)
        return X


class MySequentialMLP(MySequential):
    """``MySequential(LazyLinear(256), ReLU(), LazyLinear(10))`` as a no-argument class."""

    def __init__(self):
        super().__init__(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))


class SequentialMLP(nn.Sequential):
    """``nn.Sequential(LazyLinear(256), ReLU(), LazyLinear(10))`` as a no-argument class."""

    def __init__(self):
        super().__init__(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))


class FixedHiddenMLP(nn.Module):
    """A constant weight, a layer used twice and a data-dependent ``while`` loop."""

    def __init__(self):
        super().__init__()
        # Random weight parameters that will not compute gradients and
        # therefore keep constant during training
        self.rand_weight = torch.rand((20, 20))
        self.linear = nn.LazyLinear(20)

    def forward(self, X):
        X = self.linear(X)
        X = F.relu(X @ self.rand_weight + 1)
        # Reuse the fully connected layer. This is equivalent to sharing
        # parameters with two fully connected layers
        X = self.linear(X)
        # Control flow
        while X.abs().sum() > 1:
            X /= 2
        return X.sum()


class NestMLP(nn.Module):
    """A Sequential nested inside a custom block."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.LazyLinear(64), nn.ReLU(),
                                 nn.LazyLinear(32), nn.ReLU())
        self.linear = nn.LazyLinear(16)

    def forward(self, X):
        return self.linear(self.net(X))


class Chimera(nn.Sequential):
    """``nn.Sequential(NestMLP(), nn.LazyLinear(20), FixedHiddenMLP())``: the chapter's chimera."""

    def __init__(self):
        super().__init__(NestMLP(), nn.LazyLinear(20), FixedHiddenMLP())


class TiedMLP(nn.Sequential):
    """The "Tied Parameters" net: one ``shared`` layer used at positions 2 and 4."""

    def __init__(self):
        shared = nn.LazyLinear(8)
        super().__init__(nn.LazyLinear(8), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(),
                         nn.LazyLinear(1))


class CenteredLayer(nn.Module):
    """A layer without parameters: subtract the mean."""

    def forward(self, X):
        return X - X.mean()


class MyLinear(nn.Module):
    """The chapter's custom fully connected layer with ``nn.Parameter`` (5 -> 3 here)."""

    def __init__(self, in_units: int = 20, units: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_units, units))
        self.bias = nn.Parameter(torch.randn(units,))

    def forward(self, X):
        linear = torch.matmul(X, self.weight.data) + self.bias.data
        return F.relu(linear)


class LazyMLP(nn.Sequential):
    """``nn.Sequential(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))`` (deferred init)."""

    def __init__(self):
        super().__init__(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))


class DeepMLP(nn.Sequential):
    """8 x (Linear(512, 512) + ReLU): the benchmark's deep model."""

    def __init__(self):
        layers = []
        for _ in range(8):
            layers += [nn.Linear(512, 512), nn.ReLU()]
        super().__init__(*layers)


class WideMLP(nn.Sequential):
    """Linear(1024, 4096) + ReLU + Linear(4096, 1024): the benchmark's wide model."""

    def __init__(self):
        super().__init__(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 1024))


class LeNet(nn.Module):
    """d2l's LeNet-5 ("Convolutional Neural Networks", 7.6) in its modern form (ReLU and
    max pooling, as the chapter's exercises suggest; the book's original uses sigmoid and
    average pooling): (N, 1, 28, 28) -> (N, num_classes)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.LazyConv2d(6, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2, stride=2),
            nn.LazyConv2d(16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2, stride=2),
            nn.Flatten(), nn.LazyLinear(120), nn.ReLU(), nn.LazyLinear(84), nn.ReLU(),
            nn.LazyLinear(num_classes))

    def forward(self, X):
        return self.net(X)


#: name -> (class, input feature size) for the chapter's blocks.
CHAPTER_BLOCKS = {
    "MLP": (MLP, 20),
    "SequentialMLP": (SequentialMLP, 20),
    "MySequential": (MySequentialMLP, 20),
    "FixedHiddenMLP": (FixedHiddenMLP, 20),
    "NestMLP": (NestMLP, 20),
    "Chimera": (Chimera, 20),
    "TiedMLP": (TiedMLP, 20),
    "CenteredLayer": (CenteredLayer, 20),
    "MyLinear": (MyLinear, 20),
    "LazyMLP": (LazyMLP, 20),
}
