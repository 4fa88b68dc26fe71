"""Budget -> configuration: the most accurate served config whose cost fits.

Cost is MFLOPs (millions of MACs, exact, from the weight file), chosen among the weight file's
front (``on_front``), or the latency in ms measured on this host at start-up (batch 1), chosen
among every served config, which amounts to this host's latency front (:mod:`serve.fronts`).
Ties in accuracy go to the cheaper config. No budget means the most accurate config of the front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from serve.model import ServedConfig


class BudgetError(ValueError):
    """The budget is below the cheapest configuration (the message names the minimum)."""


def select(front: Sequence[ServedConfig], latency_ms: Mapping[str, float], *,
           mflops: float | None = None, max_latency_ms: float | None = None) -> ServedConfig:
    """The chosen config of ``front`` (the served configs) for at most one budget; raises
    :class:`BudgetError` if none fits. ``latency_ms`` must cover every config of ``front``."""
    if mflops is not None and max_latency_ms is not None:
        raise ValueError("give at most one budget")
    mflops_front = [c for c in front if c.on_front]
    if mflops is not None:
        fits = [c for c in mflops_front if c.mflops <= mflops]
        if not fits:
            cheapest = min(mflops_front, key=lambda c: c.macs)
            raise BudgetError(f"mflops={mflops:g} is below the smallest configuration: "
                              f"{cheapest.id} needs {cheapest.mflops!r} MFLOPs (the minimum)")
        return max(fits, key=lambda c: (c.accuracy, -c.macs))
    if max_latency_ms is not None:
        fits = [c for c in front if latency_ms[c.id] <= max_latency_ms]
        if not fits:
            fastest = min(front, key=lambda c: latency_ms[c.id])
            raise BudgetError(f"latency_ms={max_latency_ms:g} is below the fastest configuration "
                              f"on this host: {fastest.id} takes {latency_ms[fastest.id]:.4g} ms "
                              f"(the minimum)")
        return max(fits, key=lambda c: (c.accuracy, -latency_ms[c.id]))
    return max(mflops_front, key=lambda c: (c.accuracy, -c.macs))
