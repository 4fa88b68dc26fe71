"""Shared fixtures. ``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject.toml), so test
modules import the helpers ``datagen`` (tiny datasets) and ``tinymodel`` (tiny weight files)."""

import pytest

from tinymodel import torch_threads


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a whole module: tiny tensors only pay thread overhead, and
    stall badly on a busy 2-core machine. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    with torch_threads(1):
        yield
