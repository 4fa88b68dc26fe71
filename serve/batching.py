"""Micro-batching: concurrent requests for one configuration share one inference call.

A :class:`MicroBatcher` lives on the event loop. ``submit(images)`` queues a request (its images
stay together, never split) and awaits its logits. A worker task takes the oldest request, then
keeps collecting until the queued images reach ``max_batch`` or ``delay_s`` seconds have passed,
runs the concatenated batch once in ``executor`` (off the event loop) and hands every request its
rows. ``delay_s = 0`` still batches whatever queued up while the previous batch ran. A request
larger than ``max_batch`` runs as a batch of its own.

The queue is bounded: when ``max_queue`` requests already wait, ``submit`` raises
:class:`QueueFull` at once (the server answers 503) instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from serve.runners import Runner


class QueueFull(RuntimeError):
    """The configuration's queue is full; retry later."""


@dataclass
class _Request:
    images: np.ndarray
    future: asyncio.Future


class MicroBatcher:
    """Batches requests for one runner; create and use it on one running event loop."""

    def __init__(self, runner: Runner, executor: Executor, *, max_batch: int, delay_s: float,
                 max_queue: int, on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch < 1 or max_queue < 1 or delay_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and delay_s >= 0")
        self.runner, self.executor = runner, executor
        self.max_batch, self.delay_s, self.max_queue = max_batch, delay_s, max_queue
        self.on_batch = on_batch  # called with (batch size, inference seconds) after each run
        self._pending: deque[_Request] = deque()
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._work())

    @property
    def queued(self) -> int:
        """Requests waiting (not yet running)."""
        return len(self._pending)

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """Logits for ``images`` ``(N, C, H, W)``; raises :class:`QueueFull` when saturated."""
        if len(self._pending) >= self.max_queue:
            raise QueueFull(f"{len(self._pending)} requests already queued")
        req = _Request(images, asyncio.get_running_loop().create_future())
        self._pending.append(req)
        self._wakeup.set()
        return await req.future

    async def close(self) -> None:
        """Stop the worker; requests still queued fail with :class:`QueueFull`."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        while self._pending:
            req = self._pending.popleft()
            if not req.future.done():
                req.future.set_exception(QueueFull("server shutting down"))

    def _queued_images(self) -> int:
        return sum(len(r.images) for r in self._pending)

    async def _wait(self, timeout: float | None) -> bool:
        """Wait for a new submission; False on timeout."""
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                await self._wait(None)
            deadline = loop.time() + self.delay_s
            while self._queued_images() < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await self._wait(remaining):
                    break
            batch = [self._pending.popleft()]
            size = len(batch[0].images)
            while self._pending and size + len(self._pending[0].images) <= self.max_batch:
                batch.append(self._pending.popleft())
                size += len(batch[-1].images)
            await self._run(loop, batch, size)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Request], size: int) -> None:
        x = batch[0].images if len(batch) == 1 else np.concatenate([r.images for r in batch])
        t0 = loop.time()
        try:
            logits = await loop.run_in_executor(self.executor, self.runner.predict, x)
        except Exception as e:  # a failed batch fails its requests, not the worker
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(e)
            return
        if self.on_batch is not None:
            self.on_batch(size, loop.time() - t0)
        start = 0
        for r in batch:
            n = len(r.images)
            if not r.future.done():  # the client may have gone away (cancelled)
                r.future.set_result(logits[start:start + n])
            start += n
