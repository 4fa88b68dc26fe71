"""MOBO-RS with Pareto-aware sampling: PareCO's width search (see :class:`ParetoSearch`)."""

from pareco.search.flops import FlopsFn, flops_functions
from pareco.search.objective import COSTS, cost_functions
from pareco.search.sampling import TARGET_RULES
from pareco.search.search import DEFAULT_BETA, SOLVERS, ParetoSearch

__all__ = ["COSTS", "DEFAULT_BETA", "FlopsFn", "ParetoSearch", "SOLVERS", "TARGET_RULES",
           "cost_functions", "flops_functions"]
