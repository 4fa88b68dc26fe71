"""Issue 13: the server's edges, end to end through real uvicorn on 127.0.0.1 (tiny model).

Each test names the defect it guards against; every one of them failed before the fix.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from serve.app import create_app
from serve.http import HttpLimits, uvicorn_config
from serve.runners import TorchRunner
from tinymodel import write_tiny_zoo_model

SIZE = 16
REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory, one_torch_thread):
    return write_tiny_zoo_model(tmp_path_factory.mktemp("harden") / "model.safetensors", size=SIZE)


class Live:
    """A started uvicorn server in a thread; ``url(path)``, ``metric(name, **labels)``."""

    def __init__(self, server, port: int, logs: list[logging.LogRecord]) -> None:
        self.server, self.port, self.logs = server, port, logs

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.url("/metrics"), timeout=10).text
        return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def raw(self, data: bytes, wait_s: float = 5.0) -> bytes:
        """Send ``data`` on a fresh connection; everything received until the server closes it
        (or ``wait_s`` passes)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=wait_s) as s:
            s.sendall(data)
            return _read_all(s, wait_s)


def _read_all(s: socket.socket, wait_s: float) -> bytes:
    out, deadline = b"", time.monotonic() + wait_s
    s.settimeout(wait_s)
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        out += chunk
    return out


class _Records(logging.Handler):
    def __init__(self, into: list) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@contextmanager
def live(weights, limits: HttpLimits | None = None, **settings):
    """``create_app`` + the CLI's uvicorn configuration on 127.0.0.1 (ephemeral port)."""
    settings = {"backend": "torch", "threads": 1, "cache_dir": False, "max_body_bytes": 2**20,
                **settings}
    app = create_app(weights, **settings)
    config = uvicorn_config(app, host="127.0.0.1", port=0, limits=limits or HttpLimits(),
                            access_log=False, log_level="warning")
    import uvicorn

    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    logs: list[logging.LogRecord] = []
    handler = _Records(logs)
    for name in ("uvicorn.error", "uvicorn", "serve", "fastapi"):
        logging.getLogger(name).addHandler(handler)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        s = Live(server, port, logs)
        while httpx.get(s.url("/readyz"), timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "not ready within 60 s"
            time.sleep(0.05)
        yield s
    finally:
        server.should_exit = True
        thread.join(30)
        for name in ("uvicorn.error", "uvicorn", "serve", "fastapi"):
            logging.getLogger(name).removeHandler(handler)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def grey(seed: int, size=(20, 24)) -> np.ndarray:
    return (np.random.default_rng(seed).random((size[1], size[0])) * 255).astype(np.uint8)


def probabilities(s: Live, blob: bytes, ctype: str = "image/png") -> list[float]:
    r = httpx.post(s.url("/predict?top_k=10"), content=blob, headers={"content-type": ctype},
                   timeout=30)
    assert r.status_code == 200, r.text
    top = r.json()["predictions"][0]["top_k"]
    return [p["probability"] for p in sorted(top, key=lambda t: t["index"])]


# ----------------------------------------------------------------- decompression by aspect ratio
_RSS_PROBE = """
import io, sys, time
from PIL import Image
from serve.images import preprocess
from serve.model import Preprocessing
def hwm():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024
pre = Preprocessing(28, 1, (0.5,), (0.25,))
w, h = map(int, sys.argv[1:3])
buf = io.BytesIO(); Image.new('L', (w, h), 200).save(buf, 'PNG'); blob = buf.getvalue()
small = io.BytesIO(); Image.new('L', (30, 40)).save(small, 'PNG'); preprocess(small.getvalue(), pre)
before = hwm(); t0 = time.perf_counter()
x = preprocess(blob, pre)
print(hwm() - before, time.perf_counter() - t0, x.shape)
"""


@pytest.mark.parametrize("width, height", [(1, 32_000), (32_000, 1)])
def test_extreme_aspect_ratio_costs_what_its_pixels_cost(width, height):
    """Before: resized by the short side first, a 1 x 32,000 PNG (32 kpx) became
    28 x 896,000 (25 MB, and 1.87 GB for 1 x 1,000,000) before the crop."""
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(width), str(height)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    growth_mb, seconds = float(out[0]), float(out[1])
    assert growth_mb < 5, f"peak RSS grew by {growth_mb:.1f} MB"
    assert seconds < 1.0


def test_aspect_ratio_bomb_over_http_is_answered_quickly(weights):
    """Before: the issue's 2 KB 1 x 1,000,000 PNG answered 200 after 3.6 s and +1.87 GB."""
    with live(weights) as s:
        for size, status in (((1, 1_000_000), 413), ((1_000_000, 1), 413), ((1, 30_000), 200)):
            t0 = time.perf_counter()
            r = httpx.post(s.url("/predict"), content=encode(Image.new("L", size, 255)),
                           headers={"content-type": "image/png"}, timeout=60)
            assert r.status_code == status, r.text
            assert time.perf_counter() - t0 < 2.0
        assert "side above 32768" in httpx.post(
            s.url("/predict"), content=encode(Image.new("L", (1, 40_000))),
            headers={"content-type": "image/png"}).json()["detail"]


# ---------------------------------------------------------------------- 16-bit and other modes
def test_every_pillow_mode_is_scaled_by_its_bit_depth(weights):
    """Before: I;16 -> L clipped every value above 255 (a 16-bit PNG of a normal image became
    almost white), so 16-bit uploads got different answers than their 8-bit twins.
    (At the model's size, so no resize rounds the 8-bit twin to 8 bits.)"""
    a = grey(1, size=(SIZE, SIZE))
    palette = Image.fromarray(a, "P")
    palette.putpalette([v for i in range(256) for v in (i, i, i)])
    same = {  # exactly the 8-bit image's pixels, in another mode/format
        "I;16 PNG": encode(Image.fromarray(a.astype(np.uint16) * 257)),
        "I;16 TIFF": encode(Image.fromarray(a.astype(np.uint16) * 257), "TIFF"),
        "I (32-bit) TIFF": encode(Image.fromarray(a.astype(np.int32) * 257), "TIFF"),
        "F TIFF": encode(Image.fromarray(a.astype(np.float32) / 255), "TIFF"),
        "LA opaque": encode(Image.fromarray(np.dstack([a, np.full_like(a, 255)]), "LA")),
        "RGBA opaque": encode(Image.fromarray(np.dstack([a, a, a, np.full_like(a, 255)]), "RGBA")),
        "P grey palette": encode(palette),
    }
    black = np.zeros_like(a)
    transparent = {  # fully transparent pixels composite over black
        "LA transparent": encode(Image.fromarray(np.dstack([a, np.zeros_like(a)]), "LA")),
        "RGBA transparent": encode(Image.fromarray(np.dstack([a, a, a, black]), "RGBA")),
    }
    with live(weights) as s:
        ref = probabilities(s, encode(Image.fromarray(a)))
        for name, blob in same.items():
            assert probabilities(s, blob) == pytest.approx(ref, abs=1e-5), name
        zero = probabilities(s, encode(Image.fromarray(black)))
        for name, blob in transparent.items():
            assert probabilities(s, blob) == pytest.approx(zero, abs=1e-5), name
        for name, blob in {"CMYK JPEG": encode(Image.fromarray(a).convert("CMYK"), "JPEG"),
                           "P + transparency": encode(palette, transparency=0),
                           "1-bit": encode(Image.fromarray(a > 128))}.items():
            assert len(probabilities(s, blob)) == 10, name


# ------------------------------------------------------------------------------ disconnects
def test_a_client_that_drops_mid_body_is_no_server_error(weights):
    """Before: an unhandled ClientDisconnect, a traceback in the log and +2 on the 5xx counters."""
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000\r\n\r\n")
    with live(weights) as s:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", s.port)) as c:
                c.sendall(head + b"\x89PNG" * 100)
                time.sleep(0.1)
        deadline = time.monotonic() + 5
        while s.metric("pareco_client_disconnects_total", endpoint="/predict") < 3:
            assert time.monotonic() < deadline, "disconnects not counted"
            time.sleep(0.05)
        assert s.metric("pareco_http_errors_total", status="500") == 0
        assert s.metric("pareco_http_requests_total", endpoint="/predict") == 0  # none answered
        assert not [r for r in s.logs if r.exc_info or "Exception" in r.getMessage()], \
            [r.getMessage() for r in s.logs]
        assert httpx.post(s.url("/predict"), content=encode(Image.fromarray(grey(2))),
                          headers={"content-type": "image/png"}).status_code == 200


# --------------------------------------------------------------------------------- overload
def test_overload_is_shed_before_the_body_is_read(weights, monkeypatch):
    """Before: the queue check ran after the body was read and decoded (unbounded decode queue),
    so every refused request had cost a decode, and /healthz waited behind them."""
    original = TorchRunner.predict

    def slow(self, batch):
        time.sleep(0.1)
        return original(self, batch)

    blob = encode(Image.fromarray(grey(3)))
    with live(weights, max_inflight=2, max_batch=1, batch_delay_ms=0, reject_delay_ms=0) as s:
        monkeypatch.setattr(TorchRunner, "predict", slow)
        decoded0 = s.metric("pareco_decode_seconds_count")

        async def fire():
            async with httpx.AsyncClient(timeout=60) as c:
                async def probe():
                    await asyncio.sleep(0.05)
                    t0 = time.perf_counter()
                    r = await c.get(s.url("/healthz"))
                    return r.status_code, time.perf_counter() - t0
                posts = [c.post(s.url("/predict"), content=blob,
                                headers={"content-type": "image/png"}) for _ in range(16)]
                return await asyncio.gather(probe(), *posts)

        (health, health_s), *answers = asyncio.run(fire())
        codes = [r.status_code for r in answers]
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
        refused = next(r for r in answers if r.status_code == 503)
        assert refused.headers["retry-after"] == "1" and "overloaded" in refused.json()["detail"]
        assert s.metric("pareco_decode_seconds_count") - decoded0 == codes.count(200)
        assert s.metric("pareco_overload_rejections_total", reason="inflight") == codes.count(503)
        assert s.metric("pareco_http_requests_total", endpoint="/predict", status="503") \
            == codes.count(503)
        assert health == 200 and health_s < 1.0


async def until_inflight(client: httpx.AsyncClient, server, timeout_s: float = 10.0) -> None:
    """Wait until the server has admitted a /predict request (its in-flight gauge reads 1): a
    fixed sleep can end before that on a loaded host."""
    deadline = time.monotonic() + timeout_s
    while "pareco_predict_inflight 1.0" not in (await client.get(server.url("/metrics"))).text:
        assert time.monotonic() < deadline, "the /predict request was never admitted"
        await asyncio.sleep(0.01)


def test_early_refusal_is_held_for_the_reject_delay(weights, monkeypatch):
    original = TorchRunner.predict
    monkeypatch.setattr(TorchRunner, "predict", lambda self, b: (time.sleep(0.6), original(self, b))[1])
    blob = encode(Image.fromarray(grey(4)))
    with live(weights, max_inflight=1, reject_delay_ms=600) as s:  # held 300-900 ms
        async def fire():
            async with httpx.AsyncClient(timeout=60) as c:
                first = asyncio.create_task(c.post(s.url("/predict"), content=blob,
                                                   headers={"content-type": "image/png"}))
                await until_inflight(c, s)  # the first one is admitted and running
                t0 = time.perf_counter()
                second = await c.post(s.url("/predict"), content=blob,
                                      headers={"content-type": "image/png"})
                return (await first).status_code, second.status_code, time.perf_counter() - t0
        first, second, seconds = asyncio.run(fire())
        assert (first, second) == (200, 503)
        assert seconds >= 0.28


# ------------------------------------------------------------------- connection limits, timeouts
def test_connection_timeouts_and_header_limits(weights):
    """Before: idle, slow-header and slow-body connections stayed open indefinitely, and a 1 MB
    header or 10,000 headers were accepted; protocol errors were text/plain; HEAD /healthz 405."""
    limits = HttpLimits(header_timeout_s=0.5, body_timeout_s=0.5, max_header_bytes=4096,
                        max_headers=20)
    with live(weights, limits) as s:
        cases = {
            "idle": b"",
            "slow head": b"POST /predict HTTP/1.1\r\nHost: x\r\n",
            "slow body": (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                          b"Content-Length: 1000\r\n\r\n0123456789"),
        }
        for name, data in cases.items():
            t0 = time.perf_counter()
            got = s.raw(data, wait_s=5)
            assert time.perf_counter() - t0 < 3, f"{name}: not closed in time"
            assert got.startswith(b"HTTP/1.1 408"), (name, got[:200])
            assert json.loads(got.split(b"\r\n\r\n", 1)[1])["status"] == 408
        for name, head in {"1 MB header": b"X-Big: " + b"a" * 2**20 + b"\r\n",
                           "many headers": b"".join(b"X-%d: v\r\n" % i for i in range(1000))
                           }.items():
            got = s.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
            assert got.startswith(b"HTTP/1.1 431"), (name, got[:200])
            assert json.loads(got.split(b"\r\n\r\n", 1)[1])["status"] == 431
        got = s.raw(b"GARBAGE\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 400") and b"application/json" in got
        assert httpx.head(s.url("/healthz")).status_code == 200
        assert httpx.head(s.url("/readyz")).status_code == 200
        ok = s.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200")


def test_probes_are_exempt_from_the_concurrency_limit(weights):
    with live(weights, HttpLimits(limit_concurrency=2)) as s:
        held = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(3)]
        try:
            time.sleep(0.1)
            with httpx.Client() as c:
                assert c.get(s.url("/configs")).status_code == 503  # uvicorn's own limit
                assert c.get(s.url("/healthz")).status_code == 200
                assert c.get(s.url("/readyz")).status_code == 200
        finally:
            for h in held:
                h.close()


# ------------------------------------------------------------------------------ latency table
def test_latency_table_says_when_and_can_be_measured_again_when_idle(weights, monkeypatch):
    """Before: measured once at start-up (median of sequential calls), never again, no date."""
    with live(weights) as s:
        first = httpx.get(s.url("/configs")).json()
        assert first["latency_measured_at"] <= time.time()
        again = httpx.post(s.url("/configs/profile"), timeout=60)
        assert again.status_code == 200, again.text
        assert again.json()["latency_measured_at"] > first["latency_measured_at"]
        spec = httpx.get(s.url("/openapi.json")).json()
        declared = spec["paths"]["/predict"]["post"]["parameters"][0]["schema"]
        fastest = min(c["latency_ms"] for c in again.json()["configs"])
        assert declared["properties"]["latency_ms"]["minimum"] == fastest
        body = httpx.post(s.url(f"/predict?latency_ms={fastest!r}"),
                          content=encode(Image.fromarray(grey(5))),
                          headers={"content-type": "image/png"}).json()
        assert body["config"]["latency_ms"] == fastest

        original = TorchRunner.predict
        monkeypatch.setattr(TorchRunner, "predict",
                            lambda self, b: (time.sleep(0.5), original(self, b))[1])

        async def busy():
            async with httpx.AsyncClient(timeout=60) as c:
                job = asyncio.create_task(c.post(s.url("/predict"), content=encode(
                    Image.fromarray(grey(6))), headers={"content-type": "image/png"}))
                await until_inflight(c, s)
                refused = await c.post(s.url("/configs/profile"))
                return refused, (await job).status_code
        refused, ok = asyncio.run(busy())
        assert ok == 200 and refused.status_code == 409 and "not idle" in refused.json()["detail"]


def test_interleaved_low_quantile_latency_ignores_a_burst():
    """One config slowed for a burst must not swap the order of two configs."""
    from serve.runners import measure_latencies_ms

    class Fake:
        def __init__(self, s: float, burst: int = 0) -> None:
            self.s, self.burst = s, burst

        def predict(self, x):
            time.sleep(self.s * (20 if self.burst > 0 else 1))
            self.burst -= 1
            return x

    lat = measure_latencies_ms({"small": Fake(0.001, burst=14), "big": Fake(0.003)}, (1, 2, 2),
                               rounds=6, per_round=4)
    assert lat["small"] < lat["big"]
