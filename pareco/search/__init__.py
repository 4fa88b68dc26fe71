"""MOBO-RS with Pareto-aware sampling: PareCO's width search (see :class:`ParetoSearch`)."""

from pareco.search.flops import FlopsFn, flops_functions
from pareco.search.search import DEFAULT_BETA, ParetoSearch

__all__ = ["DEFAULT_BETA", "FlopsFn", "ParetoSearch", "flops_functions"]
