"""fusionnet's differential fuzzer: random blocks, eager vs fused (and optionally PyTorch).

``generate(seed)`` writes a random block as standalone Python source (public API only);
``run.run_case`` runs one case and compares eager and fused forward, gradients, results
after weight changes, and raised exceptions; ``driver.run_fuzz`` runs many cases in a
pool of worker processes that survives crashes and timeouts. Command line:
``python -m fusionnet.fuzz --seed 0 --cases 100`` (see ``docs/fuzzing.md``).
"""
from __future__ import annotations

from .generate import Case, generate

__all__ = ["Case", "generate"]
