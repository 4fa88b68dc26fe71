"""Prometheus metrics of one app, in its own registry (never the process-global one).

Base units throughout (seconds, bytes). A client that disconnected before its answer (status
:data:`serve.errors.CLIENT_CLOSED`) is counted in ``pareco_client_disconnects_total`` only, never
as an HTTP error.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               Info, ProcessCollector, Summary, generate_latest)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.errors import CLIENT_CLOSED

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
STARTED = "pareco.started"  # scope key: perf_counter() when the request reached the app


def latency_buckets(slo_ms: float | None = None) -> tuple[float, ...]:
    """Upper bounds (s) of the latency histograms; with an SLO objective ``slo_ms`` it is one
    of them, so ``_bucket{le="P"} / _count`` is exactly the share answered within it."""
    if slo_ms is None:
        return _LATENCY_BUCKETS
    return tuple(sorted({*_LATENCY_BUCKETS, slo_ms / 1e3}))


class Metrics:
    """Counters, gauges and histograms of the serving app; :meth:`render` gives the text.
    ``slo_ms``: SLO mode's objective, a bucket bound of the request latency histograms."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, slo_ms: float | None = None) -> None:
        self.registry = r = CollectorRegistry()
        request_buckets = latency_buckets(slo_ms)
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total
        self.info = Info("pareco_model", "The served model and backend", registry=r)
        self.ready = Gauge("pareco_ready", "1 once every configuration is loaded and timed",
                           registry=r)
        self.requests = Counter("pareco_http_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "method", "status"], registry=r)
        self.errors = Counter("pareco_http_errors", "HTTP error responses (status >= 400)",
                              ["status"], registry=r)
        self.duration = Histogram("pareco_http_request_duration_seconds",
                                  "Time from request start to the end of the answer",
                                  ["endpoint", "status"], buckets=request_buckets, registry=r)
        self.disconnects = Counter("pareco_client_disconnects",
                                   "Clients that closed the connection before their answer",
                                   ["endpoint"], registry=r)
        self.inflight = Gauge("pareco_predict_inflight", "/predict requests admitted, not answered",
                              registry=r)
        self.queue_depth = Gauge("pareco_queue_depth", "Requests waiting for inference",
                                 ["config"], registry=r)
        self.queue_wait = Histogram("pareco_queue_wait_seconds",
                                    "Queue wait of the oldest request of each inference batch",
                                    ["config"], buckets=_LATENCY_BUCKETS, registry=r)
        self.decode = Histogram("pareco_decode_seconds", "Body parsing + image decoding per request",
                                buckets=_LATENCY_BUCKETS, registry=r)
        self.request_latency = Histogram(
            "pareco_predict_latency_seconds",
            "End-to-end /predict latency (decode, queue, inference) per configuration",
            ["config"], buckets=request_buckets, registry=r)
        self.inference_latency = Histogram(
            "pareco_inference_latency_seconds", "One batched inference call per configuration",
            ["config"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("pareco_batch_size", "Images per inference call",
                                    ["config"], buckets=_BATCH_BUCKETS, registry=r)
        self.images = Counter("pareco_images", "Images classified per configuration",
                              ["config"], registry=r)
        self.rejected = Counter("pareco_overload_rejections",
                                "Requests refused with 503: too many in flight (inflight), a full "
                                "queue (queue), or predicted above the --slo-ms objective (slo)",
                                ["reason"], registry=r)
        self.chosen = Counter("pareco_chosen_config", "Answered /predict requests per chosen "
                              "configuration and selection mode (budget, or slo: --slo-ms)",
                              ["config", "mode"], registry=r)
        self.served_accuracy = Summary(
            "pareco_served_expected_accuracy", "Expected accuracy (test, else validation) of the "
            "configuration that answered each /predict request; _sum/_count is the mean",
            registry=r)
        self.config_latency = Gauge("pareco_config_latency_seconds",
                                    "Measured batch-1 model latency per configuration",
                                    ["config"], registry=r)

    def batch_observer(self, config_id: str, also: Callable[[int, float], None] | None = None
                       ) -> Callable[[int, float, float], None]:
        """``observe(images, inference seconds, queue-wait seconds)`` per inference call; it
        also calls ``also(images, inference seconds)`` when given (the SLO model)."""
        batch_size = self.batch_size.labels(config_id)
        inference = self.inference_latency.labels(config_id)
        wait = self.queue_wait.labels(config_id)

        def observe(size: int, seconds: float, waited: float) -> None:
            batch_size.observe(size)
            inference.observe(seconds)
            wait.observe(waited)
            if also is not None:
                also(size, seconds)
        return observe

    def served(self, config_id: str, mode: str, expected_accuracy: float | None) -> None:
        """One answered /predict request: the chosen-config mix and the served accuracy."""
        self.chosen.labels(config_id, mode).inc()
        if expected_accuracy is not None:
            self.served_accuracy.observe(expected_accuracy)

    def watch_slo(self, slo_ms: float, margin_s: Callable[[], float],
                  lag_s: Callable[[], float], inflight_limit: Callable[[], int]) -> None:
        """Gauges of SLO mode: the objective, the policy's error margin and the event loop's
        lag it adds to every prediction (s), and the learned in-flight limit."""
        Gauge("pareco_slo_objective_seconds", "The --slo-ms latency objective",
              registry=self.registry).set(slo_ms / 1e3)
        Gauge("pareco_slo_margin_seconds", "99.5th percentile of the SLO latency prediction's "
              "recent errors, added to every prediction", registry=self.registry
              ).set_function(margin_s)
        Gauge("pareco_event_loop_lag_seconds", "How late the event loop runs a timer (largest "
              "of the last 0.1 s): the wait before a request reaches the app",
              registry=self.registry).set_function(lag_s)
        Gauge("pareco_slo_inflight_limit", "Requests admitted at once in SLO mode, learned from "
              "the answered requests' p99 latency (serve.slo_limit)",
              registry=self.registry).set_function(inflight_limit)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Pure ASGI middleware: every HTTP answer by endpoint, method and status, with its duration.

    ``endpoint`` is the request path when it is one of ``paths`` and ``other`` otherwise, so
    arbitrary URLs cannot blow up label cardinality. It stamps ``scope[STARTED]`` with the
    ``time.perf_counter()`` reading when the request reached the app (SLO mode counts from it).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, paths: frozenset[str]) -> None:
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = scope[STARTED] = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._record(scope, status, time.perf_counter() - t0)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        endpoint = scope["path"] if scope["path"] in self.paths else "other"
        if status == CLIENT_CLOSED:
            self.metrics.disconnects.labels(endpoint).inc()
            return
        code = str(status)
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        self.metrics.requests.labels(endpoint, method, code).inc()
        self.metrics.duration.labels(endpoint, code).observe(seconds)
        if status >= 400:
            self.metrics.errors.labels(code).inc()
