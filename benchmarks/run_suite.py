"""The eager-vs-fused benchmark suite from a checkout: same as ``fusionnet bench``.

    python benchmarks/run_suite.py --quick
    python benchmarks/run_suite.py --models MLP,DeepMLP --batch-sizes 2,4096 --out bench-out

The suite itself lives in ``fusionnet/bench/`` so an installed wheel has it too.
"""
from __future__ import annotations

import os
import sys

# Run from a checkout without installing: put the repository root first on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fusionnet.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
