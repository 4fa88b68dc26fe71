"""Issue 13, slow start: the verified ONNX cache, and a start from it without torch.

Before: every start exported each configuration through torch (33-140 s for the shipped model)
and no cache existed; these tests would fail at the first ``lookup``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serve import onnxcache
from serve.app import create_app
from tinymodel import write_tiny_zoo_model

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory, one_torch_thread):
    return write_tiny_zoo_model(tmp_path_factory.mktemp("cache") / "model.safetensors", size=12)


def start(app) -> None:
    server = app.state.server

    async def go() -> None:
        await server.start()
        await server.stop()
    asyncio.run(go())
    assert server.ready, server.failure


@pytest.fixture(scope="module")
def cache(weights, tmp_path_factory):
    """A cache filled by one start (export through torch, verified, stored)."""
    root = tmp_path_factory.mktemp("onnx-cache")
    start(create_app(weights, cache_dir=root, threads=1))
    return root


def test_first_start_stores_a_verified_entry(weights, cache):
    entry = onnxcache.lookup(cache, onnxcache.file_sha256(weights))
    assert entry is not None
    doc = json.loads((entry.folder / onnxcache.ENTRY).read_text())
    assert set(doc["configs"]) == {"c00", "c01"}
    assert doc["software"]["onnxruntime"] and doc["metadata"]["front"]
    assert not list(entry.folder.parent.glob(".tmp-*"))  # written atomically


_HIT = """
import asyncio, sys, time
t0 = time.perf_counter()
from serve.app import create_app
app = create_app(sys.argv[1], cache_dir=sys.argv[2], threads=1)
server = app.state.server
async def go():
    await server.start()
    await server.stop()
asyncio.run(go())
print(server.ready, 'torch' in sys.modules, 'onnx' in sys.modules, time.perf_counter() - t0)
"""


def test_a_start_from_the_cache_needs_no_torch(weights, cache):
    out = subprocess.run([sys.executable, "-c", _HIT, str(weights), str(cache)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    ready, torch_loaded, onnx_loaded, seconds = out.stdout.split()
    assert (ready, torch_loaded, onnx_loaded) == ("True", "False", "False"), out.stderr
    assert float(seconds) < 15  # imports + sessions + latency table; ~2 s on an idle machine


def test_an_altered_entry_is_rejected_and_rebuilt(weights, cache, caplog):
    entry = onnxcache.lookup(cache, onnxcache.file_sha256(weights))
    path = entry.folder / "c00.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(onnxcache.CacheError, match="sha256"):
        entry.load_verified(lambda cid, data, x: np.zeros((2, 10)))
    app = create_app(weights, cache_dir=cache, threads=1)
    with caplog.at_level("WARNING", logger="serve"):
        start(app)
    assert "cache entry rejected" in caplog.text
    fresh = onnxcache.lookup(cache, onnxcache.file_sha256(weights))
    fresh.load_verified(lambda cid, data, x: np.asarray(
        app.state.server.batchers[cid].runner.predict(x)))  # rebuilt and verifying again


def test_wrong_reference_logits_are_rejected(weights, cache):
    entry = onnxcache.lookup(cache, onnxcache.file_sha256(weights))
    with pytest.raises(onnxcache.CacheError, match="differs from the reference"):
        entry.load_verified(lambda cid, data, x: np.full((2, 10), 1e3))


def test_a_cache_miss_without_torch_is_a_clear_start_up_error(weights, tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
            "from serve.__main__ import main\n"
            f"sys.exit(main(['--weights', {str(weights)!r}, '--cache-dir', {str(tmp_path)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    assert "no verified ONNX" in out.stderr and "--prepare" in out.stderr


def test_scaled_difference_is_absolute_for_small_logits_and_relative_for_large():
    ref = np.array([[0.5, -0.2]], dtype=np.float32)
    assert onnxcache.scaled_difference(ref + 5e-5, ref) == pytest.approx(5e-5, rel=1e-3)
    big = np.array([[40.0, -10.0]], dtype=np.float32)
    # 2e-3 on logits of magnitude 40 is float32 rounding (5e-5 relative), not a wrong graph
    assert onnxcache.scaled_difference(big + 2e-3, big) <= onnxcache.TOLERANCE
    assert onnxcache.scaled_difference(big + 1.0, big) > onnxcache.TOLERANCE
