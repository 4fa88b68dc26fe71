"""TwoStage's second stage: the same MOBO-RS search, run after training on frozen weights.

The weights no longer change, so the CE of a configuration on the (fixed) held-out batch never
changes either: each configuration is evaluated once, when it enters H, instead of re-evaluating
all of H every full iteration as PareCO must. The search, its proposals and its budget (|H|) are
otherwise exactly PareCO's.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from pareco.search import ParetoSearch
from pareco.training import distributed
from pareco.training.methods import CEFn


class PosthocSearch:
    """Grows H to ``history_size`` configurations, one full iteration per :meth:`iterate`."""

    def __init__(self, search: ParetoSearch, history_size: int, ce_fn: CEFn) -> None:
        self.search, self.history_size, self.ce_fn = search, history_size, ce_fn
        self.ce = torch.empty(0, dtype=torch.float64)
        self.final_ce = torch.empty(0, dtype=torch.float64)  # see finalize()
        self.eval_s = 0.0
        self.propose_s = 0.0

    @property
    def done(self) -> bool:
        return len(self.search.history) >= self.history_size and len(self.ce) == len(self.search.history)

    def _evaluate_new(self) -> None:
        new = self.search.history[len(self.ce):]
        if len(new):
            t0 = time.perf_counter()
            self.ce = torch.cat([self.ce, self.ce_fn(new)])
            self.eval_s += time.perf_counter() - t0

    def iterate(self) -> dict:
        """Evaluate the newest configurations, then propose and add ``m`` more (while below the
        budget). Returns the search's statistics of this iteration."""
        self._evaluate_new()
        if len(self.search.history) >= self.history_size:
            return {}
        t0 = time.perf_counter()
        # rank 0 proposes and broadcasts (distributed training; a plain call otherwise)
        alphas = distributed.decide(
            lambda: self.search.propose(None if self.search.warming_up else self.ce),
            (self.search.m, self.search.space.dim))
        self.propose_s += time.perf_counter() - t0
        self.search.extend(alphas[: self.history_size - len(self.search.history)])
        if len(self.search.history) >= self.history_size:
            self._evaluate_new()
        return dict(self.search.last_stats)

    def finalize(self, ce_fn: CEFn, batches: int) -> Tensor:
        """CE of all of H averaged over ``batches`` fresh held-out batches (``ce_fn`` draws one
        per call): the front's candidate filter, measured exactly as PareCO's final one."""
        t0 = time.perf_counter()
        self.final_ce = torch.stack([ce_fn(self.search.history) for _ in range(batches)]).mean(0)
        self.eval_s += time.perf_counter() - t0
        return self.final_ce

    def state_dict(self) -> dict[str, Tensor]:
        state = {f"search.{k}": v for k, v in self.search.state_dict().items()}
        state["ce"] = self.ce.clone()
        state["final_ce"] = self.final_ce.clone()
        state["times"] = torch.tensor([self.eval_s, self.propose_s], dtype=torch.float64)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.search.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("search.")})
        self.ce = state["ce"].to(torch.float64).clone()
        self.final_ce = state["final_ce"].to(torch.float64).clone()
        self.eval_s, self.propose_s = (float(v) for v in state["times"])

    def diagnostics(self) -> dict:
        return {"history_size": len(self.search.history), "h_eval_s": round(self.eval_s, 3),
                "search_s": round(self.propose_s, 3)}
