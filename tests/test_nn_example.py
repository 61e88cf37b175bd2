"""examples/train_mlp.py trains: a short run cuts the loss at least tenfold."""
import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_mlp.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("train_mlp_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("seed", [0, 1])
def test_short_training_run_cuts_loss_tenfold(example, seed):
    losses = example.train(steps=60, seed=seed)
    assert len(losses) == 60 and all(math.isfinite(v) for v in losses)
    assert losses[-1] * 10 <= losses[0]


def test_training_is_repeatable(example):
    assert example.train(steps=5, seed=3) == example.train(steps=5, seed=3)


def test_zero_learning_rate_does_not_learn(example):
    # The differential check: the fall above comes from the optimiser's updates.
    losses = example.train(steps=5, seed=0, lr=0.0)
    assert losses[0] == losses[-1]
