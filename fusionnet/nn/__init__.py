"""``fusionnet.nn``: blocks (Module, layers, containers, losses), parameters and init.

Mirrors ``torch.nn`` for the block code of *Dive into Deep Learning*'s
"Builders' Guide"; see ``docs/blocks.md``.
"""
from __future__ import annotations

from . import functional, init
from .activation import GELU, Dropout, Flatten, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .container import ModuleDict, ModuleList, Sequential
from .linear import Identity, LazyLinear, Linear
from .loss import CrossEntropyLoss, MSELoss, NLLLoss
from .module import Module
from .parameter import Parameter, UninitializedParameter

__all__ = ["Module", "Parameter", "UninitializedParameter", "Linear", "LazyLinear", "Identity",
           "ReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax", "Flatten", "Dropout",
           "Sequential", "ModuleList", "ModuleDict", "MSELoss", "CrossEntropyLoss", "NLLLoss",
           "functional", "init"]
