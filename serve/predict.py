"""``POST /predict``: admission first, then the body, then ONE worker-thread hop.

Order of work per request (cheapest refusal first, so overload is shed before it costs much):

1. content type (415), query (422), readiness (503), budget -> config (422);
2. admission: at most ``max_inflight`` requests in progress; beyond that 503 + ``Retry-After``
   *before the body is read or decoded*;
3. the body (size-limited by :mod:`serve.limits`; a client that disconnects meanwhile is a 499,
   not an error); in SLO mode (``--slo-ms``) the config is chosen now, from the budget's
   candidates and the current queues (:mod:`serve.slo`), or the request is shed (503 +
   ``Retry-After``, held for ``reject_delay_ms`` like an early refusal); then parse + decode +
   queue in one worker-thread hop (:mod:`serve.batching`), whose queue cannot outgrow the admitted
   requests.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from serve.batching import QueueFull
from serve.bodies import prepare_body
from serve.errors import ApiError, unavailable
from serve.metrics import STARTED
from serve.multipart import MultipartError, boundary_of
from serve.query import QueryError
from serve.schemas import PredictResponse
from serve.selection import BudgetError, select
from serve.server import Server
from serve.admission import hold_s
from serve.slo import Choice, estimate_images


def add_predict_route(app: FastAPI, server: Server, responses: dict[int | str, Any]) -> None:
    """Register ``POST /predict`` on ``app``."""
    metrics, settings, classes = server.metrics, server.settings, server.model.classes
    admission = server.admission
    mode = "budget" if settings.slo_ms is None else "slo"

    @app.post("/predict", response_model=PredictResponse, responses=responses,
              summary="Classify images with the most accurate configuration within a budget",
              openapi_extra={"requestBody": request_body_schema()})
    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        boundary, raw = _content_kind(request.headers.get("content-type", ""))
        try:
            q = server.query.parse(request.scope["query_string"])
        except QueryError as e:
            raise ApiError(422, str(e)) from None
        server.require_ready()
        try:
            config = select(server.front, server.latency_ms, mflops=q.mflops,
                            max_latency_ms=q.latency_ms)
        except BudgetError as e:
            raise ApiError(422, str(e)) from None
        if not admission.enter():
            raise unavailable(admission.detail)
        choice: Choice | None = None
        admitted = True
        try:
            body = await request.body()
            if server.slo is not None:
                choice = server.slo.choose(
                    server.slo.candidates(server.front, server.latency_ms, q.mflops, q.latency_ms),
                    estimate_images(body, None if raw else boundary, settings.max_files),
                    request.scope.get(STARTED, t0))
                if choice.config is None:  # a held refusal is not in progress: leave first
                    admission.leave()
                    admitted = False
                    await _shed(server, choice)
                config = choice.config

            def prepare() -> tuple[np.ndarray, list[str | None]]:  # in a worker thread
                t = time.perf_counter()
                try:
                    return prepare_body(body, None if raw else boundary, server.model.preprocessing,
                                        settings)
                finally:
                    metrics.decode.observe(time.perf_counter() - t)

            try:
                names, (probs, order) = await server.batchers[config.id].submit_from(
                    server.decode_executor, prepare)
            except QueueFull as e:
                metrics.rejected.labels("queue").inc()
                raise unavailable(f"overloaded: configuration {config.id} has a full queue "
                                  f"({e}); retry later") from None
        finally:
            if admitted:
                admission.leave()
        k = q.top_k
        predictions = [
            {"filename": name, "top_k": [{"label": classes[j], "index": j, "probability": p}
                                         for j, p in zip(idx, ps)]}
            for name, idx, ps in zip(names, order[:, :k].tolist(), probs[:, :k].tolist())]
        payload = json.dumps({"config": server.chosen[config.id], "predictions": predictions},
                             separators=(",", ":")).encode()
        metrics.images.labels(config.id).inc(len(names))
        metrics.request_latency.labels(config.id).observe(time.perf_counter() - t0)
        metrics.served(config.id, mode, config.expected_accuracy)
        if choice is not None:
            server.slo.finished(choice)
        return Response(payload, media_type="application/json")


async def _shed(server: Server, choice: Choice) -> None:
    """Refuse a request no candidate can answer within the SLO: counted, held for the reject
    delay (a client retrying at once must not fill the event loop, :mod:`serve.admission`), then
    raises the 503 (with ``Retry-After``)."""
    assert server.slo is not None
    server.metrics.rejected.labels("slo").inc()
    if server.settings.reject_delay_ms > 0:
        await asyncio.sleep(hold_s(server.settings.reject_delay_ms / 1e3))
    raise unavailable(server.slo.shed_detail(choice))


def _content_kind(ctype: str) -> tuple[bytes | None, bool]:
    """``(multipart boundary, raw)``: raw = one image as the whole body (``image/*`` or
    ``application/octet-stream``); raises 415 for anything else, 400 for a boundary-less
    multipart type."""
    media = ctype.split(";", 1)[0].strip().lower()
    if media.startswith("image/") or media == "application/octet-stream":
        return None, True
    if media != "multipart/form-data":
        raise ApiError(415, f"expected a multipart/form-data upload with one or more 'file' "
                            f"parts, or one raw image body (image/* or application/octet-stream), "
                            f"got content type {ctype or 'none'!r}")
    try:
        return boundary_of(ctype), False
    except MultipartError as e:
        raise ApiError(400, str(e)) from None


def request_body_schema() -> dict[str, Any]:
    """The OpenAPI request body: multipart ``file`` parts, or one raw image."""
    raw = {"schema": {"type": "string", "format": "binary",
                      "description": "one raw image as the whole body (its filename in the "
                                     "answer is null)"}}
    return {"required": True, "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"], "properties": {"file": {
                "type": "array", "items": {"type": "string", "format": "binary"},
                "description": "one or more images (any format Pillow reads); repeat the "
                               "field for a batch"}}}},
        "image/*": raw, "application/octet-stream": raw}}
