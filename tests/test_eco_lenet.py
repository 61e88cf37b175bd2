"""examples/lenet.py: d2l's LeNet trains on synthetic images with a DataLoader, and the
fused run (compiled, no fallback) gives the eager run's losses."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lenet.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("lenet_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("classic", [False, True])
def test_fused_training_gives_the_eager_losses(example, classic):
    eager, eager_epochs, _ = example.train(False, epochs=2, samples=160, batch_size=32,
                                           classic=classic)
    fused, _, _ = example.train(True, epochs=2, samples=160, batch_size=32, classic=classic)
    assert len(eager) == len(fused) == 10
    assert fused == pytest.approx(eager, rel=1e-4, abs=1e-5)
    if not classic:  # ReLU + max pooling learns this data within two epochs
        assert eager_epochs[-1] < eager_epochs[0]
