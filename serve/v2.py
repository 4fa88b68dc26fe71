"""The Open Inference Protocol (KServe v2) REST endpoints, next to ``/predict``.

``GET /v2`` (server metadata), ``GET /v2/health/live``, ``GET /v2/health/ready``,
``GET /v2/models/{name}`` (tensor metadata), ``GET /v2/models/{name}/ready`` and
``POST /v2/models/{name}/infer`` (wire format: :mod:`serve.v2codec`). ``{name}`` is the zoo
model's name (:func:`model_name`). The budget is a request parameter (``mflops`` or
``latency_ms``, chosen as for ``/predict`` by :func:`serve.selection.select`); the chosen config
comes back in the response parameters (``config_id``, ``config_mflops``,
``config_expected_accuracy``, ``config_latency_ms``). Errors follow the protocol:
``{"error": message, "status": code}`` (``tritonclient`` shows ``error``).

Inference goes through the same admission bound and per-config micro-batchers as ``/predict``;
parsing and decoding run in the decode pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from serve.batching import QueueFull
from serve.errors import ApiError, unavailable
from serve.selection import BudgetError, select
from serve.server import Server
from serve.v2codec import HEADER_LENGTH, OUTPUT, InferRequest, encode_response, parse_infer

PROTOCOL_NAME = "pareco-serve"
MODEL_VERSION = "1"


def model_name(weights: Path) -> str:
    """The zoo name of ``weights``: its entry in the ``index.json`` one folder up (as in
    ``zoo/index.json``), else the name of the folder holding it."""
    index = weights.parent.parent / "index.json"
    try:
        for entry in json.loads(index.read_text()):
            if (index.parent / entry["path"]).resolve() == weights.resolve():
                return str(entry["name"])
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return weights.resolve().parent.name


def _json(doc: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
          ) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")).encode(), status_code=status,
                    headers=headers, media_type="application/json")


def _v2_errors(fn: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Answer :class:`ApiError` in the protocol's error format."""

    @wraps(fn)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:
        try:
            return await fn(*args, **kwargs)
        except ApiError as e:
            return _json({"error": e.detail, "status": e.status}, e.status, e.headers)

    return wrapped


def add_v2_routes(app: FastAPI, server: Server) -> str:
    """Register the ``/v2`` endpoints on ``app``; returns the served model name."""
    name = model_name(server.source.weights)
    tags = ["Open Inference Protocol (KServe v2)"]

    def check(requested: str) -> None:
        if requested != name:
            raise ApiError(404, f"unknown model {requested!r}; this server serves {name!r}")

    @app.get("/v2", tags=tags, summary="Server metadata")
    async def server_metadata() -> Response:
        return _json({"name": PROTOCOL_NAME, "version": MODEL_VERSION, "extensions": [
            "binary_tensor_data", "classification"]})

    @app.get("/v2/health/live", tags=tags, summary="Liveness: 200 while the process is up")
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready", tags=tags, summary="Readiness: 200 once every config is timed")
    @_v2_errors
    async def ready() -> Response:
        server.require_ready()
        return _json({"ready": True})

    @app.get("/v2/models/{model}", tags=tags, summary="Model metadata: tensors, shapes, datatypes")
    @_v2_errors
    async def metadata(model: str) -> Response:
        check(model)
        return _json(model_metadata(server, name))

    @app.get("/v2/models/{model}/ready", tags=tags, summary="Model readiness")
    @_v2_errors
    async def model_ready(model: str) -> Response:
        check(model)
        server.require_ready()
        return _json({"name": name, "ready": True})

    @app.post("/v2/models/{model}/infer", tags=tags,
              summary="Classify a preprocessed FP32 batch or encoded images within a budget")
    @_v2_errors
    async def infer(model: str, request: Request) -> Response:
        check(model)
        return await _infer(server, name, request)

    return name


def model_metadata(server: Server, name: str) -> dict[str, Any]:
    """The protocol's model metadata, with the front, the FP32 input's normalization (pixels
    scaled to [0, 1], then ``(x - mean) / std`` per channel) and the accepted parameters."""
    pre = server.model.preprocessing
    c, s, _ = pre.shape
    return {"name": name, "versions": [MODEL_VERSION], "platform": server.settings.backend,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, c, s, s]},
                       {"name": "image", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": OUTPUT, "datatype": "FP32",
                         "shape": [-1, len(server.model.classes)]}],
            "parameters": {"arch": server.model.arch, "classes": ",".join(server.model.classes),
                           "input_mean": ",".join(map(str, pre.mean)),
                           "input_std": ",".join(map(str, pre.std)),
                           "configs": ",".join(cfg.id for cfg in server.front),
                           "budgets": "mflops, latency_ms (request parameters, at most one)"}}


async def _infer(server: Server, name: str, request: Request) -> Response:
    """Admission, body, parse in the decode pool, select, micro-batch, encode."""
    t0 = time.perf_counter()
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media not in ("application/json", "application/octet-stream", ""):
        raise ApiError(415, f"expected application/json (or application/octet-stream with the "
                            f"binary tensor extension), got content type {media!r}")
    server.require_ready()
    if not server.admission.enter():
        raise unavailable(server.admission.detail)
    try:
        body = await request.body()
        req: InferRequest = await asyncio.get_running_loop().run_in_executor(
            server.decode_executor, parse_infer, body, request.headers.get(HEADER_LENGTH),
            server.model.preprocessing, len(server.model.classes), server.settings)
        try:
            config = select(server.front, server.latency_ms, mflops=req.mflops,
                            max_latency_ms=req.latency_ms)
        except BudgetError as e:
            raise ApiError(422, str(e)) from None
        try:
            probs, order = await server.batchers[config.id].submit(req.batch)
        except QueueFull as e:
            server.metrics.rejected.labels("queue").inc()
            raise unavailable(f"overloaded: configuration {config.id} has a full queue ({e}); "
                              f"retry later") from None
    finally:
        server.admission.leave()
    chosen = server.chosen[config.id]
    params = {f"config_{k}": v for k, v in chosen.items() if v is not None}
    body, header_len = encode_response(req, probs, order, server.model.classes, {
        "model_name": name, "model_version": MODEL_VERSION, "parameters": params})
    server.metrics.images.labels(config.id).inc(len(req.batch))
    server.metrics.request_latency.labels(config.id).observe(time.perf_counter() - t0)
    if header_len is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(header_len)})
