"""The serving state of one app: model, runners, batchers, admission, metrics, readiness.

:func:`open_model` runs in ``create_app`` (before any port is bound, so an invalid weight file
refuses to start): it hashes the weight file and, for ONNX Runtime, looks the hash up in the ONNX
cache. A hit gives the validated metadata without torch; a miss loads and validates the weight
file with :func:`pareco.weightfile.load_zoo_model` (torch). :meth:`Server.start` does the slow part
in the background: runners for every calibrated configuration (from the verified cache entry, or
exported through torch, verified and then stored), a robust batch-1 latency table of all of them,
this host's latency front (:mod:`serve.fronts`); it keeps the runners of the weight file's front
and of the latency front, starts their micro-batchers, and becomes ready.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serve import onnxcache
from serve.admission import Admission
from serve.batching import MicroBatcher
from serve.errors import ApiError, unavailable
from serve.fronts import latency_front, served_configs
from serve.metrics import Metrics
from serve.model import ServedConfig, ServedModel
from serve.postprocess import ranked_softmax
from serve.query import QuerySpec
from serve.runners import OrtRunner, Runner, export_verified, measure_latencies_ms, torch_runners
from serve.settings import Settings
from serve.slo import SloPolicy, slo_policy

log = logging.getLogger("serve")


@dataclass
class Source:
    """Where the runners come from: a verified cache ``entry`` and/or the loaded ``zoo``."""

    weights: Path
    sha256: str
    entry: onnxcache.Entry | None = None
    zoo: Any = None  # pareco.weightfile.ZooModel once loaded (torch)

    def load_zoo(self) -> Any:
        if self.zoo is None:
            from pareco.weightfile import load_zoo_model

            self.zoo = load_zoo_model(self.weights)
        return self.zoo


def open_model(weights: Path, settings: Settings) -> tuple[ServedModel, Source]:
    """The validated model (cache hit: no torch) and where its runners will come from.
    Raises :class:`pareco.weightfile.WeightFileError` (or ``FileNotFoundError`` wrapped in it)."""
    if not weights.is_file():
        from pareco.weightfile import WeightFileError

        raise WeightFileError(f"{weights}: no such weight file")
    source = Source(weights, onnxcache.file_sha256(weights))
    if settings.backend == "onnxruntime" and settings.cache_dir is not None:
        source.entry = onnxcache.lookup(settings.cache_dir, source.sha256)
    if source.entry is not None:
        return ServedModel.from_metadata(source.entry.metadata), source
    try:
        zoo = source.load_zoo()
    except ImportError as e:
        raise RuntimeError(
            f"{weights}: no verified ONNX for this weight file (sha256 {source.sha256[:12]}...) in "
            f"the cache {settings.cache_dir}, and building it needs torch ({e}); run `python -m "
            f"serve --weights {weights} --prepare` where torch is installed, with the same "
            f"--cache-dir / $PARECO_CACHE") from None
    return ServedModel.from_metadata(zoo.meta), source


class Server:
    """Created in ``create_app``; ``start``/``stop`` run in the app's lifespan."""

    def __init__(self, model: ServedModel, source: Source, settings: Settings) -> None:
        self.model, self.source, self.settings = model, source, settings
        self.front: tuple[ServedConfig, ...] = model.front  # served configs, by MACs (see start)
        self.latency_front: tuple[ServedConfig, ...] = ()  # of this host, by latency ascending
        self.metrics = Metrics(settings.slo_ms)
        self.query = QuerySpec(self.front[0].mflops, self.front[0].id, len(model.classes))
        self.latency_ms: dict[str, float] = {}  # batch-1 ms of every served config
        self.profiled_ms: dict[str, float] = {}  # of every calibrated config, at start-up
        self.latency_measured_at: float | None = None  # unix seconds
        self.batchers: dict[str, MicroBatcher] = {}
        self.runners: dict[str, Runner] = {}
        self.slo: SloPolicy | None = None  # --slo-ms: created with the batchers (serve.slo)
        self._profiling = False
        self.chosen: dict[str, dict[str, Any]] = {}  # the "config" part of every answer, per id
        self.executor: ThreadPoolExecutor | None = None  # inference batches (a thread per config)
        self.decode_executor: ThreadPoolExecutor | None = None  # parse + decode (+ lone inference)
        self.ready = False
        self.failure: str | None = None
        self.admission = Admission(settings.max_inflight, self._count_rejection,
                                   settings.reject_delay_ms / 1e3)
        self.metrics.inflight.set_function(lambda: self.admission.inflight)
        self.metrics.info.info({"arch": model.arch, "backend": settings.backend,
                                "configs": str(len(self.front)), "weights_sha256": source.sha256})

    def _count_rejection(self, reason: str, early: bool) -> None:
        self.metrics.rejected.labels(reason).inc()
        if early:  # answered by the HTTP layer: the request metrics middleware never saw it
            self.metrics.requests.labels("/predict", "POST", "503").inc()
            self.metrics.errors.labels("503").inc()

    async def start(self) -> None:
        """Runners, latency table, fronts, batchers (off the event loop); then ready."""
        loop = asyncio.get_running_loop()
        try:
            t0 = time.perf_counter()
            runners = await loop.run_in_executor(None, self._runners)
            lat = await loop.run_in_executor(None, measure_latencies_ms, runners,
                                             self.model.preprocessing.shape)
            self.profiled_ms = lat
            self.front = served_configs(self.model.front,
                                        latency_front(self.model.configs, lat))
            self.runners = {c.id: runners[c.id] for c in self.front}  # the others are dropped
            self._set_latencies({c.id: lat[c.id] for c in self.front})
            self._start_batchers(self.runners)
            self.ready = True
            self.metrics.ready.set(1)
            log.info("ready: %d of %d calibrated configurations served (the front and this "
                     "host's latency front) in %.1f s", len(self.front), len(self.model.configs),
                     time.perf_counter() - t0)
        except Exception as e:
            self.failure = f"start-up failed: {type(e).__name__}: {e}"
            log.exception("start-up failed")

    def _runners(self) -> dict[str, Runner]:
        """In a worker thread: one runner per calibrated config, from the cache when it
        verifies and holds every one of them."""
        threads = self.settings.threads
        if self.settings.backend == "torch":
            return torch_runners(self.source.load_zoo(), threads)
        built: dict[str, Runner] = {}

        def run(cid: str, data: bytes, x: np.ndarray) -> np.ndarray:
            built[cid] = OrtRunner(data, threads)
            return built[cid].predict(x)

        if self.source.entry is not None:
            try:
                self.source.entry.load_verified(run)
                if set(built) != {c.id for c in self.model.configs}:
                    raise onnxcache.CacheError("the entry does not hold every calibrated config")
                log.info("ONNX graphs from the cache %s (verified)", self.source.entry.folder)
                return built
            except onnxcache.CacheError as e:
                log.warning("ONNX cache entry rejected, rebuilding: %s", e)
                built.clear()
        zoo = self.source.load_zoo()
        probe = onnxcache.probe_input(self.model.preprocessing.shape)
        onnx, reference = export_verified(zoo, probe, onnxcache.TOLERANCE)
        if self.settings.cache_dir is not None:
            try:
                where = onnxcache.store(self.settings.cache_dir, self.source.sha256, zoo.meta,
                                        onnx, reference, self.model.preprocessing.shape)
                log.info("ONNX graphs exported, verified and cached in %s", where)
            except OSError as e:
                log.warning("could not write the ONNX cache (%s); the next start exports again", e)
        return {cid: OrtRunner(data, threads) for cid, data in onnx.items()}

    async def reprofile(self) -> None:
        """Measure the latency table of the served configs again, now (``POST
        /configs/profile``), and their latency front (the set of served configs is fixed at
        start-up). Refused with 409 while /predict requests are in progress or another
        measurement runs, so the figures are taken on an idle server and serving is not slowed
        by them."""
        self.require_ready()
        if self._profiling or self.admission.inflight:
            raise ApiError(409, f"not idle ({self.admission.inflight} requests in progress"
                                f"{', a measurement running' if self._profiling else ''}); "
                                f"retry when idle")
        self._profiling = True
        try:
            lat = await asyncio.get_running_loop().run_in_executor(
                None, measure_latencies_ms, self.runners, self.model.preprocessing.shape)
            self._set_latencies(lat)
        finally:
            self._profiling = False

    def _set_latencies(self, lat: dict[str, float]) -> None:
        """Install a new latency table of the served configs and their latency front (one
        assignment each: readers see the old or the new one)."""
        self.latency_front = latency_front(self.front, lat)
        self.latency_ms = lat
        self.latency_measured_at = time.time()
        self.query.min_latency_ms = min(lat.values())
        self.chosen = {c.id: {"id": c.id, "mflops": c.mflops,
                              "expected_accuracy": c.expected_accuracy, "latency_ms": lat[c.id]}
                       for c in self.front}
        for c in self.front:
            self.metrics.config_latency.labels(c.id).set(lat[c.id] / 1e3)
            log.info("config %s: %.3f MFLOPs, %.3f ms at batch 1 (%s)", c.id, c.mflops,
                     lat[c.id], self.settings.backend)

    def _start_batchers(self, runners: dict[str, Runner]) -> None:
        s = self.settings
        self.slo = slo_policy(s.slo_ms, self.latency_ms, self.batchers, max_batch=s.max_batch,
                              delay_s=s.batch_delay_ms / 1e3, threads=s.threads,
                              max_inflight=s.max_inflight)
        if self.slo is not None:
            limit = self.slo.limit
            assert limit is not None  # slo_policy always sets one
            self.metrics.watch_slo(self.slo.slo_ms, self.slo.margin_s, self.slo.lag,
                                   lambda: limit.limit)
            self.admission.watch_slo(self.slo.hopeless, self.slo.slo_ms, limit)
        self.executor = ThreadPoolExecutor(len(self.front), thread_name_prefix="pareco-infer")
        self.decode_executor = ThreadPoolExecutor(max(2, os.cpu_count() or 1),
                                                  thread_name_prefix="pareco-decode")
        for c in self.front:
            self.batchers[c.id] = MicroBatcher(
                runners[c.id], self.executor, max_batch=s.max_batch, delay_s=s.batch_delay_ms / 1e3,
                max_queue=s.max_inflight, on_batch=self.metrics.batch_observer(
                    c.id, None if self.slo is None else self.slo.batch_observer(c.id)),
                postprocess=ranked_softmax)
            self.metrics.queue_depth.labels(c.id).set_function(
                lambda b=self.batchers[c.id]: b.queued)

    async def stop(self) -> None:
        for b in self.batchers.values():
            await b.close()
        for ex in (self.decode_executor, self.executor):
            if ex is not None:
                await asyncio.get_running_loop().run_in_executor(None, ex.shutdown, True)

    def require_ready(self) -> None:
        """Raise a 503 (with ``Retry-After``) until :meth:`start` finished."""
        if not self.ready:
            raise unavailable(self.failure or "the server is still loading models")
