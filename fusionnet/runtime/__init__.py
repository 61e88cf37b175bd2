"""The compiled runtime: ``fuse`` and what it needs (signatures, guards, fallbacks).

``fuse.py`` is the user-facing decorator and wrapper; ``runner.py`` the cache and the
call path; ``compiler.py`` the compile pipeline; ``signature.py`` the cache keys;
``guards.py`` and ``fusionnet/pystate.py`` what else is re-checked; ``symbolic.py`` the
batch-size analysis; ``backward.py`` gradients.
"""
from __future__ import annotations

from .fuse import FusedModule, fuse
from .runner import FuseInputError, FusionFallbackWarning, FusionRunner

__all__ = ["fuse", "FusedModule", "FusionRunner", "FusionFallbackWarning", "FuseInputError"]
