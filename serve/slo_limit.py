"""SLO mode's in-flight limit: admit only as many requests at once as can be answered within P.

Little's law ties the three: requests in progress = throughput x time in the server. The width
choice (:class:`serve.slo.SloPolicy`) only shortens the inference part of that time; the rest
(HTTP parsing, decoding, the one event loop) is a queue the prediction cannot see, and it grows
with every request admitted. So the number in progress is bounded too, and the bound is learned
from the objective itself, a multiplicative-decrease / additive-increase controller on the
measured tail latency:

* every ``every`` answered requests, take the ``quantile`` (p99) of the latencies of the last
  ``window`` of them answered under the current limit;
* above P: the limit shrinks by ``backoff`` (at least by 1);
* below ``headroom`` x P while the limit was reached since the last update (requests were
  refused or waited for it): the limit grows by 1.

Example, P = 10 ms and a limit of 8: the last 64 answers have a p99 of 14 ms, so the limit
becomes 6; once the p99 is back under 8 ms with the server full, it becomes 7, and so on. The
limit stays in ``[1, maximum]`` (``maximum``: ``--max-inflight``).
"""

from __future__ import annotations

from collections import deque

import numpy as np


class InflightLimit:
    """The learned in-flight limit of one SLO server (use on the event loop). ``slo_s``: the
    objective (s); ``maximum``: the largest limit, also the first unless ``initial`` is given
    (starting high, the limit only falls once answers come late)."""

    def __init__(self, slo_s: float, maximum: int, initial: int | None = None, *, window: int = 64,
                 every: int = 16, quantile: float = 0.99, backoff: float = 0.75,
                 headroom: float = 0.8) -> None:
        if not slo_s > 0:
            raise ValueError(f"slo_s must be > 0 (seconds), got {slo_s}")
        initial = maximum if initial is None else initial
        if not 1 <= initial <= maximum:
            raise ValueError(f"need 1 <= initial <= maximum, got {initial} and {maximum}")
        if not 0 < backoff < 1 or not 0 < headroom <= 1:
            raise ValueError(f"backoff must be in (0, 1) and headroom in (0, 1], got {backoff} "
                             f"and {headroom}")
        self.slo_s, self.maximum, self.every = slo_s, maximum, every
        self.quantile, self.backoff, self.headroom = quantile, backoff, headroom
        self.limit = initial
        self._latencies: deque[float] = deque(maxlen=window)
        self._since_update = 0
        self._reached = False

    def admits(self, inflight: int) -> bool:
        """Whether one more request may start with ``inflight`` in progress; a refusal marks
        the limit as reached."""
        if inflight < self.limit:
            self._reached = self._reached or inflight + 1 >= self.limit
            return True
        self._reached = True
        return False

    def observe(self, latency_s: float) -> None:
        """One accepted request was answered after ``latency_s`` seconds in the server."""
        self._latencies.append(latency_s)
        self._since_update += 1
        if self._since_update < self.every:
            return
        self._since_update = 0
        tail = float(np.quantile(self._latencies, self.quantile))
        before = self.limit
        if tail > self.slo_s:
            self.limit = max(1, min(self.limit - 1, int(self.limit * self.backoff)))
        elif tail < self.headroom * self.slo_s and self._reached:
            self.limit = min(self.maximum, self.limit + 1)
        self._reached = False
        if self.limit != before:  # the next decision on answers under the new limit only
            self._latencies.clear()
