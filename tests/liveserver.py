"""A real server for browser and protocol-client tests: uvicorn (the ``python -m serve`` config)
on 127.0.0.1 in a thread of the test process, on a free port; stopped on exit."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from serve.app import create_app
from serve.http import HttpLimits, uvicorn_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(weights: Path, timeout_s: float = 60, **settings) -> Iterator[str]:
    """Serve ``weights`` (torch backend, one thread, no cache, no batch delay; ``settings``
    override these and set any other :class:`serve.settings.Settings` field) and yield its base
    URL once ready."""
    import uvicorn

    app = create_app(weights, **({"cache_dir": False, "backend": "torch", "threads": 1,
                                  "batch_delay_ms": 0} | settings))
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port, limits=HttpLimits(),
                                           access_log=False, log_level="warning"))
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert thread.is_alive(), "the server thread died"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server not ready within {timeout_s} s"
            time.sleep(0.1)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=20)
