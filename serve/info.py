"""``GET /configs``, ``POST /configs/profile``, ``/healthz``, ``/readyz`` (also ``HEAD``),
``/metrics``.

The probes do no work beyond a flag read: they never wait on admission, a queue or a worker
thread, so overload of ``/predict`` (shed by admission before it costs much) cannot starve them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

from serve.fronts import dominated_by
from serve.hostprofile import host_info, runtime_info
from serve.metrics import Metrics
from serve.model import ServedConfig
from serve.schemas import ConfigInfo, ConfigsResponse, Error, Status
from serve.selection import select
from serve.server import Server


def add_info_routes(app: FastAPI, server: Server, responses_503: dict[int | str, Any]) -> None:
    """Register the model-information, probe and metrics endpoints on ``app``."""

    @app.get("/configs", response_model=ConfigsResponse, responses=responses_503,
             summary="The fronts: every served configuration with its cost, accuracy and "
                     "measured latency")
    async def configs() -> ConfigsResponse:
        server.require_ready()
        return configs_response(server)

    @app.post("/configs/profile", response_model=ConfigsResponse,
              responses=responses_503 | {409: {"model": Error, "description": "Not idle"}},
              summary="Measure the batch-1 latency table again (only when idle)")
    async def profile() -> ConfigsResponse:
        await server.reprofile()
        return configs_response(server)

    @app.get("/healthz", response_model=Status, summary="Liveness: 200 while the process is up")
    @app.head("/healthz", include_in_schema=False)
    async def healthz() -> Status:
        return Status(status="ok")

    @app.get("/readyz", response_model=Status, responses=responses_503,
             summary="Readiness: 200 once every configuration is loaded, warmed up and timed")
    @app.head("/readyz", include_in_schema=False)
    async def readyz() -> Status:
        server.require_ready()
        return Status(status="ready")

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=Metrics.content_type)


def configs_response(server: Server) -> ConfigsResponse:
    """The served configs with the current latency table and this host's latency front."""
    lat, front = server.latency_ms, server.front
    fast = {c.id for c in server.latency_front}

    def info(c: ServedConfig) -> ConfigInfo:
        better = dominated_by(c, front, lat)
        return ConfigInfo(id=c.id, alpha=list(c.alpha), channels=list(c.channels),
                          mflops=c.mflops, params=c.params, val_acc=c.val_acc,
                          test_acc=c.test_acc, latency_ms=lat[c.id], on_mflops_front=c.on_front,
                          on_latency_front=c.id in fast,
                          latency_dominated_by=None if better is None else better.id)

    return ConfigsResponse(
        arch=server.model.arch, backend=server.settings.backend,
        classes=list(server.model.classes), default=select(front, lat).id,
        latency_measured_at=server.latency_measured_at, configs=[info(c) for c in front],
        latency_front=[c.id for c in server.latency_front], calibrated=len(server.model.configs),
        host=host_info(), runtime=runtime_info(server.settings.backend, server.settings.threads))
