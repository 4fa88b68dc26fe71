"""Which width configurations each training step trains: the only data-dependent decisions.

Every sandwich method trains, per step, the full network on labels, the smallest configuration
``w0`` and ``M`` *middle* configurations by in-place distillation; methods differ only in the
middle configurations, returned by :meth:`ConfigPolicy.middle` as an ``(M, d)`` float64 tensor:

- :class:`UniformPolicy` (``slim``, and ``twostage``'s training phase): ``M`` uniform widths
  ``w ~ U[w0, 1]`` (one multiplier for all groups) from a dedicated seeded generator, every step.
- :class:`ParetoPolicy` (``pareco``, Algorithm 1): every ``n`` steps (a full iteration) re-evaluate
  the CE of the history H on one held-out batch, let :class:`~pareco.search.ParetoSearch` propose
  ``M`` per-layer configurations, add them to H; train on them for the next ``n`` steps. With
  ``pareco.uniform_middle = u > 0`` the search proposes ``M - u`` and the other ``u`` rows are
  uniform widths re-drawn every step, as in slim. With ``pareco.proposals = K > M - u`` the
  search proposes ``K`` configurations per refresh, each for its own target; the first ``M - u``
  join H as before, and every step trains ``M - u`` of the ``K`` drawn at random (more distinct
  configurations trained for the same re-evaluation cost); with ``pareco.proposals_from`` only
  from that fraction of training on, the steps before it training the first ``M - u``.

``middle(step)`` is the single place where these decisions are made; distributed training wraps it
as "rank 0 decides, then broadcasts the tensor" so that all ranks train the same sub-networks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from pareco.search import ParetoSearch
from pareco.training import distributed
from pareco.width import WidthSpace

CEFn = Callable[[Tensor], Tensor]
"""``alphas (n, d) -> (n,)`` float64 cross-entropy under the current weights on a held-out batch."""


class ConfigPolicy(Protocol):
    """Chooses the middle configurations of the sandwich; its state makes resuming exact."""

    def middle(self, step: int) -> Tensor: ...
    def state_dict(self) -> dict[str, Tensor]: ...
    def load_state_dict(self, state: dict[str, Tensor]) -> None: ...
    def diagnostics(self) -> dict: ...


class UniformPolicy:
    """US-Nets' sampling: ``m`` uniform widths drawn from ``U[w0, 1]`` at every step."""

    def __init__(self, space: WidthSpace, m: int, seed: int) -> None:
        self.space, self.m = space, m
        self.gen = torch.Generator().manual_seed(seed)

    def middle(self, step: int) -> Tensor:
        return self.space.sample_uniform_widths(self.m, generator=self.gen)

    def state_dict(self) -> dict[str, Tensor]:
        return {"rng_state": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.gen.set_state(state["rng_state"])

    def diagnostics(self) -> dict:
        return {}


def history_budget(history_size: int, total_steps: int, *, m: int, batch_size: int,
                   eval_batch: int, max_overhead: float, searched: int | None = None) -> int:
    """|H| of a run: ``history_size``, capped so that re-evaluating H costs at most
    ``max_overhead`` of the training compute, and at least the two anchors plus ``searched``.

    A training step runs ``m + 2`` forward and backward passes over ``batch_size`` images
    (about ``3 (m + 2) batch_size`` image-forwards); the refresh at ``|H| = h`` runs
    ``h eval_batch`` image-forwards, and H grows by ``s = searched`` (default ``m``) per
    refresh, so growing it to ``h`` costs about ``h^2 eval_batch / (2 s)``. Hence::

        |H| <= sqrt(6 max_overhead s (m + 2) batch_size total_steps / eval_batch)

    e.g. 37 for the default Fashion-MNIST run (1170 steps, batch 128, eval batch 256, 5 %),
    about 430 for the paper's 400 CIFAR epochs (the paper used 1000); a 16-step run gets 4, so
    it stays in the uniform warm-up instead of refreshing every step.
    """
    s = m if searched is None else searched
    cap = math.sqrt(6 * max_overhead * s * (m + 2) * batch_size * total_steps / eval_batch)
    return max(2 + s, min(history_size, int(cap)))


def steps_per_refresh(total_steps: int, history_size: int, m: int) -> int:
    """``n``: training steps per full iteration so that ``|H| = m * ceil(total / n)`` comes closest
    to ``history_size`` (a tie keeps the larger history).

    ``|H|`` only falls as ``n`` grows, so the closest is one of two: the largest ``n`` whose
    ``|H|`` is at least the target (``ceil(total / n) >= k = ceil(history_size / m)``) and the
    smallest whose ``|H|`` is at most it (``ceil(total / n) <= j = floor(history_size / m)``).
    With fewer steps than wanted iterations, ``n = 1`` (``|H| = m * total``).
    """
    k, j = math.ceil(history_size / m), history_size // m
    candidates = [max(1, math.ceil(total_steps / (k - 1)) - 1) if k > 1 else max(1, total_steps)]
    if j >= 1:
        candidates.append(max(1, math.ceil(total_steps / j)))

    def distance(n: int) -> tuple[int, int]:
        size = m * math.ceil(total_steps / n)
        return abs(size - history_size), -size

    return min(candidates, key=distance)


class ParetoPolicy:
    """PareCO's middle configurations: MOBO-RS proposals refreshed every ``n`` steps.

    ``ce_fn`` re-evaluates the history with the current weights. Each refresh the search proposes
    ``proposals`` configurations (default ``search.m``, the paper); the first ``search.m`` join H.
    When ``proposals == search.m`` every step trains all of them (the paper's Algorithm 1);
    otherwise every step from ``set_from`` on trains ``search.m`` of them drawn without
    replacement by a generator seeded with ``seed`` (the steps before it train the first
    ``search.m``, as the paper does). ``uniform``, if given, appends its uniform widths (drawn
    every step) to the searched rows. The state (search, proposals, draws, latest CE values)
    makes resuming exact. Timing totals are in ``diagnostics()``.
    """

    def __init__(self, search: ParetoSearch, n: int, ce_fn: CEFn,
                 uniform: UniformPolicy | None = None, proposals: int | None = None,
                 seed: int = 0, set_from: int = 0) -> None:
        k = search.m if proposals is None else proposals
        if k < search.m:
            raise ValueError(f"proposals ({k}) must be at least the search's m ({search.m})")
        self.search, self.n, self.ce_fn, self.uniform, self.k = search, n, ce_fn, uniform, k
        self.set_from = set_from
        self.current = torch.empty(0, search.space.dim, dtype=torch.float64)  # last proposals
        self.gen = torch.Generator().manual_seed(seed)
        self.ce = torch.empty(0, dtype=torch.float64)  # CE of history[:len(ce)] at the last refresh
        self.ce_step = -1
        self.totals = {"refreshes": 0, "h_eval_s": 0.0, "h_evals": 0, "propose_s": 0.0,
                       "fit_s": 0.0, "binary_steps": 0, "searches": 0, "flops_error_sum": 0.0,
                       "duplicates": 0}
        self.last_event: dict | None = None

    @property
    def m(self) -> int:
        return self.search.m

    def middle(self, step: int) -> Tensor:
        if step % self.n == 0 or len(self.current) < self.m:
            self._refresh(step)
        if self.k == self.m or step < self.set_from:
            searched = self.current[: self.m].clone()
        else:
            searched = self.current[torch.randperm(self.k, generator=self.gen)[: self.m]]
        if self.uniform is None:
            return searched
        return torch.cat([searched, self.uniform.middle(step)])

    def refresh_ce(self, step: int, batches: int = 1) -> Tensor:
        """CE of every configuration in H with the current weights (timed), averaged over
        ``batches`` held-out batches (1 during training; more for the final candidate filter)."""
        t0 = time.perf_counter()
        h = self.search.history
        ce = torch.stack([self.ce_fn(h) for _ in range(batches)]).mean(0) if len(h) else self.ce[:0]
        dt = time.perf_counter() - t0
        self.totals["h_eval_s"] += dt
        self.totals["h_evals"] += len(ce) * batches
        self.ce, self.ce_step = ce, step
        return ce

    def _refresh(self, step: int) -> None:
        need_ce = not self.search.warming_up
        h_eval_s = 0.0
        if need_ce:
            before = self.totals["h_eval_s"]
            self.refresh_ce(step)
            h_eval_s = self.totals["h_eval_s"] - before
        # rank 0 proposes and broadcasts (distributed training; a plain call otherwise)
        alphas = distributed.decide(
            lambda: self.search.propose(self.ce if need_ce else None, self.k),
            (self.k, self.search.space.dim))
        self.search.extend(alphas[: self.m])
        self.current = alphas.to(torch.float64).clamp(self.search.space.lower, 1.0)  # as in H
        stats = dict(self.search.last_stats)
        t = self.totals
        t["refreshes"] += 1
        t["propose_s"] += float(stats.get("propose_s", 0.0))
        t["fit_s"] += float(stats.get("fit_s", 0.0))
        if stats.get("phase") == "search":
            t["binary_steps"] += sum(stats["steps"])
            t["searches"] += len(stats["steps"])
            t["flops_error_sum"] += sum(stats["flops_error"])
            t["duplicates"] += stats["duplicates"]
        self.last_event = {"step": step, "history": len(self.search.history),
                           "h_eval_s": h_eval_s, **stats}

    def state_dict(self) -> dict[str, Tensor]:
        state = {f"search.{k}": v for k, v in self.search.state_dict().items()}
        state["current"] = self.current.clone()
        state["draw_rng_state"] = self.gen.get_state()
        state["ce"] = self.ce.clone()
        state["ce_step"] = torch.tensor(self.ce_step)
        state["totals"] = torch.tensor([float(v) for v in self.totals.values()], dtype=torch.float64)
        if self.uniform is not None:
            state.update({f"uniform.{k}": v for k, v in self.uniform.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.search.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("search.")})
        # states saved before the proposal set existed: the current proposals are H's last m rows
        current = state.get("current", self.search.history[-self.m:])
        self.current = current.to(torch.float64).clone()
        if "draw_rng_state" in state:
            self.gen.set_state(state["draw_rng_state"].cpu())
        self.ce = state["ce"].to(torch.float64).clone()
        self.ce_step = int(state["ce_step"])
        for key, value in zip(list(self.totals), state["totals"].tolist()):
            self.totals[key] = type(self.totals[key])(value)
        if self.uniform is not None:
            self.uniform.load_state_dict({k[8:]: v for k, v in state.items()
                                          if k.startswith("uniform.")})

    def diagnostics(self) -> dict:
        t = self.totals
        return {
            "history_size": len(self.search.history),
            "steps_per_refresh": self.n,
            "proposals_per_refresh": self.k,
            "proposal_set_from_step": self.set_from,
            "refreshes": t["refreshes"],
            "h_eval_s": round(t["h_eval_s"], 3),
            "h_eval_forwards": t["h_evals"],
            "h_eval_ms_per_config": round(1e3 * t["h_eval_s"] / max(1, t["h_evals"]), 3),
            "search_s": round(t["propose_s"], 3),
            "gp_fit_s": round(t["fit_s"], 3),
            "mean_binary_steps": round(t["binary_steps"] / max(1, t["searches"]), 3),
            "mean_flops_error": round(t["flops_error_sum"] / max(1, t["searches"]), 5),
            "duplicate_proposals": t["duplicates"],
        }
