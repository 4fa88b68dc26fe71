"""Micro-batching: concurrent requests for one configuration share one inference call.

A :class:`MicroBatcher` serves one runner. ``await submit_from(executor, prepare)`` is the request
path: in ONE hop to a worker thread of ``executor`` it runs ``prepare()`` (decode + preprocess:
``(images, tag)``) and queues the images (a request's images stay together, never split); the
caller awaits ``(tag, outputs)``, the rows of the batch outputs that belong to its images.
``await submit(images)`` does the same for images already prepared on the event loop.

When a batch is dispatched:

- A lone request never waits: when nothing else for this configuration is queued, being prepared
  or running, the preparing thread runs the inference itself at once (no further thread hop).
- Otherwise the queued requests are run by a drain job on the dedicated inference ``executor``
  (one job per configuration at a time, so the executor needs a thread per configuration). It takes
  the oldest request and, only while other requests for this configuration are still being
  prepared (announced by ``submit_from`` but not queued yet), keeps collecting until the queued
  images reach ``max_batch`` or ``delay_s`` seconds have passed; whatever queued meanwhile is always
  merged (``delay_s = 0``: only that). A request larger than ``max_batch`` runs as a batch of its own.

``runner.predict(x)`` is looked up at every call; ``postprocess(outputs)`` (optional) runs once per
batch in the inference thread on its output (e.g. softmax + top-k for the whole batch, vectorized)
and may return an array or a tuple of arrays, all with the batch as first axis.

The queue is bounded: when ``max_queue`` requests already wait, a new one fails with
:class:`QueueFull` (the server answers 503) instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve.runners import Runner


class QueueFull(RuntimeError):
    """The configuration's queue is full; retry later."""


@dataclass(slots=True)
class _Request:
    images: np.ndarray
    future: asyncio.Future
    tag: Any = None
    queued_at: float = 0.0  # time.perf_counter() when it joined the queue


class MicroBatcher:
    """Batches requests for one runner; create it on the event loop that awaits its results."""

    def __init__(self, runner: Runner, executor: Executor, *, max_batch: int, delay_s: float,
                 max_queue: int, on_batch: Callable[[int, float, float], None] | None = None,
                 postprocess: Callable[[np.ndarray], Any] | None = None) -> None:
        if max_batch < 1 or max_queue < 1 or delay_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and delay_s >= 0")
        self.runner, self.executor = runner, executor
        self.max_batch, self.delay_s, self.max_queue = max_batch, delay_s, max_queue
        self.on_batch = on_batch  # (batch size, inference s, oldest request's queue wait s)
        self.postprocess = postprocess
        self._loop = asyncio.get_running_loop()
        self._cond = threading.Condition(threading.Lock())
        self._pending: deque[_Request] = deque()  # guarded by _cond, like the three below
        self._pending_images = 0
        self._incoming = 0  # announced by submit_from, still being prepared
        self._draining = False  # a batch is being collected or run (pending => draining)
        self._closed = False
        self._running: tuple[int, float] | None = None  # (images, perf_counter at start) of a batch

    def load(self) -> tuple[int, int, int, float]:
        """``(images queued, requests being prepared, images in the running batch, seconds it has
        run)`` now (0, 0.0 when no batch runs). Read without the lock: a snapshot for estimates
        (:mod:`serve.slo`), possibly one event stale."""
        running = self._running
        images, since = running if running is not None else (0, 0.0)
        return (self._pending_images, self._incoming, images,
                time.perf_counter() - since if running is not None else 0.0)

    @property
    def queued(self) -> int:
        """Requests waiting (not yet running)."""
        return len(self._pending)

    async def submit_from(self, executor: Executor, prepare: Callable[[], tuple[np.ndarray, Any]]
                          ) -> tuple[Any, Any]:
        """Run ``prepare() -> (images, tag)`` in ``executor`` and queue the images from there.

        Returns ``(tag, outputs)``; raises what ``prepare`` raised, or :class:`QueueFull`.
        """
        future = self._loop.create_future()
        with self._cond:
            if self._closed:
                raise QueueFull("server shutting down")
            self._incoming += 1
        try:
            executor.submit(self._prepare_and_queue, prepare, future)
        except BaseException:
            self._forget_incoming()
            raise
        return await future

    async def submit(self, images: np.ndarray) -> Any:
        """Outputs for ``images`` ``(N, C, H, W)`` prepared on the event loop; may raise
        :class:`QueueFull`. Inference never runs on the calling (event loop) thread."""
        future = self._loop.create_future()
        self._queue(_Request(images, future), announced=False, inline=False)
        return (await future)[1]

    async def close(self) -> None:
        """Refuse new work; requests still queued fail with :class:`QueueFull`."""
        with self._cond:
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
            self._pending_images = 0
            self._cond.notify_all()
        for req in dropped:
            if not req.future.done():
                req.future.set_exception(QueueFull("server shutting down"))

    # ---------------------------------------------------------------- worker-thread side
    def _forget_incoming(self) -> None:
        with self._cond:
            self._incoming -= 1
            self._cond.notify_all()

    def _prepare_and_queue(self, prepare: Callable[[], tuple[np.ndarray, Any]],
                           future: asyncio.Future) -> None:
        try:
            images, tag = prepare()
        except BaseException as e:
            self._forget_incoming()
            self._deliver_error(future, e)
            return
        try:
            self._queue(_Request(images, future, tag), announced=True, inline=True)
        except QueueFull as e:
            self._deliver_error(future, e)

    def _queue(self, req: _Request, *, announced: bool, inline: bool) -> None:
        """Queue ``req``; start a drain if none runs (in this thread when nothing else is coming
        and ``inline``, else on the executor). Raises :class:`QueueFull`."""
        with self._cond:
            if announced:
                self._incoming -= 1
            if self._closed:
                raise QueueFull("server shutting down")
            if len(self._pending) >= self.max_queue:
                self._cond.notify_all()  # one fewer incoming: a collecting drain may stop waiting
                raise QueueFull(f"{len(self._pending)} requests already queued")
            req.queued_at = time.perf_counter()
            self._pending.append(req)
            self._pending_images += len(req.images)
            if self._draining:
                self._cond.notify_all()
                return
            self._draining = True
            alone = self._incoming == 0 and len(self._pending) == 1
        if inline and alone:
            self._drain(once=True)
        else:
            self._start_drain()

    def _start_drain(self) -> None:
        try:
            self.executor.submit(self._drain)
        except RuntimeError:  # executor shut down: fail what is queued
            with self._cond:
                self._closed = True
                dropped = list(self._pending)
                self._pending.clear()
                self._draining = False
            for r in dropped:
                self._deliver_error(r.future, QueueFull("server shutting down"))

    def _collect(self) -> tuple[list[_Request], int]:
        """Take the next batch (lock held); waits only while requests are still being prepared."""
        deadline = None
        while not self._closed and self._pending and self._incoming > 0 \
                and self._pending_images < self.max_batch:
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.delay_s
            if now >= deadline:
                break
            self._cond.wait(deadline - now)
        if self._closed or not self._pending:
            return [], 0
        batch = [self._pending.popleft()]
        size = len(batch[0].images)
        while self._pending and size + len(self._pending[0].images) <= self.max_batch:
            batch.append(self._pending.popleft())
            size += len(batch[-1].images)
        self._pending_images -= size
        return batch, size

    def _drain(self, once: bool = False) -> None:
        """Run batches until nothing is queued (``once``: one batch, then hand over)."""
        while True:
            with self._cond:
                batch, size = self._collect()
                if not batch:
                    self._draining = False
                    return
            self._run(batch, size)
            with self._cond:
                if not self._pending or self._closed:
                    self._draining = False
                    return
            if once:  # more arrived meanwhile: the executor's drain takes over (still draining)
                self._start_drain()
                return

    def _run(self, batch: list[_Request], size: int) -> None:
        x = batch[0].images if len(batch) == 1 else np.concatenate([r.images for r in batch])
        t0 = time.perf_counter()
        waited = t0 - batch[0].queued_at
        self._running = (size, t0)
        try:
            out = self.runner.predict(x)
            seconds = time.perf_counter() - t0
            if self.postprocess is not None:
                out = self.postprocess(out)
        except Exception as e:  # a failed batch fails its requests, not the worker
            self._running = None
            for r in batch:
                self._deliver_error(r.future, e)
            return
        if self.on_batch is not None:  # still counted as running: observers see this batch
            self.on_batch(size, seconds, waited)
        self._running = None
        results, start = [], 0
        for r in batch:
            n = len(r.images)
            rows = (tuple(o[start:start + n] for o in out) if isinstance(out, tuple)
                    else out[start:start + n])
            results.append((r.future, (r.tag, rows)))
            start += n
        self._call_soon(_set_results, results)

    def _deliver_error(self, future: asyncio.Future, error: BaseException) -> None:
        self._call_soon(_set_results, [(future, error)])

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(fn, *args)


def _set_results(results: list[tuple[asyncio.Future, Any]]) -> None:
    """On the event loop: hand every request its result (or exception); skip cancelled ones."""
    for future, value in results:
        if future.done():  # the client went away (cancelled)
            continue
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)
