"""This host's fronts: which calibrated configurations are worth serving once timed here.

The weight file's front is non-dominated in (MFLOPs, accuracy). MFLOPs do not order latency on a
real runtime (channel counts that are multiples of 8 hit ONNX Runtime's blocked kernels), so on a
given host some of its configs are slower *and* less accurate than another calibrated one. With
the latency of every calibrated configuration measured on this host (the front and the weight
file's other ``candidates``)::

    front = latency_front(configs, latency_ms)      # non-dominated in (ms ↓, accuracy ↑)
    served = served_configs(model.front, front)     # what the server keeps a runner for

A ``latency_ms=`` budget picks from ``served`` the most accurate config within it, which is always
on the latency front (a dominated config is never more accurate than the one dominating it);
``mflops=`` picks from the weight file's front only. Accuracy is :attr:`ServedConfig.accuracy`
(validation first), the quantity both fronts were chosen on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from serve.model import ServedConfig


class Costed(Protocol):
    """What the front functions read of a config (:class:`ServedConfig`, or the weight file's
    ``FrontConfig``)."""

    @property
    def id(self) -> str: ...
    @property
    def macs(self) -> int: ...
    @property
    def accuracy(self) -> float: ...


C = TypeVar("C", bound=Costed)


def dominated_by(config: Costed, others: Iterable[C], latency_ms: Mapping[str, float]) -> C | None:
    """The fastest config of ``others`` that is at least as fast and as accurate as ``config``
    and strictly better on one of the two (None: ``config`` is not latency-dominated)."""
    t, a = latency_ms[config.id], config.accuracy
    better = [o for o in others if o.id != config.id and latency_ms[o.id] <= t
              and o.accuracy >= a and (latency_ms[o.id] < t or o.accuracy > a)]
    return min(better, key=lambda o: (latency_ms[o.id], -o.accuracy), default=None)


def latency_front(configs: Sequence[C], latency_ms: Mapping[str, float]) -> tuple[C, ...]:
    """The configs no other one dominates in (latency ↓, accuracy ↑), by latency ascending;
    of configs with equal latency and accuracy the cheaper in MACs is kept."""
    seen: set[tuple[float, float]] = set()
    front = []
    for c in sorted(configs, key=lambda c: (latency_ms[c.id], -c.accuracy, c.macs)):
        if dominated_by(c, configs, latency_ms) is None and (latency_ms[c.id], c.accuracy) not in seen:
            seen.add((latency_ms[c.id], c.accuracy))
            front.append(c)
    return tuple(front)


def served_configs(mflops_front: Sequence[ServedConfig],
                   lat_front: Sequence[ServedConfig]) -> tuple[ServedConfig, ...]:
    """The union of the weight file's front and this host's latency front, by MACs ascending."""
    union = {c.id: c for c in (*mflops_front, *lat_front)}
    return tuple(sorted(union.values(), key=lambda c: (c.macs, c.id)))
