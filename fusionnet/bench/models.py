"""The benchmark's models and how to read their weights as plain NumPy arrays.

Each model is a zoo block; ``layers`` returns its forward as a chain of
``(W, b, relu_after)`` steps, which the hand-written peers (NumPy, numba,
PyTorch, JAX) replay with the very same arrays. Chimera's data-dependent tail
is not a chain, so it carries its own parts (``chimera_parts``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import fusionnet
from fusionnet import zoo

__all__ = ["ModelSpec", "MODELS", "build", "layers", "chimera_parts", "lenet_parts"]


@dataclass(frozen=True)
class ModelSpec:
    """A benchmark model: its zoo class, input width and the Linear path of its forward."""

    name: str
    cls: type
    in_features: int
    #: attribute paths of the Linear layers in forward order, with "ReLU follows" flags;
    #: None when the forward is not a plain chain (Chimera, LeNet).
    chain: tuple | None
    #: the shape of one sample when it is not ``(in_features,)`` (an image for LeNet)
    input_shape: tuple | None = None
    #: a convolutional net (LeNet): the peers replay :func:`lenet_parts`
    conv: bool = False
    #: the largest batch size the suite runs it at (its rows above are skipped)
    max_batch: int | None = None

    @property
    def sample_shape(self) -> tuple:
        """The shape of one input sample."""
        return self.input_shape or (self.in_features,)

    def linear(self, net, path: str):
        """The Linear module at a dotted ``path`` (``"net.0"``) inside ``net``."""
        mod = net
        for part in path.split("."):
            # _modules, not indexing: MySequential is a plain Module without __getitem__.
            mod = mod._modules[part]
        return mod


def _deep_chain():
    return tuple((str(2 * i), True) for i in range(8))


MODELS: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("MLP", zoo.MLP, 20, (("hidden", True), ("out", False))),
    ModelSpec("MySequential", zoo.MySequentialMLP, 20, (("0", True), ("2", False))),
    ModelSpec("NestMLP", zoo.NestMLP, 20,
              (("net.0", True), ("net.2", True), ("linear", False))),
    ModelSpec("Chimera", zoo.Chimera, 20, None),
    ModelSpec("DeepMLP", zoo.DeepMLP, 512, _deep_chain()),
    ModelSpec("WideMLP", zoo.WideMLP, 1024, (("0", True), ("2", False))),
    ModelSpec("LeNet", zoo.LeNet, 784, None, input_shape=(1, 28, 28), conv=True,
              max_batch=1024),
)}


def build(spec: ModelSpec, seed: int = 0):
    """A fresh model with seeded weights, materialized (lazy layers run once) and in eval."""
    fusionnet.manual_seed(seed)
    net = spec.cls()
    with fusionnet.no_grad():
        net(fusionnet.rand(2, *spec.sample_shape))  # lazy layers infer their shapes here
    return net.eval()


def _wb(lin) -> tuple[np.ndarray, np.ndarray]:
    # Contiguous copies: a peer must not alias (and so must not be able to corrupt) the
    # model's own parameters.
    return (np.ascontiguousarray(lin.weight.detach().numpy()).copy(),
            np.ascontiguousarray(lin.bias.detach().numpy()).copy())


def layers(spec: ModelSpec, net) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """The model's forward as ``[(W, b, relu_after), ...]`` with ``W`` shaped (out, in)."""
    if spec.chain is None:
        raise ValueError(f"{spec.name} is not a Linear/ReLU chain")
    return [(*_wb(spec.linear(net, path)), relu) for path, relu in spec.chain]


def chimera_parts(net) -> dict[str, np.ndarray]:
    """Chimera's arrays: the NestMLP chain, the middle Linear and FixedHiddenMLP's."""
    nest = [(*_wb(net[0].net[0]), True), (*_wb(net[0].net[2]), True),
            (*_wb(net[0].linear), False), (*_wb(net[1]), False)]
    w, b = _wb(net[2].linear)
    return {"chain": nest, "W": w, "b": b,
            "rand_weight": np.ascontiguousarray(net[2].rand_weight.numpy()).copy()}


#: For tests and type hints: a peer maps an input batch to a NumPy result.
Forward = Callable[[np.ndarray], np.ndarray]


def lenet_parts(net) -> dict:
    """LeNet's arrays: ``convs`` [(W, b, padding)] and ``linears`` [(W, b, relu_after)]."""
    seq = net._modules["net"]._modules
    convs = [(*_wb(seq["0"]), 2), (*_wb(seq["3"]), 0)]
    linears = [(*_wb(seq["7"]), True), (*_wb(seq["9"]), True), (*_wb(seq["11"]), False)]
    return {"convs": convs, "linears": linears}
