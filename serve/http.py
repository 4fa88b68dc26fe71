"""The HTTP layer: uvicorn's options plus the guards uvicorn lacks, with sane defaults.

:class:`HttpLimits` (all times in seconds, sizes in bytes):

- ``limit_concurrency``: uvicorn's connections-or-tasks limit; beyond it uvicorn answers 503
  itself (``/healthz`` and ``/readyz`` are exempt, so probes are never refused);
- ``keep_alive_s``: uvicorn's idle keep-alive timeout between requests;
- ``header_timeout_s``: a request head must be complete this long after the connection opened
  or the request's first byte arrived, else the connection is closed with a 408 (this also bounds
  connections that never send anything);
- ``body_timeout_s``: the body must be complete this long after the head, else 408 and close;
- ``max_header_bytes`` / ``max_headers``: larger or more request headers are a 431.

The guards live in :class:`GuardedHttpToolsProtocol`, a subclass of uvicorn's httptools protocol
(uvicorn[standard]); it also answers malformed requests with a JSON 400 instead of text/plain.
Without httptools, uvicorn's h11 protocol runs with only its own limits (header size via
``h11_max_incomplete_event_size``) and a warning says the timeouts are not enforced.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

from serve.errors import error_body

log = logging.getLogger("serve")
PROBE_PATHS = (b"/healthz", b"/readyz")


@dataclass(frozen=True)
class HttpLimits:
    """Connection limits and timeouts (see module docstring)."""

    limit_concurrency: int = 1024
    keep_alive_s: float = 5.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _raw_response(status: int, phrase: str, detail: str) -> bytes:
    body = error_body(status, detail)
    return (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def guarded_protocol(limits: HttpLimits, admission: Any = None) -> type:
    """uvicorn's httptools protocol with :class:`HttpLimits`' guards (a class per limits);
    with ``admission`` (:class:`serve.admission.Admission`), a full server refuses ``/predict``
    right after the request head."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """Header/body deadlines, header count/size limits, JSON protocol errors."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._guard: asyncio.TimerHandle | None = None
            self._header_bytes = self._header_count = 0
            self._overflow = ""
            self._arm(limits.header_timeout_s, "request head")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, seconds: float, what: str) -> None:
            self._disarm()
            self._guard = self.loop.call_later(seconds, self._expire, what, seconds)

        def _disarm(self) -> None:
            if getattr(self, "_guard", None) is not None:
                self._guard.cancel()
                self._guard = None

        def _expire(self, what: str, seconds: float) -> None:
            self._guard = None
            if self.transport.is_closing():
                return
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(_raw_response(
                    408, "Request Timeout", f"the {what} did not arrive within {seconds:g} s"))
            self.transport.close()

        def _reject(self, status: int, phrase: str, detail: str) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(_raw_response(status, phrase, detail))
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            if self._overflow:  # raised in a parser callback, so httptools reports a parse error
                self._reject(431, "Request Header Fields Too Large", self._overflow)
            else:
                self._reject(400, "Bad Request", msg)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = self._header_count = 0
            if self._guard is None:
                self._arm(limits.header_timeout_s, "request head")

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            self._count_header_bytes(len(url))

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            self._count_header_bytes(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count_header_bytes(self, n: int) -> None:
            self._header_bytes += n
            if self._header_count > limits.max_headers:
                self._overflow = f"more than {limits.max_headers} request headers"
            elif self._header_bytes > limits.max_header_bytes:
                self._overflow = f"request head larger than {limits.max_header_bytes} bytes"
            if self._overflow:
                raise _HeadersTooLarge(self._overflow)

        def on_headers_complete(self) -> None:
            self._arm(limits.body_timeout_s, "request body")
            path = self.url.split(b"?", 1)[0]
            limit, app = self.limit_concurrency, self.app
            if path in PROBE_PATHS:
                self.limit_concurrency = None
            elif path == b"/predict" and admission is not None and admission.full:
                self.app = admission.reject_app
            try:
                super().on_headers_complete()
            finally:
                self.limit_concurrency, self.app = limit, app

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

    return GuardedHttpToolsProtocol


class _HeadersTooLarge(Exception):
    pass


def uvicorn_config(app: Any, *, host: str, port: int, limits: HttpLimits, access_log: bool,
                   log_level: str = "info") -> Any:
    """The ``uvicorn.Config`` of ``python -m serve`` (uvloop when installed)."""
    import uvicorn

    loop = "uvloop" if _available("uvloop") else "asyncio"
    if _available("httptools"):
        server = getattr(getattr(app, "state", None), "server", None)
        http: Any = guarded_protocol(limits, getattr(server, "admission", None))
    else:
        http = "h11"
        log.warning("httptools is not installed: header/body timeouts and header-count limits "
                    "are not enforced (pip install 'uvicorn[standard]')")
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=http, loop=loop,
                          access_log=access_log, limit_concurrency=limits.limit_concurrency,
                          timeout_keep_alive=limits.keep_alive_s,
                          h11_max_incomplete_event_size=limits.max_header_bytes)
