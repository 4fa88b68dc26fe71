"""The stateful MOBO-RS search of PareCO (Algorithm 1, lines 4-11).

    search = ParetoSearch(net.width_space, *flops_functions(net))
    alphas = search.propose(ce)     # ce: CE of every row of search.history under current weights
    ...train on alphas...
    search.extend(alphas)

Each :meth:`ParetoSearch.propose` after warm-up fits one GP to (history -> CE), then for each of
the ``m`` proposals draws a target FLOPs value where the front is least explored and
binary-searches the Tchebyshev weight whose acquisition maximizer hits it (Algorithm 2).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from pareco.search.acquisition import TchebyshevLCB, maximize
from pareco.search.flops import FlopsFn
from pareco.search.gp import fit_ce_gp, hyperparameters
from pareco.search.sampling import binary_search, draw_target
from pareco.width import WidthSpace

DEFAULT_BETA = 0.1
"""UCB exploration weight: g_CE = mu - sqrt(beta) sigma. The paper says it uses BoTorch's default
UCB setting, but BoTorch's ``UpperConfidenceBound`` has no default ``beta``; the authors' code
(enyac-group/Joslim, ``--beta``) defaults to 0.1, which is also the value of BoTorch's own
tutorials. A small beta suits this use: the search re-fits every full iteration on fresh CE
values, so exploration comes mostly from the changing targets, not from optimism."""


class ParetoSearch:
    """Holds the history H of width configurations and proposes new ones (Algorithm 1 lines 4-11).

    ``smooth_flops``/``exact_flops`` are the normalized-FLOPs functions of
    :func:`pareco.search.flops_functions`. ``m`` proposals per call; the first ``warmup`` configs
    are uniform widths; the binary search stops at ``|F - target| <= eps`` (normalized FLOPs) or
    after ``max_steps`` acquisition optimizations. ``fit_maxiter`` caps the L-BFGS-B iterations of
    every warm-started GP fit (the first fit, at ``|H| = warmup``, runs to convergence): the
    hyper-parameters drift slowly between full iterations, and an uncapped fit at |H| = 1000 costs
    tens of seconds on 2 cores. ``num_restarts``/``raw_samples``/``acq_maxiter`` configure
    ``optimize_acqf`` (up to ``max_steps`` calls per proposal). Deterministic given ``seed``;
    never disturbs the global RNG state (optimizer seeding is scoped with ``fork_rng``).
    """

    def __init__(self, space: WidthSpace, smooth_flops: FlopsFn, exact_flops: FlopsFn, *,
                 m: int = 2, warmup: int = 20, eps: float = 0.02, max_steps: int = 10,
                 beta: float = DEFAULT_BETA, seed: int = 0, fit_maxiter: int = 20,
                 num_restarts: int = 3, raw_samples: int = 128, acq_maxiter: int = 30) -> None:
        if m < 1 or max_steps < 1 or warmup < 2:
            raise ValueError(f"need m >= 1, max_steps >= 1 and warmup >= 2 (a GP needs data), "
                             f"got m={m}, max_steps={max_steps}, warmup={warmup}")
        if eps < 0 or beta < 0:
            raise ValueError(f"eps and beta must be non-negative, got eps={eps}, beta={beta}")
        self.space = space
        self.smooth_flops, self.exact_flops = smooth_flops, exact_flops
        self.m, self.warmup, self.eps, self.max_steps, self.beta = m, warmup, eps, max_steps, beta
        self.fit_maxiter, self.acq_maxiter = fit_maxiter, acq_maxiter
        self.num_restarts, self.raw_samples = num_restarts, raw_samples
        self._gen = torch.Generator().manual_seed(seed)
        self.history = torch.empty(0, space.dim, dtype=torch.float64)
        self._gp_hypers: dict[str, Tensor] = {}
        ends = torch.tensor([space.smallest, space.full], dtype=torch.float64)
        lo, hi = (float(v) for v in exact_flops(ends))
        self.flops_range = (lo, hi)  # normalized FLOPs of the smallest and the full config
        self.last_stats: dict = {}

    # ------------------------------------------------------------------------------ proposals
    @property
    def warming_up(self) -> bool:
        """Whether the next :meth:`propose` returns uniform widths (``|H| < warmup``)."""
        return len(self.history) < self.warmup

    def propose(self, ce: Tensor | None) -> Tensor:
        """M new alphas (M, d). `ce` = current cross-entropy of every row of `history` (re-evaluated by
        the caller on a held-out batch with the latest weights); ignored/None during warm-up (first
        `warmup` configs are uniform widths w ~ U[lower, 1] broadcast to all groups)."""
        t0 = time.perf_counter()
        if self.warming_up:
            alphas = self.space.sample_uniform_widths(self.m, generator=self._gen)
            self.last_stats = {"phase": "warmup", "propose_s": time.perf_counter() - t0}
            return alphas
        y = self._check_ce(ce)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed())
            maxiter = self.fit_maxiter if self._gp_hypers else None  # cold fits run to convergence
            gp = fit_ce_gp(self.history, y, self.space.lower, self._gp_hypers, maxiter)
        self._gp_hypers = hyperparameters(gp)
        fit_s = time.perf_counter() - t0

        lo, hi = self.flops_range
        acq = TchebyshevLCB(gp, self.smooth_flops, beta=self.beta, lam_flops=0.5,
                            ce_range=(float(y.min()), float(y.max())), flops_range=(lo, hi))
        h_flops = self.exact_flops(self.history)

        def solve(lam: float) -> Tensor:
            acq.lam_flops = lam
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._seed())
                return maximize(acq, self.space.lower, self.space.dim,
                                num_restarts=self.num_restarts, raw_samples=self.raw_samples,
                                maxiter=self.acq_maxiter)

        results, targets = [], []
        for _ in range(self.m):
            target = draw_target(h_flops, y, lo, hi, self._gen)
            targets.append(target)
            results.append(binary_search(solve, self.exact_flops, target,
                                         eps=self.eps, max_steps=self.max_steps))
        self.last_stats = {
            "phase": "search",
            "fit_s": fit_s,
            "propose_s": time.perf_counter() - t0,
            "targets": targets,
            "flops": [r.flops for r in results],
            "flops_error": [r.error for r in results],
            "steps": [r.steps for r in results],
            "lam_flops": [r.lam_flops for r in results],
        }
        return torch.stack([r.alpha for r in results])

    def extend(self, alphas: Tensor) -> None:
        """Append ``alphas`` (``(M, d)``, within ``[lower, 1]``) to the history H."""
        a = torch.as_tensor(alphas, dtype=torch.float64).detach().cpu()
        if a.dim() != 2 or a.shape[1] != self.space.dim:
            raise ValueError(f"alphas must have shape (M, {self.space.dim}), got {tuple(a.shape)}")
        if not torch.isfinite(a).all() or a.min() < self.space.lower - 1e-6 or a.max() > 1 + 1e-6:
            raise ValueError(f"alphas must lie in [{self.space.lower:g}, 1]")
        self.history = torch.cat([self.history, a.clamp(self.space.lower, 1.0)])

    def _check_ce(self, ce: Tensor | None) -> Tensor:
        n = len(self.history)
        if ce is None:
            raise ValueError(f"after warm-up propose() needs the CE of all {n} history configs")
        y = torch.as_tensor(ce, dtype=torch.float64).detach().cpu().reshape(-1)
        if y.numel() != n:
            raise ValueError(f"ce has {y.numel()} values but the history holds {n} configs")
        if not torch.isfinite(y).all():
            raise ValueError("ce contains non-finite values")
        return y

    def _seed(self) -> int:
        return int(torch.randint(2**62, (), generator=self._gen))

    # ---------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only: ``history``, ``rng_state`` and ``gp.<name>`` warm-start hyper-parameters."""
        state = {"history": self.history.clone(), "rng_state": self._gen.get_state()}
        state.update({f"gp.{k}": v.clone() for k, v in self._gp_hypers.items()})
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict`; later proposals equal those of the saved search."""
        history = state["history"].to(torch.float64).cpu()
        if history.dim() != 2 or history.shape[1] != self.space.dim:
            raise ValueError(f"history must have shape (n, {self.space.dim}), got {tuple(history.shape)}")
        self.history = history.clone()
        self._gen.set_state(state["rng_state"].cpu())
        self._gp_hypers = {k[3:]: v.clone() for k, v in state.items() if k.startswith("gp.")}
