"""Admission control for ``/predict``: at most ``limit`` requests in progress at once.

"In progress" = admitted and not yet answered (reading the body, decoding, queued, running).
The count is checked twice, both on the event loop: by the HTTP layer as soon as a request head
is parsed (:mod:`serve.http`: a full server answers 503 from a tiny ASGI app, with no FastAPI
work, no body read and no decoding), and by the route itself (the authoritative check, since
more requests may have been admitted in between). So rejecting costs far less than serving,
and the decode pool's and batchers' queues can never hold more than ``limit`` requests.

In SLO mode (``--slo-ms``) two more refusals, both counted as ``slo``: the learned in-flight
limit (:class:`serve.slo_limit.InflightLimit`, at most ``limit``) is reached, or, in the HTTP layer,
``hopeless()`` (:meth:`serve.slo.SloPolicy.hopeless`: even the fastest configuration cannot answer
one image in time now). Such a refusal costs no FastAPI work either; the route still makes the
exact decision for the requests that get through.

A refusal is answered after a hold drawn uniformly from ``[0.5, 1.5] x reject_delay_s``
(default: the ``Retry-After`` interval, so 0.5-1.5 s). A client that retries at once would
otherwise keep the event loop busy with refusals, and every admitted request would wait behind
them (in a closed loop of N clients each request waits for all N others, refused or not); parked
in a sleeping coroutine it costs nothing. The spread keeps refused clients from coming back all at
once: a fixed hold turns one burst of refusals into another burst a second later. Set it to 0
behind a load balancer that fails over to another replica on a 503.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from serve.errors import RETRY_AFTER_S, error_body
from serve.slo_limit import InflightLimit

_HOLD_RNG = random.Random()


def hold_s(reject_delay_s: float, rng: random.Random = _HOLD_RNG) -> float:
    """How long to hold one refusal: uniform in ``[0.5, 1.5] x reject_delay_s`` (s)."""
    return reject_delay_s * rng.uniform(0.5, 1.5)


class Admission:
    """The in-progress count of one app; ``on_reject(reason, early)`` is called for every
    refusal (``reason``: ``inflight`` or ``slo``; ``early``: by the HTTP layer, which no other
    middleware sees). In SLO mode :meth:`watch_slo` gives it the policy's ``hopeless()`` and
    in-flight limit."""

    def __init__(self, limit: int, on_reject: Callable[[str, bool], None],
                 reject_delay_s: float = RETRY_AFTER_S) -> None:
        self.limit, self.inflight, self.on_reject = limit, 0, on_reject
        self.reject_delay_s = reject_delay_s
        self._full_detail = (f"overloaded: {limit} requests in progress (the limit is {limit}); "
                             f"retry later")
        self._full_app = self._refusal("inflight", self._full_detail)
        self._hopeless: Callable[[], bool] | None = None
        self._slo: InflightLimit | None = None
        self._slo_detail = ""
        self._slo_app: ASGIApp | None = None
        self._hopeless_app: ASGIApp | None = None

    def watch_slo(self, hopeless: Callable[[], bool], slo_ms: float,
                  limit: InflightLimit | None = None) -> None:
        """SLO mode (objective ``slo_ms``): refuse ``/predict`` when ``limit`` is reached, and in
        the HTTP layer whenever ``hopeless()``."""
        self._hopeless, self._slo = hopeless, limit
        self._slo_detail = (f"overloaded: as many requests in progress as can be answered "
                            f"within the {slo_ms:g} ms latency objective (--slo-ms); retry later")
        self._slo_app = self._refusal("slo", self._slo_detail)
        self._hopeless_app = self._refusal("slo", (
            f"overloaded: no configuration can answer within the {slo_ms:g} ms latency "
            f"objective (--slo-ms) now; retry later"))

    @property
    def full(self) -> bool:
        return self.inflight >= self.limit

    @property
    def detail(self) -> str:
        """The 503 message of the refusal :meth:`enter` just made."""
        return self._full_detail if self.full else self._slo_detail

    def _slo_full(self) -> bool:
        return self._slo is not None and not self._slo.admits(self.inflight)

    def enter(self) -> bool:
        """Admit one request (True) or refuse it (False, counted; :attr:`detail` says why)."""
        if self.full or self._slo_full():
            self.on_reject("inflight" if self.full else "slo", False)
            return False
        self.inflight += 1
        return True

    def leave(self) -> None:
        self.inflight -= 1

    def early_refusal(self) -> ASGIApp | None:
        """For the HTTP layer, right after a ``/predict`` head: the ASGI app that refuses it
        (when full, or in SLO mode at the learned limit or when hopeless), or ``None`` to run the
        real app."""
        if self.full:
            return self._full_app
        if self._slo_full():
            return self._slo_app
        if self._hopeless is not None and self._hopeless():
            return self._hopeless_app
        return None

    def _refusal(self, reason: str, detail: str) -> ASGIApp:
        body = error_body(503, detail)
        start = {"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode())]}

        async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
            self.on_reject(reason, True)
            if self.reject_delay_s > 0:
                await asyncio.sleep(hold_s(self.reject_delay_s))
            await send(start)
            await send({"type": "http.response.body", "body": body})

        return refuse
