"""``fusionnet.optim``: optimisers with PyTorch's names and update formulas."""
from __future__ import annotations

from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]
