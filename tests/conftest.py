"""Shared pytest set-up: ``gpu``-marked tests run only where CUDA is available, and
every test shares one compile cache so numba compiles each generated module once."""
from __future__ import annotations

import os

import pytest

# One on-disk cache for the whole run (and for the next run on the same checkout):
# compiled kernels are shared across tests and across the subprocesses tests start.
os.environ.setdefault("FUSIONNET_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "fusionnet-tests"))

import fusionnet.cuda

GPU_SKIP_REASON = "needs an NVIDIA GPU and CuPy"


def pytest_collection_modifyitems(config, items):
    """Skip every ``@pytest.mark.gpu`` test when ``fusionnet.cuda.is_available()`` is False."""
    if fusionnet.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=GPU_SKIP_REASON)
    for item in items:
        # The marker itself, not ``"gpu" in item.keywords``: keywords include the names of
        # the folders above the test, so a checkout under a folder named gpu skipped all.
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
