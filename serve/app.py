"""The FastAPI application: one weight file, every front configuration, chosen per request.

``create_app(weights)`` loads and validates the weight file at once, so an invalid file refuses to
start before any port is bound (``python -m serve`` exits 2; ``uvicorn --factory`` fails too). The
slow part runs in the background after the lifespan starts: one runner per configuration
(dense subnet with its BN statistics; ONNX Runtime sessions built in memory), warm-up and a batch-1
latency measurement per configuration. ``/healthz`` answers 200 throughout; ``/readyz``,
``/predict`` and ``/configs`` answer 503 until that is done.

Errors are JSON ``{"status", "error", "detail"}`` (:class:`serve.schemas.Error`):

- 400: empty file, bytes Pillow cannot identify, truncated or corrupt image data, a malformed
  multipart body;
- 413: body above ``max_body_bytes``, more than ``max_files`` files, or an image with more than
  ``max_pixels`` pixels (decompression bomb, refused from its header before decoding);
- 415: request neither ``multipart/form-data`` nor a raw ``image/*`` body (one image, the
  single-image fast path), or a part whose content type is neither ``image/*`` nor
  ``application/octet-stream`` (= unspecified; the bytes are then sniffed);
- 422: bad query values, both budgets given, a budget below the cheapest config (the message names
  the minimum; ``mflops``'s minimum is also in the OpenAPI schema), no ``file`` part;
- 503 (with ``Retry-After``): not ready yet, or the chosen configuration's queue is full.
"""

import asyncio
import contextlib
import http
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from pareco.weightfile import FrontConfig, WeightFileError, ZooModel, load_zoo_model
from serve.batching import MicroBatcher, QueueFull
from serve.images import DEFAULT_MAX_PIXELS, ImageError, preprocess
from serve.limits import BodyLimitMiddleware
from serve.metrics import Metrics, RequestMetricsMiddleware
from serve.multipart import MultipartError, TooManyParts, boundary_of, parse_parts
from serve.runners import BACKENDS, build_runners, measure_latency_ms
from serve.schemas import ConfigInfo, ConfigsResponse, Error, PredictResponse, Status
from serve.selection import BudgetError, select

log = logging.getLogger("serve")

RETRY_AFTER_S = 1
DEFAULT_WEIGHTS = "zoo/resnet20-fashionmnist/model.safetensors"  # the shipped model


class ApiError(Exception):
    """An error answered as :class:`serve.schemas.Error` JSON with ``status``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def default_threads() -> int:
    """Intra-op threads per inference call: half the cores (several configs may run at once)."""
    return max(1, (os.cpu_count() or 1) // 2)


class Server:
    """The serving state of one app: front, runners, batchers, metrics, readiness."""

    def __init__(self, zoo: ZooModel, *, backend: str, max_batch: int, batch_delay_ms: float,
                 max_queue: int, threads: int) -> None:
        self.zoo: ZooModel | None = zoo  # dropped once the runners exist
        self.front: list[FrontConfig] = list(zoo.front)
        self.classes = zoo.classes
        self.pre = zoo.preprocessing
        self.arch = str(zoo.meta["arch"]["name"])
        self.backend, self.threads = backend, threads
        self.max_batch, self.delay_s, self.max_queue = max_batch, batch_delay_ms / 1e3, max_queue
        self.metrics = Metrics()
        self.latency_ms: dict[str, float] = {}
        self.batchers: dict[str, MicroBatcher] = {}
        self.chosen: dict[str, dict[str, Any]] = {}  # the "config" part of every answer, per id
        self.executor: ThreadPoolExecutor | None = None  # inference batches (a thread per config)
        self.decode_executor: ThreadPoolExecutor | None = None  # parse + decode (+ lone inference)
        self.ready = False
        self.failure: str | None = None

    async def start(self) -> None:
        """Materialize, warm up and time every config (off the event loop), then become ready."""
        loop = asyncio.get_running_loop()
        try:
            zoo = self.zoo
            if zoo is None:
                raise RuntimeError("this app was already started once; create a new one")
            t0 = time.perf_counter()
            runners = await loop.run_in_executor(None, build_runners, zoo, self.backend, self.threads)
            shape = (self.pre.channels, self.pre.image_size, self.pre.image_size)
            for c in self.front:
                ms = await loop.run_in_executor(None, measure_latency_ms, runners[c.id], shape)
                self.latency_ms[c.id] = ms
                self.metrics.config_latency.labels(c.id).set(ms)
                log.info("config %s: %.3f MFLOPs, %.3f ms at batch 1 (%s)", c.id, c.mflops, ms,
                         self.backend)
            self.executor = ThreadPoolExecutor(len(self.front), thread_name_prefix="pareco-infer")
            self.decode_executor = ThreadPoolExecutor(max(2, os.cpu_count() or 1),
                                                      thread_name_prefix="pareco-decode")
            for c in self.front:
                self.batchers[c.id] = MicroBatcher(
                    runners[c.id], self.executor, max_batch=self.max_batch, delay_s=self.delay_s,
                    max_queue=self.max_queue, on_batch=self._batch_observer(c.id),
                    postprocess=ranked_softmax)
                self.chosen[c.id] = {"id": c.id, "mflops": c.mflops,
                                     "expected_accuracy": self.expected_accuracy(c),
                                     "latency_ms": self.latency_ms[c.id]}
            self.zoo = None
            self.ready = True
            log.info("ready: %d configurations in %.1f s", len(self.front), time.perf_counter() - t0)
        except Exception as e:
            self.failure = f"start-up failed: {type(e).__name__}: {e}"
            log.exception("start-up failed")

    def _batch_observer(self, config_id: str):
        batch_size = self.metrics.batch_size.labels(config_id)
        inference = self.metrics.inference_latency.labels(config_id)

        def observe(size: int, seconds: float) -> None:
            batch_size.observe(size)
            inference.observe(seconds)
        return observe

    async def stop(self) -> None:
        for b in self.batchers.values():
            await b.close()
        for ex in (self.decode_executor, self.executor):
            if ex is not None:
                await asyncio.get_running_loop().run_in_executor(None, ex.shutdown, True)

    def require_ready(self) -> None:
        if not self.ready:
            raise ApiError(503, self.failure or "the server is still loading models",
                           {"Retry-After": str(RETRY_AFTER_S)})

    def expected_accuracy(self, c: FrontConfig) -> float | None:
        return c.test_acc if c.test_acc is not None else c.val_acc


def create_app(weights: str | os.PathLike | None = None, *, backend: str = "onnxruntime", max_batch: int = 32,
               batch_delay_ms: float = 2.0, max_queue: int = 64, threads: int | None = None,
               max_files: int = 64, max_body_bytes: int = 16 * 2**20,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> FastAPI:
    """The serving app for one weight file; raises :class:`WeightFileError` if it is invalid.

    ``weights=None`` reads ``$PARECO_WEIGHTS``, else :data:`DEFAULT_WEIGHTS` (relative to the
    working directory), so ``uvicorn --factory serve.app:create_app`` works without arguments.

    ``max_batch``: images per inference call; ``batch_delay_ms``: how long a batch waits to fill;
    ``max_queue``: requests waiting per configuration before 503; ``threads``: intra-op threads
    per inference call (default :func:`default_threads`); ``max_files``: files per request;
    ``max_body_bytes``: request body limit; ``max_pixels``: decompression-bomb limit per image.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    for name, value in (("max_batch", max_batch), ("max_queue", max_queue),
                        ("max_files", max_files), ("max_body_bytes", max_body_bytes),
                        ("max_pixels", max_pixels), ("threads", 1 if threads is None else threads)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if batch_delay_ms < 0:
        raise ValueError(f"batch_delay_ms must be >= 0, got {batch_delay_ms}")
    if backend == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401

            import export.onnx_io  # noqa: F401
        except ImportError as e:
            raise RuntimeError(f"the onnxruntime backend needs onnx, onnxscript and onnxruntime "
                               f"(pip install 'pareco-zoo[serve]') or use --backend torch: {e}") from e
    if weights is None:
        weights = os.environ.get("PARECO_WEIGHTS", DEFAULT_WEIGHTS)
    zoo = load_zoo_model(Path(weights))
    server = Server(zoo, backend=backend, max_batch=max_batch, batch_delay_ms=batch_delay_ms,
                    max_queue=max_queue, threads=threads or default_threads())
    min_mflops = min(c.mflops for c in server.front)
    num_classes = len(server.classes)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(server.start())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await server.stop()

    app = FastAPI(
        title="PareCO width-switching classifier",
        summary=f"{server.arch}: {len(server.front)} configurations from "
                f"{min_mflops:g} to {max(c.mflops for c in server.front):g} MFLOPs",
        version="1",
        lifespan=lifespan,
    )
    app.state.server = server
    paths = frozenset({"/predict", "/configs", "/healthz", "/readyz", "/metrics"})
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes,
                       render=lambda e: error_response(e.status_code, str(e.detail)))
    app.add_middleware(RequestMetricsMiddleware, metrics=server.metrics, paths=paths)  # outermost
    _install_error_handlers(app, min_mflops=min_mflops, min_config=server.front[0].id)

    def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
        why = {400: "Empty, unreadable, corrupt or truncated image",
               413: f"Body above {max_body_bytes} bytes, more than {max_files} files, or an image "
                    f"above {max_pixels} pixels (decompression-bomb guard)",
               415: "Neither multipart/form-data nor a raw image/* body, or a part that is not "
                    "image/* (application/octet-stream is accepted and sniffed)",
               422: "Invalid query values, both budgets, a budget below the cheapest "
                    "configuration (the message names the minimum), or no 'file' part",
               503: "Not ready yet, or the chosen configuration's queue is full (see Retry-After)"}
        return {code: {"model": Error, "description": why[code]} for code in codes}

    Query = predict_query_model(min_mflops, num_classes)
    query_schema = Query.model_json_schema()["properties"]
    validation_detail = _validation_detail_factory(min_mflops=min_mflops,
                                                   min_config=server.front[0].id)
    images_done = server.metrics.images
    request_latency = server.metrics.request_latency
    rejected = server.metrics.rejected
    pre = server.pre

    @app.post(
        "/predict", response_model=PredictResponse,
        responses=error_responses(400, 413, 415, 422, 503),
        summary="Classify images with the most accurate configuration within a budget",
        openapi_extra={
            "parameters": [{"name": name, "in": "query", "required": False, "schema": schema,
                            "description": schema.get("description", "")}
                           for name, schema in query_schema.items()],
            "requestBody": {"required": True, "content": {
                "multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"], "properties": {"file": {
                        "type": "array", "items": {"type": "string", "format": "binary"},
                        "description": "one or more images (any format Pillow reads); "
                                       "repeat the field for a batch"}}}},
                "image/*": {"schema": {"type": "string", "format": "binary",
                                       "description": "one raw image as the whole body "
                                                      "(its filename in the answer is null)"}},
            }}})
    async def predict(request: Request) -> Response:
        # Lean on purpose (no FastAPI parameter/body/response-model work per request): the
        # query is validated by one pydantic model, the body is read in full here and parsed,
        # decoded and queued in ONE worker-thread hop (serve.batching), the answer is JSON bytes.
        t0 = time.perf_counter()
        ctype = request.headers.get("content-type", "")
        media = ctype.split(";", 1)[0].strip().lower()
        raw = media.startswith("image/")
        if not raw and media != "multipart/form-data":
            raise ApiError(415, f"expected a multipart/form-data upload with one or more 'file' "
                                f"parts (or one raw image/* body), got content type "
                                f"{ctype or 'none'!r}")
        try:
            q = Query.model_validate(dict(parse_qsl(request.scope["query_string"].decode("latin-1"))))
        except ValidationError as e:
            raise ApiError(422, validation_detail(e.errors(), prefix=("query",))) from None
        server.require_ready()
        if q.mflops is not None and q.latency_ms is not None:
            raise ApiError(422, "give either mflops or latency_ms, not both")
        try:
            config = select(server.front, server.latency_ms, mflops=q.mflops,
                            max_latency_ms=q.latency_ms)
        except BudgetError as e:
            raise ApiError(422, str(e)) from None
        body = await request.body()
        try:
            boundary = None if raw else boundary_of(ctype)
        except MultipartError as e:
            raise ApiError(400, str(e)) from None

        def prepare() -> tuple[np.ndarray, list[str | None]]:  # in a worker thread
            return _prepare(body, boundary, pre, max_files=max_files, max_pixels=max_pixels)

        try:
            filenames, (probs, order) = await server.batchers[config.id].submit_from(
                server.decode_executor, prepare)
        except QueueFull as e:
            rejected.labels(config.id).inc()
            raise ApiError(503, f"overloaded: configuration {config.id} has a full queue ({e}); "
                                f"retry later", {"Retry-After": str(RETRY_AFTER_S)}) from None
        k = q.top_k
        classes = server.classes
        predictions = [
            {"filename": name, "top_k": [{"label": classes[j], "index": j, "probability": p}
                                         for j, p in zip(idx, ps)]}
            for name, idx, ps in zip(filenames, order[:, :k].tolist(), probs[:, :k].tolist())]
        images_done.labels(config.id).inc(len(filenames))
        request_latency.labels(config.id).observe(time.perf_counter() - t0)
        return Response(json.dumps({"config": server.chosen[config.id], "predictions": predictions},
                                   separators=(",", ":")).encode(),
                        media_type="application/json")

    @app.get("/configs", response_model=ConfigsResponse, responses=error_responses(503),
             summary="The front: every configuration with its cost, accuracy and measured latency")
    async def configs() -> ConfigsResponse:
        server.require_ready()
        return ConfigsResponse(
            arch=server.arch, backend=server.backend, classes=list(server.classes),
            default=select(server.front, server.latency_ms).id,
            configs=[ConfigInfo(id=c.id, alpha=list(c.alpha), channels=list(c.channels),
                                mflops=c.mflops, params=c.params, val_acc=c.val_acc,
                                test_acc=c.test_acc, latency_ms=server.latency_ms[c.id])
                     for c in server.front])

    @app.get("/healthz", response_model=Status, summary="Liveness: 200 while the process is up")
    async def healthz() -> Status:
        return Status(status="ok")

    @app.get("/readyz", response_model=Status, responses=error_responses(503),
             summary="Readiness: 200 once every configuration is loaded, warmed up and timed")
    async def readyz() -> Status:
        server.require_ready()
        return Status(status="ready")

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=Metrics.content_type)

    return app


def predict_query_model(min_mflops: float, num_classes: int) -> type[BaseModel]:
    """The query parameters of ``POST /predict`` (validation and the OpenAPI schema)."""
    return create_model(
        "PredictQuery",
        mflops=(float | None, Field(
            None, ge=min_mflops, allow_inf_nan=False,
            description=f"MFLOPs budget (millions of multiply-accumulates per image); the "
                        f"smallest configuration needs {min_mflops!r}")),
        latency_ms=(float | None, Field(
            None, gt=0, allow_inf_nan=False,
            description="batch-1 model latency budget in ms, as measured on this host at "
                        "start-up (see /configs); below the fastest configuration -> 422")),
        top_k=(int, Field(min(5, num_classes), ge=1, le=num_classes,
                          description="how many classes to return per image")),
    )


def _prepare(body: bytes, boundary: bytes | None, pre, *, max_files: int,
             max_pixels: int) -> tuple[np.ndarray, list[str | None]]:
    """The request body -> one float32 ``(N, C, S, S)`` batch and the N file names (worker thread).

    ``boundary=None``: the body is one raw image. Raises :class:`ApiError` (400, 413, 415, 422).
    """
    try:
        if boundary is None:
            return preprocess(body, pre, max_pixels=max_pixels, name="image body")[None], [None]
        try:
            parts = parse_parts(body, boundary, "file", max_files)
        except TooManyParts as e:
            raise ApiError(413, f"{e.count} files in one request; the limit is {max_files}") from None
        except MultipartError as e:
            raise ApiError(400, str(e)) from None
        if not parts:
            raise ApiError(422, "no image uploaded: send one or more multipart parts named 'file'")
        names = [f"file {i}" + (f" ({p.filename!r})" if p.filename else "")
                 for i, p in enumerate(parts)]
        for name, p in zip(names, parts):
            ctype = (p.content_type or "application/octet-stream").lower()
            if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
                raise ApiError(415, f"{name}: content type {ctype!r} is not an image type")
        batch = np.stack([preprocess(p.data, pre, max_pixels=max_pixels, name=name)
                          for name, p in zip(names, parts)])
        return batch, [p.filename for p in parts]
    except ImageError as e:
        raise ApiError(e.status, str(e)) from None


def ranked_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Once per batch: softmax probabilities sorted descending per row, and their class indices."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    probs = e / e.sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1, kind="stable")
    return np.take_along_axis(probs, order, axis=1), order


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The :class:`Error` JSON answer."""
    body = Error(status=status, error=http.HTTPStatus(status).phrase, detail=detail)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI, *, min_mflops: float, min_config: str) -> None:
    """Every error becomes :class:`Error` JSON."""
    error = error_response

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    detail = _validation_detail_factory(min_mflops=min_mflops, min_config=min_config)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, detail(exc.errors()))


def _validation_detail_factory(*, min_mflops: float, min_config: str):
    """``detail(errors, prefix=())``: one message for pydantic/FastAPI validation errors."""

    def detail(errors: Iterable[dict[str, Any]], prefix: tuple[str, ...] = ()) -> str:
        messages = []
        for e in errors:
            loc = [*prefix, *(str(p) for p in e.get("loc", ()))]
            where = " ".join(loc[:1]) + (f" parameter {'.'.join(loc[1:])!r}" if len(loc) > 1 else "")
            if loc[-1:] == ["mflops"] and e.get("type") == "greater_than_equal":
                messages.append(f"mflops={e.get('input')} is below the smallest configuration: "
                                f"{min_config} needs {min_mflops!r} MFLOPs (the minimum)")
            elif loc[-1:] == ["file"] and e.get("type") == "missing":
                messages.append("no image uploaded: send one or more multipart parts named 'file'")
            else:
                got = repr(e.get("input"))
                messages.append(f"{where}: {e.get('msg')} (got {got[:80] + '...' if len(got) > 80 else got})")
        return "; ".join(messages)
    return detail


__all__ = ["ApiError", "WeightFileError", "create_app", "default_threads"]
