"""The eager-vs-fused benchmark suite behind ``fusionnet bench``.

``suite`` builds the models and implementations, checks each against fusionnet
eager and times it; ``report`` turns the results into a table, ``results.json``
and ``latency.png``; ``cli`` is the ``fusionnet bench`` subcommand. Only
``fusionnet.zoo`` is needed at run time, so the suite works from an installed
wheel as well as from the repository (``benchmarks/run_suite.py``).
"""
from __future__ import annotations

from .suite import BATCH_SIZES, IMPLS, MODELS, run_suite

__all__ = ["run_suite", "MODELS", "IMPLS", "BATCH_SIZES"]
