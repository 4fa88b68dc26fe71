"""``python -m serve`` as a real process on 127.0.0.1: start, wait for /readyz, classify a PNG."""

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tinymodel import write_tiny_zoo_model

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_m_serve_answers_over_http(tmp_path):
    weights = write_tiny_zoo_model(tmp_path / "model.safetensors", size=12, classes=CLASSES)
    port = free_port()
    repo = Path(__file__).resolve().parents[1]
    env = os.environ | {"PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve", "--weights", str(weights), "--host", "127.0.0.1",
         "--port", str(port), "--backend", "torch", "--threads", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready within 60 s"
            time.sleep(0.2)
        buf = io.BytesIO()
        Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save(buf, "PNG")
        r = httpx.post(f"{base}/predict", params={"mflops": 10, "top_k": 3},
                       files={"file": ("shirt.png", buf.getvalue(), "image/png")}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["config"]["id"] == "c01"  # the largest within 10 MFLOPs: full width
        top = body["predictions"][0]["top_k"]
        assert len(top) == 3 and all(t["label"] == CLASSES[t["index"]] for t in top)
        assert sum(t["probability"] for t in top) <= 1.0 + 1e-6
        bad = httpx.post(f"{base}/predict", files={"file": ("x.png", b"nope", "image/png")}, timeout=10)
        assert bad.status_code == 400 and "not an image" in bad.json()["detail"]
        raw = httpx.post(f"{base}/predict", content=buf.getvalue(),
                         headers={"content-type": "image/png"}, timeout=10)
        assert raw.status_code == 200 and raw.json()["predictions"][0]["filename"] is None
        assert httpx.get(f"{base}/healthz", timeout=2).json() == {"status": "ok"}
    finally:
        proc.terminate()
        try:
            out = proc.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
    assert proc.returncode in (0, -signal.SIGTERM), out  # uvicorn re-raises the signal
    assert "ready: 2 of 2 calibrated configurations served" in out
    import importlib.util
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    assert f"HTTP: {http}" in out and "access log off" in out
    assert "POST /predict" not in out  # no access log by default (--access-log turns it on)
