"""Shared pytest set-up: ``gpu``-marked tests run only where CUDA is available."""
from __future__ import annotations

import pytest

import fusionnet.cuda

GPU_SKIP_REASON = "needs an NVIDIA GPU and CuPy"


def pytest_collection_modifyitems(config, items):
    """Skip every ``@pytest.mark.gpu`` test when ``fusionnet.cuda.is_available()`` is False."""
    if fusionnet.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=GPU_SKIP_REASON)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
