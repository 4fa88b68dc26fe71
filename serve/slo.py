"""SLO mode (``python -m serve --slo-ms P``): each request gets the most accurate configuration
whose predicted latency, including the current queue wait, keeps it within ``P`` milliseconds.

The one rule (:meth:`SloPolicy.choose`): among the request's candidates (the configurations within
its own ``mflops=``/``latency_ms=`` budget that are not dominated on batch-1 latency and accuracy,
:func:`serve.fronts.latency_front`), take the most accurate ``c`` with

    elapsed + lag + predicted(c) + min(margin, P / 2) <= P

``elapsed``: time the request already spent in the app (its body read); ``lag``: how late the
event loop runs now (:class:`LoopLag`), the wait of a request before it reached the app;
``predicted(c)``: time from now to its answer if queued on ``c`` (:meth:`SloPolicy.predict_s`);
``margin``: the 99.5th percentile of the prediction's recent errors on accepted requests
(decoding, the event loop, other processes: what the prediction does not see). If no candidate
fits, the request is shed (503 + Retry-After); when no configuration at all could answer one
image in time even without the margin (:meth:`SloPolicy.hopeless`), the HTTP layer sheds it
before it is read. Under load the queues of the large configurations grow first, so the server
degrades width before it sheds, and sheds only when even the fastest candidate cannot meet P.

What the prediction cannot see grows with the requests in progress (HTTP parsing, decoding, the
one event loop), so it is bounded by an in-flight limit learned from the answered requests' p99
(:mod:`serve.slo_limit`, :attr:`SloPolicy.limit`); the margin then only corrects the
prediction's own bias (e.g. requests joining a batch), and it is capped at P / 2 and kept out of
:meth:`SloPolicy.hopeless`. Uncapped and in both, it made the server oscillate: a burst of late
answers raised it above P, every request was refused until the errors expired, then a burst was
admitted again (32 closed-loop clients got 20 answers/s, 321 with the cap; ``bench/reports/serving.md``).

``predicted(c)`` for ``n`` images, from the micro-batcher's state (:class:`QueueState`; batches of
at most ``max_batch``, :mod:`serve.batching`): the rest of the running batch, then the queued
images, one image per request still being prepared, and the ``n`` new ones in batches of at most
``max_batch``; the batch holding the new images also takes the requests that arrive until it
starts (:class:`ArrivalRate`, images/s routed to ``c``); plus the batch delay while requests are
being prepared. Configurations share the CPU cores: every inference time is multiplied by the
stretch ``max(1, configs running a batch x threads / cores)``. Batch times come from
:class:`ServiceTimes`, measured online. All times are seconds unless a name ends in ``_ms``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from serve.fronts import latency_front
from serve.model import ServedConfig
from serve.slo_limit import InflightLimit

log = logging.getLogger("serve")

def within_budget(configs: Sequence[ServedConfig], latency_ms: Mapping[str, float],
                  mflops: float | None, max_latency_ms: float | None) -> list[ServedConfig]:
    """The configs that fit the request's budget, the rule of :func:`serve.selection.select`."""
    if mflops is not None:
        return [c for c in configs if c.mflops <= mflops]
    if max_latency_ms is not None:
        return [c for c in configs if latency_ms[c.id] <= max_latency_ms]
    return list(configs)


def estimate_images(body: bytes, boundary: bytes | None, max_files: int) -> int:
    """Images in a request body before it is parsed: 1 for a raw image, else the multipart parts
    (delimiters minus the closing one; an upper bound), between 1 and ``max_files``."""
    if boundary is None:
        return 1
    return max(1, min(max_files, body.count(b"--" + boundary) - 1))


@dataclass(frozen=True)
class QueueState:
    """One configuration's micro-batcher now: images queued, requests being prepared (decoded),
    images in the running batch (0: none) and how long that batch has run (s)."""

    queued_images: int = 0
    preparing: int = 0
    running_images: int = 0
    running_for_s: float = 0.0

    @property
    def busy(self) -> bool:
        return bool(self.queued_images or self.preparing or self.running_images)


def cpu_stretch(configs_at_once: int, threads: int, cores: int) -> float:
    """How much slower each inference runs when ``configs_at_once`` configurations run at the same
    time with ``threads`` intra-op threads each on ``cores`` cores (>= 1)."""
    return max(1.0, configs_at_once * threads / cores)


class ServiceTimes:
    """Per configuration, the time (s) of one inference batch by its size, on uncontended cores.

    Batch sizes fall in buckets ``[2^k, 2^(k+1))``; each bucket keeps an exponentially weighted
    mean (weight ``weight`` for a new batch) of the batch time divided by the CPU stretch during
    that batch, and of its size. Bucket 0 is seeded with the start-up batch-1 latency table, so
    every configuration has a prediction before its first batch. A size is predicted from the
    nearest measured bucket (the smaller one on a tie), scaled per image. Thread-safe:
    :meth:`observe` runs in the inference threads.
    """

    def __init__(self, latency_ms: Mapping[str, float], max_batch: int,
                 weight: float = 0.2) -> None:
        if not 0 < weight <= 1:
            raise ValueError(f"weight must be in (0, 1], got {weight}")
        self.weight, self.buckets = weight, max(1, max_batch.bit_length())
        self._lock = threading.Lock()
        # config id -> per bucket [mean seconds, mean images] or None (never measured)
        self._means: dict[str, list[list[float] | None]] = {}
        for cid, ms in latency_ms.items():
            self._means[cid] = [[ms / 1e3, 1.0]] + [None] * (self.buckets - 1)

    @property
    def ids(self) -> tuple[str, ...]:
        """The configuration ids of the model."""
        return tuple(self._means)

    def _bucket(self, images: int) -> int:
        return min(images.bit_length() - 1, self.buckets - 1)

    def observe(self, config_id: str, images: int, seconds: float, stretch: float = 1.0) -> None:
        """Record one batch of ``images`` that took ``seconds`` under CPU ``stretch``."""
        if images < 1 or not seconds >= 0:
            return
        k, solo, w = self._bucket(images), seconds / stretch, self.weight
        with self._lock:
            means = self._means[config_id]
            if means[k] is None:
                means[k] = [solo, float(images)]
            else:
                m = means[k]
                m[0] += w * (solo - m[0])
                m[1] += w * (images - m[1])

    def batch_s(self, config_id: str, images: int) -> float:
        """Predicted seconds of one batch of ``images`` (0 for none) on uncontended cores."""
        if images <= 0:
            return 0.0
        k = self._bucket(images)
        with self._lock:
            means = self._means[config_id]
            for d in range(self.buckets):
                for j in (k - d, k + d):
                    if 0 <= j < self.buckets and means[j] is not None:
                        seconds, size = means[j]
                        return seconds / size * images
        raise AssertionError("bucket 0 is always measured")  # pragma: no cover


class LoopLag:
    """How late the event loop runs a timer now (s): what a request that has arrived waits
    before it reaches the app. :meth:`start` (on the loop) runs a task that sleeps
    ``interval_s`` again and again; :meth:`lag_s` is the largest overshoot of the last ``keep``
    wake-ups (about ``keep x interval_s`` seconds)."""

    def __init__(self, interval_s: float = 0.005, keep: int = 20) -> None:
        self.interval_s = interval_s
        self._recent: deque[float] = deque(maxlen=keep)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start measuring on the running event loop (the task ends with the loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pareco-loop-lag")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.interval_s)
            self._recent.append(max(0.0, loop.time() - t - self.interval_s))

    def lag_s(self) -> float:
        return max(self._recent, default=0.0)


class ArrivalRate:
    """Images per second routed to each configuration, an exponentially decaying count with
    time constant ``tau_s`` (the rate of the last ~``tau_s`` seconds)."""

    def __init__(self, tau_s: float = 0.5) -> None:
        self.tau_s = tau_s
        self._rate: dict[str, tuple[float, float]] = {}  # id -> (rate at time, time)

    def rate(self, config_id: str, now: float) -> float:
        rate, at = self._rate.get(config_id, (0.0, now))
        return rate * math.exp(-(now - at) / self.tau_s)

    def add(self, config_id: str, now: float, images: int) -> None:
        self._rate[config_id] = (self.rate(config_id, now) + images / self.tau_s, now)


@dataclass(frozen=True)
class Choice:
    """The decision for one request: ``config`` (``None``: shed); ``nearest``: the config the
    figures are for (``config``, or when shed the candidate predicted to answer soonest);
    ``total_s``: elapsed + lag + predicted + capped margin; ``predicted_s``: the prediction
    alone; the clock readings of the request's start and of the decision."""

    config: ServedConfig | None
    nearest: ServedConfig
    total_s: float
    predicted_s: float
    started_at: float
    decided_at: float


class SloPolicy:
    """The SLO rule of one server (see the module docstring); use on the event loop, except
    :meth:`observe_batch` (inference threads).

    ``slo_ms``: the objective P (ms); ``times``: the batch-time model; ``queues(config id)``: that
    configuration's :class:`QueueState` now; ``max_batch``/``delay_s``: the micro-batchers'
    settings; ``threads``: intra-op threads per inference; ``cores``: CPU cores of this process;
    ``clock``: seconds (monotonic), the clock of ``started_at``; ``lag()``: the event loop's lag
    (s, :class:`LoopLag`); ``limit``: the in-flight limit fed with every answered request's
    latency (in the app, plus the lag). The margin is the ``quantile`` of
    the prediction errors of the accepted requests of the last ``window_s`` seconds (at most
    ``window_max``); with fewer than ``min_samples`` of them, the last such quantile decaying
    to 0 with time constant ``window_s`` (0 before the first).
    """

    def __init__(self, slo_ms: float, times: ServiceTimes, queues: Callable[[str], QueueState], *,
                 max_batch: int, delay_s: float, threads: int, cores: int,
                 clock: Callable[[], float] = time.perf_counter, window_s: float = 2.0,
                 window_max: int = 2000, quantile: float = 0.995, min_samples: int = 20,
                 lag: Callable[[], float] = lambda: 0.0,
                 limit: InflightLimit | None = None) -> None:
        if not slo_ms > 0:
            raise ValueError(f"slo_ms must be > 0 (milliseconds), got {slo_ms}")
        self.slo_s, self.times, self.queues = slo_ms / 1e3, times, queues
        self.max_batch, self.delay_s, self.threads, self.cores = max_batch, delay_s, threads, cores
        self.clock, self.window_s, self.quantile = clock, window_s, quantile
        self.min_samples, self.lag, self.limit = min_samples, lag, limit
        self._errors: deque[tuple[float, float]] = deque(maxlen=window_max)  # (when, error s)
        self._margin_s, self._margin_at, self._stale, self._added = 0.0, 0.0, False, 0
        self.arrivals = ArrivalRate()
        self._candidates: dict[tuple, tuple[ServedConfig, ...]] = {}
        self._table: Mapping[str, float] | None = None
        self._front: Sequence[ServedConfig] | None = None
        self._fastest: list[str] | None = None  # config ids by batch-1 latency (hopeless())

    @property
    def slo_ms(self) -> float:
        return self.slo_s * 1e3

    def candidates(self, front: Sequence[ServedConfig], latency_ms: Mapping[str, float],
                   mflops: float | None, max_latency_ms: float | None) -> tuple[ServedConfig, ...]:
        """:func:`latency_front` of the configs within the budget, most accurate first (cached
        per budget while ``front`` and the latency table are the same objects)."""
        if latency_ms is not self._table or front is not self._front:
            self._candidates, self._table, self._front = {}, latency_ms, front
        key = (mflops, max_latency_ms)
        if key not in self._candidates:
            fits = within_budget(front, latency_ms, mflops, max_latency_ms)
            self._candidates[key] = latency_front(fits, latency_ms)[::-1]
        return self._candidates[key]

    def predict_s(self, config_id: str, images: int, states: Mapping[str, QueueState],
                  joining_per_s: float = 0.0) -> float:
        """Seconds from now until ``images`` queued on ``config_id`` now are answered (see the
        module docstring); ``states``: every configuration's :class:`QueueState`;
        ``joining_per_s``: images/s arriving for ``config_id`` (they join a batch not started)."""
        s = states[config_id]
        busy = sum(bool(q.running_images) for q in states.values()) + (not s.running_images)
        stretch = cpu_stretch(busy, self.threads, self.cores)
        rest = max(0.0, self.times.batch_s(config_id, s.running_images) * stretch - s.running_for_s)
        full, last = divmod(s.queued_images + s.preparing + images, self.max_batch)
        ahead = rest + full * self.times.batch_s(config_id, self.max_batch) * stretch
        if last and s.busy:  # its batch starts later, with whatever arrives until then
            last = min(self.max_batch, last + round(joining_per_s * ahead))
        own = self.times.batch_s(config_id, last) * stretch
        return ahead + own + (self.delay_s if s.preparing else 0.0)

    def choose(self, candidates: Sequence[ServedConfig], images: int, started_at: float) -> Choice:
        """The most accurate of ``candidates`` (most accurate first) whose ``elapsed + lag +
        predicted + min(margin, P / 2)`` is within the SLO, else a shed (``config=None``);
        ``started_at``: the request's arrival in the app on :attr:`clock`."""
        now = self.clock()
        states = {cid: self.queues(cid) for cid in self.times.ids}
        base = (now - started_at) + self.lag() + min(0.5 * self.slo_s, self.margin_s(now))
        soonest: tuple[float, ServedConfig] | None = None
        for c in candidates:
            predicted = self.predict_s(c.id, images, states, self.arrivals.rate(c.id, now))
            if base + predicted <= self.slo_s:
                self.arrivals.add(c.id, now, images)
                return Choice(c, c, base + predicted, predicted, started_at, now)
            if soonest is None or predicted < soonest[0]:
                soonest = (predicted, c)
        if soonest is None:
            raise ValueError("no candidates")
        return Choice(None, soonest[1], base + soonest[0], soonest[0], started_at, now)

    def hopeless(self) -> bool:
        """Whether no configuration at all could answer one image within the SLO now (``lag +
        predicted > P`` for each, the margin left out): then :meth:`choose` would shed any
        request, so the HTTP layer refuses it before it is read
        (:meth:`serve.admission.Admission.early_refusal`).
        Configurations are tried fastest first (batch-1 latency) and the test stops at the
        first that fits."""
        now = self.clock()
        base = self.lag()
        if base >= self.slo_s:
            return True
        if self._fastest is None:
            self._fastest = sorted(self.times.ids, key=lambda cid: self.times.batch_s(cid, 1))
        states = {cid: self.queues(cid) for cid in self.times.ids}
        return all(base + self.predict_s(cid, 1, states, self.arrivals.rate(cid, now)) > self.slo_s
                   for cid in self._fastest)

    def finished(self, choice: Choice) -> None:
        """An accepted request was answered: record the prediction's error; feed its latency
        (in the app, plus the lag) to the in-flight limit."""
        now = self.clock()
        self._errors.append((now, (now - choice.decided_at) - choice.predicted_s))
        if self.limit is not None:
            self.limit.observe(now - choice.started_at + self.lag())
        self._added += 1  # the quantile is recomputed every 8 errors (every one at first)
        self._stale = self._stale or self._added % 8 == 0 or self._added <= 64

    def margin_s(self, now: float | None = None) -> float:
        """The ``quantile`` of the recent prediction errors (s; may be negative: a cautious
        prediction); with too few recent ones, the last quantile decaying to 0 (see the class)."""
        now = self.clock() if now is None else now
        errors = self._errors
        while errors and errors[0][0] < now - self.window_s:
            errors.popleft()
        if len(errors) < self.min_samples:
            return self._margin_s * math.exp(-(now - self._margin_at) / self.window_s)
        if self._stale:
            self._stale = False
            self._margin_s = float(np.quantile([e for _, e in errors], self.quantile))
            self._margin_at = now
        return self._margin_s

    def batch_observer(self, config_id: str) -> Callable[[int, float], None]:
        """``observe(images, seconds)`` of every inference batch of ``config_id``."""
        def observe(images: int, seconds: float) -> None:
            self.observe_batch(config_id, images, seconds)
        return observe

    def observe_batch(self, config_id: str, images: int, seconds: float) -> None:
        """Feed one finished batch to the model, normalized by the CPU stretch of the batches
        running at that moment (this one included)."""
        running = sum(1 for cid in self.times.ids if self.queues(cid).running_images)
        self.times.observe(config_id, images, seconds,
                           cpu_stretch(max(1, running), self.threads, self.cores))

    def shed_detail(self, choice: Choice) -> str:
        """The 503 message of a shed request."""
        return (f"overloaded: no configuration within the budget is predicted to answer within "
                f"the {self.slo_ms:g} ms latency objective (--slo-ms); the soonest, "
                f"{choice.nearest.id}, in {choice.total_s * 1e3:.1f} ms; retry later")


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def slo_policy(slo_ms: float | None, latency_ms: Mapping[str, float],
               batchers: Mapping[str, object], *, max_batch: int, delay_s: float,
               threads: int, max_inflight: int) -> SloPolicy | None:
    """The policy of a server (``None`` without an SLO), reading the queue state of ``batchers``
    (:class:`serve.batching.MicroBatcher` by config id, possibly filled in after this call),
    with an in-flight limit of at most (and at first) ``max_inflight``.
    Call on the serving event loop: it starts the :class:`LoopLag` monitor there."""
    if slo_ms is None:
        return None
    log.info("SLO mode: each request gets the most accurate configuration predicted to answer "
             "within %g ms (queue wait included), else 503", slo_ms)

    def queues(config_id: str) -> QueueState:
        return QueueState(*batchers[config_id].load())  # type: ignore[attr-defined]

    lag = LoopLag()
    lag.start()
    cores = available_cores()
    limit = InflightLimit(slo_ms / 1e3, max_inflight)
    return SloPolicy(slo_ms, ServiceTimes(latency_ms, max_batch), queues, max_batch=max_batch,
                     delay_s=delay_s, threads=threads, cores=cores, lag=lag.lag_s, limit=limit)
