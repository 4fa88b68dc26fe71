"""Prometheus metrics of one app, in its own registry (never the process-global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Counters and histograms of the serving app; :meth:`render` gives the exposition text."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pareco_http_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "method", "status"], registry=r)
        self.errors = Counter("pareco_http_errors", "HTTP error responses (status >= 400)",
                              ["status"], registry=r)
        self.request_latency = Histogram(
            "pareco_predict_latency_seconds",
            "End-to-end /predict latency (decode, queue, inference) per configuration",
            ["config"], buckets=_LATENCY_BUCKETS, registry=r)
        self.inference_latency = Histogram(
            "pareco_inference_latency_seconds", "One batched inference call per configuration",
            ["config"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("pareco_batch_size", "Images per inference call",
                                    ["config"], buckets=_BATCH_BUCKETS, registry=r)
        self.images = Counter("pareco_images", "Images classified per configuration",
                              ["config"], registry=r)
        self.rejected = Counter("pareco_overload_rejections",
                                "Requests refused with 503 because the queue was full",
                                ["config"], registry=r)
        self.config_latency = Gauge("pareco_config_latency_ms",
                                    "Start-up measured batch-1 latency per configuration (ms)",
                                    ["config"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Pure ASGI middleware counting every HTTP response by endpoint, method and status.

    ``endpoint`` is the request path when it is one of ``paths`` and ``other`` otherwise, so
    arbitrary URLs cannot blow up label cardinality.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, paths: frozenset[str]) -> None:
        self.app, self.metrics, self.paths = app, metrics, paths
        self._children: dict[tuple[str, str, int], tuple] = {}  # label lookups, done once each

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = scope["path"] if scope["path"] in self.paths else "other"
            key = (endpoint, scope["method"], status)
            children = self._children.get(key)
            if children is None:
                if len(self._children) > 4096:  # odd methods or statuses: do not grow forever
                    self._children.clear()
                children = self._children[key] = (
                    self.metrics.requests.labels(endpoint, scope["method"], str(status)),
                    self.metrics.errors.labels(str(status)) if status >= 400 else None)
            children[0].inc()
            if children[1] is not None:
                children[1].inc()
