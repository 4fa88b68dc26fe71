"""The FastAPI application: one weight file, every front configuration, chosen per request.

``create_app(weights)`` validates the weight file at once (or finds its verified ONNX in the
cache), so an invalid file refuses to start before any port is bound (``python -m serve`` exits
2; ``uvicorn --factory`` fails too). The slow part runs in the background after the lifespan
starts (:class:`serve.server.Server`). ``/healthz`` answers 200 throughout; ``/readyz``,
``/predict`` and ``/configs`` answer 503 until that is done.

Errors are JSON ``{"status", "error", "detail"}`` (:class:`serve.schemas.Error`):

- 400: empty file, bytes Pillow cannot identify, truncated, corrupt or unsupported image data, a
  malformed multipart body (and, from the HTTP layer, a malformed request);
- 408: the request head or body did not arrive in time (HTTP layer, :mod:`serve.http`);
- 413: body above ``max_body_bytes``, more than ``max_files`` files, or an image with more than
  ``max_pixels`` pixels (decompression bomb, refused from its header before decoding);
- 415: request neither ``multipart/form-data`` nor one raw image body (``image/*`` or
  ``application/octet-stream``), or a part whose type is neither of those;
- 422: a query off its schema (unknown, empty or repeated parameters, bad values, both budgets), a
  budget below the cheapest/fastest config (the message names the minimum), no ``file`` part;
- 431: too many or too large request headers (HTTP layer);
- 503 (with ``Retry-After``): not ready yet, too many requests in progress, or a full queue.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from serve import onnxcache
from serve.errors import error_response, install_error_handlers
from serve.explorer import add_explorer_routes
from serve.info import add_info_routes
from serve.limits import BodyLimitMiddleware
from serve.metrics import RequestMetricsMiddleware
from serve.predict import add_predict_route
from serve.schemas import Error
from serve.server import Server, open_model
from serve.settings import Settings, default_threads
from serve.v2 import add_v2_routes

DEFAULT_WEIGHTS = "zoo/resnet20-fashionmnist/model.safetensors"  # the shipped model
PATHS = frozenset({"/", "/predict", "/configs", "/healthz", "/readyz", "/metrics", "/v2",
                   "/v2/health/live", "/v2/health/ready"})


def create_app(weights: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None
               | bool = True, **settings: Any) -> FastAPI:
    """The serving app for one weight file; raises ``pareco.weightfile.WeightFileError`` if it is
    invalid and ``ValueError`` for bad settings (:class:`serve.settings.Settings`).

    ``weights=None`` reads ``$PARECO_WEIGHTS``, else :data:`DEFAULT_WEIGHTS` (relative to the
    working directory), so ``uvicorn --factory serve.app:create_app`` works without arguments.
    ``cache_dir``: the ONNX cache folder; ``True``: :func:`serve.onnxcache.default_root`;
    ``False``/``None``: no cache (export through torch at every start).
    """
    if cache_dir is True:
        cache_dir = onnxcache.default_root()
    s = Settings(**settings, cache_dir=Path(cache_dir) if cache_dir else None)
    if weights is None:
        weights = os.environ.get("PARECO_WEIGHTS", DEFAULT_WEIGHTS)
    model, source = open_model(Path(weights), s)
    server = Server(model, source, s)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        task = asyncio.create_task(server.start())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await server.stop()

    front = server.front
    app = FastAPI(title="PareCO width-switching classifier", version="1", lifespan=lifespan,
                  summary=f"{model.arch}: {len(front)} configurations from {front[0].mflops:g} "
                          f"to {front[-1].mflops:g} MFLOPs")
    app.state.server = server
    app.add_middleware(BodyLimitMiddleware, max_bytes=s.max_body_bytes,
                       render=lambda e: error_response(e.status_code, str(e.detail)))
    install_error_handlers(app)
    why = _error_descriptions(s)
    add_predict_route(app, server, {c: {"model": Error, "description": why[c]} for c in why})
    add_info_routes(app, server, {503: {"model": Error, "description": why[503]}})
    add_explorer_routes(app)
    name = add_v2_routes(app, server)
    app.add_middleware(RequestMetricsMiddleware, metrics=server.metrics,  # outermost
                       paths=PATHS | {f"/v2/models/{name}", f"/v2/models/{name}/ready",
                                      f"/v2/models/{name}/infer"})
    _install_openapi(app, server)
    return app


def _error_descriptions(s: Settings) -> dict[int, str]:
    return {400: "Empty, unreadable, corrupt, truncated or unsupported image; malformed multipart",
            413: f"Body above {s.max_body_bytes} bytes, more than {s.max_files} files, or an "
                 f"image above {s.max_pixels} pixels (decompression-bomb guard)",
            415: "Neither multipart/form-data nor one raw image/* or application/octet-stream "
                 "body, or a part of another type",
            422: "A query off its schema, a budget below the cheapest configuration (the message "
                 "names the minimum), or no 'file' part",
            503: f"Not ready yet, more than {s.max_inflight} requests in progress, or a full "
                 f"queue (see Retry-After)"}


def _install_openapi(app: FastAPI, server: Server) -> None:
    """``/openapi.json`` with ``/predict``'s query schema as :mod:`serve.query` enforces it now
    (its latency minimum appears once measured)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        app.openapi_schema = None
        doc = generate()
        doc["paths"]["/predict"]["post"]["parameters"] = [server.query.openapi_parameter()]
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["DEFAULT_WEIGHTS", "create_app", "default_threads"]
