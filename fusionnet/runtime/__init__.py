"""The compiled runtime: ``fuse`` and what it needs (signatures, guards, fallbacks)."""
from __future__ import annotations

from .fuse import FusedModule, fuse
from .fused import FuseInputError, FusionFallbackWarning, FusionRunner

__all__ = ["fuse", "FusedModule", "FusionRunner", "FusionFallbackWarning", "FuseInputError"]
