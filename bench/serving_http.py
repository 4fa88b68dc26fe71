"""The serving benchmark's HTTP side (:mod:`bench.serving`): sample inputs, ``python -m serve``
processes on 127.0.0.1, a raw keep-alive HTTP/1.1 client, metric scrapes, the overload cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gzip
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO

FASHION_MNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
HOST = "127.0.0.1"


# ------------------------------------------------------------------------------------ inputs
def sample_pngs(n: int, size: int, channels: int) -> tuple[list[bytes], str]:
    """``n`` PNG files: the first Fashion-MNIST test images when they fit the model, else noise."""
    from PIL import Image

    if channels == 1 and size == 28 and FASHION_MNIST_TEST.is_file():
        with gzip.open(FASHION_MNIST_TEST, "rb") as f:
            raw = f.read(16 + n * 784)[16:]
        arrays = list(np.frombuffer(raw, np.uint8).reshape(n, 28, 28))
        source = f"{FASHION_MNIST_TEST} (first {n} test images)"
    else:
        rng = np.random.default_rng(0)
        shape = (size, size) if channels == 1 else (size, size, 3)
        arrays = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]
        source = f"uniform noise {size}x{size}x{channels} (seed 0)"
    pngs = []
    for a in arrays:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        pngs.append(buf.getvalue())
    return pngs, source


def multipart(pngs: list[bytes]) -> tuple[bytes, str]:
    """The multipart/form-data body httpx sends for these files, and its content type."""
    import httpx

    req = httpx.Request("POST", f"http://{HOST}/predict",
                        files=[("file", (f"img{i}.png", p, "image/png")) for i, p in enumerate(pngs)])
    return req.read(), req.headers["content-type"]


# ----------------------------------------------------------------------------------- servers
def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the server gets SIGTERM if the benchmark dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerProcess:
    """One ``python -m serve`` subprocess on 127.0.0.1 with its own log file."""

    def __init__(self, name: str, weights: Path, flags: list[str], threads: int, logdir: Path) -> None:
        self.name, self.weights, self.threads = name, weights, threads
        self.flags = ["--backend", "onnxruntime", "--threads", str(threads), *flags]
        self.log_path = logdir / f"serve-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.started_at = 0.0
        self.ready_s: float | None = None
        self.attempts = 0

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "serve", "--weights", str(self.weights), "--host", HOST,
                "--port", str(self.port), *self.flags]

    def start(self) -> None:
        self.attempts += 1
        self.port = free_port()
        env = os.environ | {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
        finally:
            log.close()
        self.started_at = time.perf_counter()

    def log_tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def poll_ready(self, client) -> bool:
        """True once /readyz answers 200; restarts once on a lost port race; raises if it died."""
        import httpx

        assert self.proc is not None
        if self.ready_s is not None:
            return True
        rc = self.proc.poll()
        if rc is not None:
            if rc == 3 and self.attempts < 3:  # uvicorn could not bind: the port was taken meanwhile
                self.start()
                return False
            raise RuntimeError(f"server {self.name} exited with status {rc}:\n{self.log_tail()}")
        try:
            r = client.get(f"{self.base}/readyz", timeout=2)
        except httpx.TransportError:
            return False
        if r.status_code == 200:
            self.ready_s = time.perf_counter() - self.started_at
            return True
        if r.status_code == 503 and "start-up failed" in r.text:
            raise RuntimeError(f"server {self.name}: {r.json().get('detail')}\n{self.log_tail()}")
        return False

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (all its threads) so far."""
        assert self.proc is not None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wait_ready(servers: list[ServerProcess], timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client() as client:
        while not all(s.poll_ready(client) for s in servers):
            if time.monotonic() > deadline:
                late = [s.name for s in servers if s.ready_s is None]
                raise RuntimeError(f"servers {late} not ready within {timeout_s:.0f} s:\n"
                                   + "\n".join(s.log_tail(10) for s in servers))
            time.sleep(0.2)


# --------------------------------------------------------------------- raw HTTP client, scrapes
class RawClient:
    """A minimal keep-alive HTTP/1.1 client (asyncio streams) for load generation.

    A load generator must cost much less CPU than the server it loads, and on a 2-core host it
    shares the cores with it: this one sends pre-encoded request bytes and reads the response by
    Content-Length, which costs a fraction of a full client's per-request CPU.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def send(self, request: bytes) -> int:
        """Send one request, read the whole response; the HTTP status."""
        if self.writer is None or self.writer.is_closing():
            await self.connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            self.writer.close()
            self.writer = None
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"connection" and value.strip().lower() == b"close":
                close = True
            elif key == b"transfer-encoding":
                raise ConnectionError("chunked responses are not supported by this load client")
        await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


def scrape(server: ServerProcess, config: str) -> dict[str, float]:
    """The server's own counters for one config: inference calls, images, seconds in inference,
    /predict handler seconds and count (``pareco_*`` Prometheus metrics)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    want = {"pareco_batch_size_count": "batches", "pareco_batch_size_sum": "batched_images",
            "pareco_inference_latency_seconds_sum": "inference_s",
            "pareco_predict_latency_seconds_sum": "handler_s",
            "pareco_predict_latency_seconds_count": "handled"}
    text = httpx.get(f"{server.base}/metrics", timeout=30).text
    out = dict.fromkeys(want.values(), 0.0)
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name in want and smp.labels.get("config") == config:
                out[want[smp.name]] = smp.value
    return out


def raw_request(port: int, mflops: float, body: bytes, ctype: str) -> bytes:
    head = (f"POST /predict?mflops={mflops!r} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"User-Agent: pareco-bench\r\nAccept: */*\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def load_cell(server: ServerProcess, config: str, requests: list[bytes], clients: int,
                    window_s: float) -> dict[str, Any]:
    """``clients`` concurrent keep-alive connections, each sending batch-1 requests back to back
    for ``window_s`` seconds (after one untimed request each). Throughput counts every image
    answered 200 over the time until the last in-flight request finished."""
    conns = [RawClient(server.port) for _ in range(clients)]
    await asyncio.gather(*(c.connect() for c in conns))
    try:
        await asyncio.wait_for(asyncio.gather(*(c.send(requests[i % len(requests)])
                                                for i, c in enumerate(conns))), 60)
        loop = asyncio.get_running_loop()
        lat: list[float] = []
        statuses: dict[int, int] = {}

        async def worker(i: int, conn: RawClient, end: float) -> int:
            n, k = 0, i
            while loop.time() < end:
                t0 = time.perf_counter()
                status = await conn.send(requests[k % len(requests)])
                k += 1
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    lat.append((time.perf_counter() - t0) * 1e3)
                    n += 1
            return n

        m0 = scrape(server, config)
        cpu_server0, cpu_client0 = server.cpu_seconds(), time.process_time()
        t0 = time.perf_counter()
        end = loop.time() + window_s
        counts = await asyncio.wait_for(
            asyncio.gather(*(worker(i, c, end) for i, c in enumerate(conns))), window_s + 120)
        elapsed = time.perf_counter() - t0
        cpu_server = server.cpu_seconds() - cpu_server0
        cpu_client = time.process_time() - cpu_client0
        m1 = scrape(server, config)
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    images = sum(counts)
    return {"images": images, "seconds": elapsed, "images_per_s": images / elapsed,
            "statuses": {str(k): v for k, v in statuses.items()}, "latency_ms": lat,
            "server_cpu_s": cpu_server, "client_cpu_s": cpu_client,
            "server_metrics": {k: m1[k] - m0[k] for k in m0}}


# ----------------------------------------------------------------------------- overload cell
def probe_healthz(port: int, timeout_s: float = 5.0) -> float:
    """One Docker-HEALTHCHECK-like probe: a fresh connection, ``GET /healthz``; seconds taken
    (``inf`` on a failure or a non-200 answer)."""
    import http.client

    t0 = time.perf_counter()
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
        try:
            conn.request("GET", "/healthz")
            ok = conn.getresponse().status == 200
        finally:
            conn.close()
    except OSError:
        ok = False
    return time.perf_counter() - t0 if ok else float("inf")


async def overload_cell(port: int, request: bytes, clients: int, window_s: float,
                        max_requests_per_client: int = 100_000,
                        probe_every_s: float = 0.25, keep_samples: bool = False,
                        rate_per_s: float | None = None) -> dict[str, Any]:
    """``clients`` keep-alive connections sending ``request`` back to back (a 503 is retried at
    once: the worst case) for ``window_s`` seconds or ``max_requests_per_client`` requests each,
    while a thread probes ``/healthz`` on fresh connections every ``probe_every_s`` seconds.
    With ``rate_per_s``, the clients together offer that many requests per second instead (each
    one every ``clients / rate_per_s`` seconds, staggered; one that falls behind sends at once).

    Returns throughput (200s per second), p50/p99 of the accepted requests (ms), the 503 share,
    connection errors and the worst ``/healthz`` probe (s; ``inf`` = a probe failed); with
    ``keep_samples`` also every accepted request's latency (``accepted_ms``)."""
    import threading

    loop = asyncio.get_running_loop()
    lat: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    probes: list[float] = []
    stop = threading.Event()

    def prober() -> None:
        while not stop.is_set():
            probes.append(probe_healthz(port))
            stop.wait(probe_every_s)

    interval = clients / rate_per_s if rate_per_s else 0.0

    async def worker(i: int, end: float) -> None:
        nonlocal errors
        conn = RawClient(port)
        next_at = loop.time() + interval * i / clients
        try:
            for _ in range(max_requests_per_client):
                if interval:
                    await asyncio.sleep(max(0.0, next_at - loop.time()))
                    next_at = max(next_at + interval, loop.time())
                if loop.time() >= end:
                    break
                t0 = time.perf_counter()
                try:
                    status = await asyncio.wait_for(conn.send(request), 30)
                except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                    errors += 1
                    await conn.close()
                    conn = RawClient(port)
                    continue
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 200:
                    lat.append((time.perf_counter() - t0) * 1e3)
        finally:
            await conn.close()

    thread = threading.Thread(target=prober, daemon=True)
    t0 = time.perf_counter()
    thread.start()
    try:
        await asyncio.gather(*(worker(i, loop.time() + window_s) for i in range(clients)))
    finally:
        elapsed = time.perf_counter() - t0
        stop.set()
        thread.join(10)
    total = sum(statuses.values())
    a = np.asarray(lat) if lat else np.asarray([np.nan])
    return {"clients": clients, "seconds": elapsed, "requests": total, "statuses": statuses,
            "connection_errors": errors, "accepted_per_s": len(lat) / elapsed,
            "share_503": statuses.get("503", 0) / total if total else None,
            "accepted_p50_ms": float(np.percentile(a, 50)), "accepted_p99_ms": float(np.percentile(a, 99)),
            "healthz_probes": len(probes), "healthz_worst_s": max(probes) if probes else None,
            "healthz_failed": sum(p == float("inf") for p in probes)} | (
                {"accepted_ms": lat} if keep_samples else {})


