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

The guards live in :class:`serve.protocol.GuardedHttpToolsProtocol`, a subclass of uvicorn's
httptools protocol (uvicorn[standard]); it also answers malformed requests with a JSON 400
instead of text/plain, and refuses ``/predict`` right after its head when admission is full.
Without httptools, uvicorn's h11 protocol runs with only its own limits (header size via
``h11_max_incomplete_event_size``) and a warning says the timeouts are not enforced.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("serve")


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


def uvicorn_config(app: Any, *, host: str, port: int, limits: HttpLimits, access_log: bool,
                   log_level: str = "info") -> Any:
    """The ``uvicorn.Config`` of ``python -m serve`` (uvloop when installed)."""
    import uvicorn

    loop = "uvloop" if _available("uvloop") else "asyncio"
    if _available("httptools"):
        from serve.protocol import guarded_protocol

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
