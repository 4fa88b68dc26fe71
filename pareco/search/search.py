"""The stateful MOBO-RS search of PareCO (Algorithm 1, lines 4-11).

    search = ParetoSearch(net.width_space, *flops_functions(net))
    alphas = search.propose(ce)     # ce: CE of every row of search.history under current weights
    ...train on alphas...
    search.extend(alphas)

Each :meth:`ParetoSearch.propose` after warm-up fits one GP to (history -> CE), then for each of
the ``m`` proposals draws a target FLOPs value where the front is least explored and finds the
configuration of lowest CE lower bound at that target: directly (:mod:`pareco.search.direct`,
the default) or by binary-searching the Tchebyshev weight whose acquisition maximizer hits it
(Algorithm 2).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

import torch
from botorch.models import SingleTaskGP
from torch import Tensor

from pareco.pareto import front_areas
from pareco.search.acquisition import TchebyshevLCB, maximize
from pareco.search.direct import DirectSolver, candidate_pool
from pareco.search.flops import FlopsFn
from pareco.search.gp import CEPredictor, fit_ce_gp, hyperparameters
from pareco.search.sampling import TARGET_RULES, SearchResult, binary_search, draw_target
from pareco.width import WidthSpace

DEFAULT_BETA = 0.1
"""UCB exploration weight: g_CE = mu - sqrt(beta) sigma. The paper says it uses BoTorch's default
UCB setting, but BoTorch's ``UpperConfidenceBound`` has no default ``beta``; the authors' code
(enyac-group/Joslim, ``--beta``) defaults to 0.1, which is also the value of BoTorch's own
tutorials. A small beta suits this use: the search re-fits every full iteration on fresh CE
values, so exploration comes mostly from the changing targets, not from optimism."""


SOLVERS = ("direct", "tchebyshev")
"""How a proposal reaches its FLOPs target: ``direct`` (:mod:`pareco.search.direct`: minimize
the CE lower bound subject to the target, one scored pool per refresh) or ``tchebyshev`` (the
paper's Algorithm 2: binary search on the scalarization weight, up to ``max_steps``
acquisition optimizations per proposal)."""

Solver = Callable[[float, float, Collection[tuple[int, ...]]], SearchResult]
"""``(target, eps, exclude) -> SearchResult``: a configuration whose normalized FLOPs are within
``eps`` of ``target`` (else the closest found), preferably with channels not in ``exclude``."""

TARGET_DRAWS = 5
"""Targets drawn for one proposal before a duplicate of an earlier proposal of the same refresh
is replaced by the direct solver's best distinct configuration."""


class ParetoSearch:
    """Holds the history H of width configurations and proposes new ones (Algorithm 1 lines 4-11).

    H starts with the smallest and the full configuration: they anchor the (FLOPs, CE) front at
    both ends and are re-evaluated with every other row. ``smooth_flops``/``exact_flops`` are the
    normalized-FLOPs functions of :func:`pareco.search.flops_functions`. ``m`` proposals per call,
    never two with the same channels; until H holds ``warmup`` configs they are uniform widths.
    ``targets`` is the target rule (:data:`pareco.search.sampling.TARGET_RULES`), ``solver`` the
    way a target is reached (:data:`SOLVERS`), within ``eps`` normalized FLOPs; ``max_steps``
    caps the Tchebyshev binary search, ``pool`` is the direct solver's candidate pool size.
    ``fit_maxiter`` caps the L-BFGS-B iterations of every warm-started GP fit (the first fit runs
    to convergence): the hyper-parameters drift slowly between full iterations.
    ``num_restarts``/``raw_samples``/``acq_maxiter`` configure ``optimize_acqf`` (Tchebyshev).
    Deterministic given ``seed``; never disturbs the global RNG state (``fork_rng``).
    """

    def __init__(self, space: WidthSpace, smooth_flops: FlopsFn, exact_flops: FlopsFn, *,
                 m: int = 2, warmup: int = 20, eps: float = 0.02, max_steps: int = 10,
                 beta: float = DEFAULT_BETA, seed: int = 0, solver: str = "direct",
                 targets: str = "front", pool: int = 2048, fit_maxiter: int = 20,
                 num_restarts: int = 3, raw_samples: int = 128, acq_maxiter: int = 30) -> None:
        if m < 1 or max_steps < 1 or warmup < 2:
            raise ValueError(f"need m >= 1, max_steps >= 1 and warmup >= 2 (a GP needs data), "
                             f"got m={m}, max_steps={max_steps}, warmup={warmup}")
        if eps < 0 or beta < 0:
            raise ValueError(f"eps and beta must be non-negative, got eps={eps}, beta={beta}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if targets not in TARGET_RULES:
            raise ValueError(f"targets must be one of {TARGET_RULES}, got {targets!r}")
        if pool < 2 * m:
            raise ValueError(f"pool must hold at least 2 * m = {2 * m} candidates, got {pool}")
        self.space = space
        self.smooth_flops, self.exact_flops = smooth_flops, exact_flops
        self.m, self.warmup, self.eps, self.max_steps, self.beta = m, warmup, eps, max_steps, beta
        self.solver, self.targets, self.pool = solver, targets, pool
        self.fit_maxiter, self.acq_maxiter = fit_maxiter, acq_maxiter
        self.num_restarts, self.raw_samples = num_restarts, raw_samples
        self._gen = torch.Generator().manual_seed(seed)
        self.history = torch.tensor([space.smallest, space.full], dtype=torch.float64)
        self._gp_hypers: dict[str, Tensor] = {}
        lo, hi = (float(v) for v in exact_flops(self.history))
        self.flops_range = (lo, hi)  # normalized FLOPs of the smallest and the full config
        self.last_stats: dict = {}

    # ------------------------------------------------------------------------------ proposals
    @property
    def warming_up(self) -> bool:
        """Whether the next :meth:`propose` returns uniform widths (``|H| < warmup``)."""
        return len(self.history) < self.warmup

    def propose(self, ce: Tensor | None, count: int | None = None) -> Tensor:
        """``count`` (default ``m``) new alphas ``(count, d)``, no two with the same channels.
        `ce` = current cross-entropy of every row of `history` (re-evaluated by the caller on a
        held-out batch with the latest weights); ignored/None during warm-up (the first `warmup`
        configs of H are uniform widths w ~ U[lower, 1] broadcast to all groups). Each proposal
        has its own target, so a larger ``count`` spreads the proposals along the front."""
        count = self.m if count is None else count
        if count < 1 or count > self.pool // 2:
            raise ValueError(f"count must be in [1, pool / 2 = {self.pool // 2}], got {count}")
        t0 = time.perf_counter()
        if self.warming_up:
            alphas = self.space.sample_uniform_widths(count, generator=self._gen)
            self.last_stats = {"phase": "warmup", "propose_s": time.perf_counter() - t0}
            return alphas
        y = self._check_ce(ce)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed())
            maxiter = self.fit_maxiter if self._gp_hypers else None  # cold fits run to convergence
            gp = fit_ce_gp(self.history, y, self.space.lower, self._gp_hypers, maxiter)
        self._gp_hypers = hyperparameters(gp)
        fit_s = time.perf_counter() - t0
        h_flops = self.exact_flops(self.history)
        direct = self.direct_solver(gp, y, h_flops, self._gen)
        if self.solver == "direct":  # every result is distinct: one batch for all targets
            targets = [self._draw_target(h_flops, y) for _ in range(count)]
            results, redraws = direct.solve_each(targets, self.eps), 0
        else:
            results, targets, redraws = self._solve_redrawing(self._tchebyshev(gp, y), direct,
                                                              h_flops, y, count)
        distinct = {self._key(r.alpha) for r in results}
        self.last_stats = {
            "phase": "search", "solver": self.solver,
            "fit_s": fit_s,
            "propose_s": time.perf_counter() - t0,
            "targets": targets,
            "flops": [r.flops for r in results],
            "flops_error": [r.error for r in results],
            "steps": [r.steps for r in results],
            "redraws": redraws,
            "duplicates": count - len(distinct),
        }
        if self.solver == "tchebyshev":
            self.last_stats["lam_flops"] = [r.lam_flops for r in results]
        return torch.stack([r.alpha for r in results])

    def direct_solver(self, gp: SingleTaskGP, y: Tensor, h_flops: Tensor,
                      generator: torch.Generator) -> DirectSolver:
        """The direct solver of one refresh: ``gp`` (fitted to H's CE ``y``) and a candidate
        pool drawn with ``generator`` around H's non-dominated rows (``h_flops``: H's
        normalized FLOPs)."""
        front = self.history[torch.as_tensor(front_areas(h_flops, y).index)]
        return DirectSolver(self.space, CEPredictor(gp), self.smooth_flops, self.exact_flops,
                            candidate_pool(self.space, self.pool, generator, front),
                            beta=self.beta, ce_range=(float(y.min()), float(y.max())))

    def _draw_target(self, h_flops: Tensor, y: Tensor) -> float:
        return draw_target(h_flops, y, *self.flops_range, self._gen, self.targets)

    def _solve_redrawing(self, solve: Solver, direct: DirectSolver, h_flops: Tensor, y: Tensor,
                         count: int) -> tuple[list[SearchResult], list[float], int]:
        """``count`` results of ``solve`` one target at a time; a duplicate of an earlier result
        gets a new target, up to :data:`TARGET_DRAWS`, then the direct solver's best distinct
        configuration. Returns the results, their targets and the number of redraws."""
        results, targets, chosen, redraws = [], [], set(), 0
        for _ in range(count):
            for _ in range(TARGET_DRAWS):
                target = self._draw_target(h_flops, y)
                result = solve(target, self.eps, chosen)
                if self._key(result.alpha) not in chosen:
                    break
                redraws += 1
            else:
                result = direct.solve(target, self.eps, chosen)
            chosen.add(self._key(result.alpha))
            targets.append(target)
            results.append(result)
        return results, targets, redraws

    def _tchebyshev(self, gp: SingleTaskGP, y: Tensor) -> Solver:
        """Algorithm 2's solver: ``(target, eps, exclude) -> SearchResult`` by binary search on
        the Tchebyshev weight (``exclude`` is ignored; :meth:`propose` redraws duplicates)."""
        lo, hi = self.flops_range
        acq = TchebyshevLCB(gp, self.smooth_flops, beta=self.beta, lam_flops=0.5,
                            ce_range=(float(y.min()), float(y.max())), flops_range=(lo, hi))

        def minimize(lam: float) -> Tensor:
            acq.lam_flops = lam
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._seed())
                return maximize(acq, self.space.lower, self.space.dim,
                                num_restarts=self.num_restarts, raw_samples=self.raw_samples,
                                maxiter=self.acq_maxiter)

        def solve(target: float, eps: float, exclude: Collection[tuple[int, ...]]) -> SearchResult:
            return binary_search(minimize, self.exact_flops, target, eps=eps,
                                 max_steps=self.max_steps)

        return solve

    def _key(self, alpha: Tensor) -> tuple[int, ...]:
        return tuple(int(c) for c in self.space.channels_batch(alpha.reshape(1, -1))[0])

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
