"""The search's cost objective: normalized MACs (the paper's FLOPs) or predicted latency."""

from __future__ import annotations

from pareco.models.base import SlimmableNet
from pareco.search.flops import FlopsFn, flops_functions

COSTS = ("macs", "latency")
"""``macs``: exact multiply-accumulates; ``latency``: an additive per-layer latency table
(:mod:`pareco.profile`) profiled on the target runtime."""


def cost_functions(net: SlimmableNet, cost: str = "macs",
                   latency_table: str | None = None) -> tuple[FlopsFn, FlopsFn]:
    """``(smooth, exact)`` normalized cost functions of ``net`` (full model = 1) for ``cost``.

    ``latency`` reads the table at path ``latency_table`` and checks that it describes ``net``
    (:class:`pareco.profile.TableError` otherwise). Raises ``ValueError`` for an unknown cost.
    """
    if cost == "macs":
        if latency_table is not None:
            raise ValueError("latency_table is only used with cost='latency'")
        return flops_functions(net)
    if cost == "latency":
        if not latency_table:
            raise ValueError("cost='latency' needs a latency table path (python -m pareco.profile)")
        from pareco.profile import latency_functions, load_table

        return latency_functions(net, load_table(latency_table))
    raise ValueError(f"unknown cost {cost!r}; choose one of {', '.join(COSTS)}")
