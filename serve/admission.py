"""Admission control for ``/predict``: at most ``limit`` requests in progress at once.

"In progress" = admitted and not yet answered (reading the body, decoding, queued, running).
The count is checked twice, both on the event loop: by the HTTP layer as soon as a request head
is parsed (:mod:`serve.http`: a full server answers 503 from a tiny ASGI app, with no FastAPI
work, no body read and no decoding), and by the route itself (the authoritative check, since
more requests may have been admitted in between). So rejecting costs far less than serving,
and the decode pool's and batchers' queues can never hold more than ``limit`` requests.

A refusal by the HTTP layer is answered after ``reject_delay_s`` (default: the ``Retry-After``
interval). A client that retries at once would otherwise keep the event loop busy with refusals,
and every admitted request would wait behind them (in a closed loop of N clients each request
waits for all N others, refused or not); parked in a sleeping coroutine it costs nothing. Set it
to 0 behind a load balancer that fails over to another replica on a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import Receive, Scope, Send

from serve.errors import RETRY_AFTER_S, error_body


class Admission:
    """The in-progress count of one app; ``on_reject(early)`` is called for every refusal
    (``early``: by the HTTP layer, which no other middleware sees)."""

    def __init__(self, limit: int, on_reject: Callable[[bool], None],
                 reject_delay_s: float = RETRY_AFTER_S) -> None:
        self.limit, self.inflight, self.on_reject = limit, 0, on_reject
        self.reject_delay_s = reject_delay_s
        self.detail = (f"overloaded: {limit} requests in progress (the limit is {limit}); "
                       f"retry later")
        body = error_body(503, self.detail)
        self._start = {"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode())]}
        self._body = {"type": "http.response.body", "body": body}

    @property
    def full(self) -> bool:
        return self.inflight >= self.limit

    def enter(self) -> bool:
        """Admit one request (True) or refuse it (False, counted)."""
        if self.inflight >= self.limit:
            self.on_reject(False)
            return False
        self.inflight += 1
        return True

    def leave(self) -> None:
        self.inflight -= 1

    async def reject_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app the HTTP layer runs instead of the real one when :attr:`full`."""
        self.on_reject(True)
        if self.reject_delay_s > 0:
            await asyncio.sleep(self.reject_delay_s)
        await send(self._start)
        await send(self._body)
