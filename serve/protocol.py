"""uvicorn's httptools protocol with the guards of :class:`serve.http.HttpLimits`.

Per connection: a deadline for the request head (armed when the connection opens and when a
request's first byte arrives) and one for the body (armed when the head is complete), each
answered with a JSON 408 and a close; request-line + header bytes and header count limits (431);
malformed requests answered with a JSON 400 instead of text/plain; ``/healthz`` and ``/readyz``
exempt from ``limit_concurrency``; and, with an :class:`serve.admission.Admission`, ``/predict``
refused right after its head when the server is full or, in SLO mode, cannot meet the objective
(no ASGI app work, no body read).

Imports uvicorn's httptools implementation, hence httptools: import it only when installed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serve.errors import error_body
from serve.http import HttpLimits

PROBE_PATHS = (b"/healthz", b"/readyz")


class _HeadersTooLarge(Exception):
    pass


def _raw_response(status: int, phrase: str, detail: str) -> bytes:
    body = error_body(status, detail)
    return (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Use :func:`guarded_protocol` to bind ``limits`` and ``admission``."""

    limits: HttpLimits = HttpLimits()
    admission: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._guard: asyncio.TimerHandle | None = None
        self._header_bytes = self._header_count = 0
        self._overflow = ""
        self._arm(self.limits.header_timeout_s, "request head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # ------------------------------------------------------------------ deadlines
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

    # ------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._header_count = 0
        if self._guard is None:
            self._arm(self.limits.header_timeout_s, "request head")

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_count > self.limits.max_headers:
            self._overflow = f"more than {self.limits.max_headers} request headers"
        elif self._header_bytes > self.limits.max_header_bytes:
            self._overflow = f"request head larger than {self.limits.max_header_bytes} bytes"
        if self._overflow:
            raise _HeadersTooLarge(self._overflow)

    def on_headers_complete(self) -> None:
        self._arm(self.limits.body_timeout_s, "request body")
        path = self.url.split(b"?", 1)[0]
        limit, app = self.limit_concurrency, self.app
        if path in PROBE_PATHS:
            self.limit_concurrency = None
        elif path == b"/predict" and self.admission is not None:
            self.app = self.admission.early_refusal() or app
        try:
            super().on_headers_complete()
        finally:
            self.limit_concurrency, self.app = limit, app

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def guarded_protocol(limits: HttpLimits, admission: Any = None) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=`` option, bound to ``limits`` and (optional)
    ``admission``."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"limits": limits, "admission": admission})
