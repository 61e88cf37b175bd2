"""``fusionnet.nn``: blocks (Module, layers, containers, losses), parameters and init.

Mirrors ``torch.nn`` for the block code of *Dive into Deep Learning*'s
"Builders' Guide"; see ``docs/blocks.md``.
"""
from __future__ import annotations

from . import functional, init
from .activation import GELU, Dropout, Flatten, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .container import ModuleDict, ModuleList, Sequential
from .conv import Conv2d, LazyConv2d
from .linear import Identity, LazyLinear, Linear
from .loss import CrossEntropyLoss, MSELoss, NLLLoss
from .module import Module
from .normalization import (BatchNorm1d, BatchNorm2d, LayerNorm, LazyBatchNorm1d,
                            LazyBatchNorm2d)
from .parameter import Parameter, UninitializedParameter
from .parameter_containers import ParameterDict, ParameterList
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .sparse import Embedding

__all__ = ["Module", "Parameter", "UninitializedParameter", "Linear", "LazyLinear", "Identity",
           "ReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax", "Flatten", "Dropout",
           "Sequential", "ModuleList", "ModuleDict", "MSELoss", "CrossEntropyLoss", "NLLLoss",
           "Conv2d", "LazyConv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d",
           "BatchNorm2d", "LazyBatchNorm1d", "LazyBatchNorm2d", "LayerNorm", "Embedding",
           "ParameterList", "ParameterDict", "functional", "init"]
