"""The direct solve of PareCO's per-target problem: the lowest CE lower bound at a FLOPs target.

Algorithm 2 looks, for a target FLOPs value ``t``, for the Tchebyshev weight ``lam_F`` whose
scalarization minimizer costs ``t``: up to ten acquisition optimizations per proposal. FLOPs are
exact and cheap here, so the same point solves the epsilon-constraint problem directly::

    minimize  g(a) = mu(a) - sqrt(beta) sigma(a)     subject to  |F(a) - t| <= eps,  a in [w0, 1]^d

:class:`DirectSolver` does it for every target of a refresh from one scored pool:

1. a candidate pool (:func:`candidate_pool`) spread over the whole FLOPs range -- near-uniform
   widths at every level, random per-layer configurations, and perturbations of the current
   front -- is scored once: exact FLOPs and the GP lower bound of every candidate;
2. for a target, the ``starts`` feasible candidates with the lowest bound (the closest in FLOPs
   when none is feasible) are refined by a few projected Adam steps on the bound plus a penalty
   on the smooth FLOPs leaving the band ``|F - t| <= eps / 2``;
3. the best feasible point by exact FLOPs among pool and refined points wins, excluding any
   channel vector already proposed in the refresh (so no two proposals are equal).

:meth:`DirectSolver.solve_each` does step 2 for all the targets of a refresh in one batch.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import Tensor

from pareco.search.flops import FlopsFn
from pareco.search.gp import CEPredictor
from pareco.search.sampling import SearchResult
from pareco.width import WidthSpace

PENALTY = 10.0
"""Weight of the squared FLOPs-band violation, in units of (eps / 2): a point at the band's
edge plus eps / 2 pays 10, far more than the normalized bound's whole range (1)."""


def candidate_pool(space: WidthSpace, n: int, generator: torch.Generator,
                   around: Tensor | None = None) -> Tensor:
    """``n`` configurations (``(n, d)`` float64 in ``[lower, 1]``) covering every FLOPs level.

    A third are near-uniform (a level ``w ~ U[lower, 1]`` plus per-group noise of a random
    scale up to 0.3 of the box), a third uniform in the box (diverse per-layer widths; their
    FLOPs bunch in the middle), a third perturbations (scale up to 0.1) of the rows of
    ``around`` (the current front), or more near-uniform ones when ``around`` is empty.
    """
    lo, span, d = space.lower, 1.0 - space.lower, space.dim

    def noisy(base: Tensor, scale: float) -> Tensor:
        s = scale * torch.rand(len(base), 1, generator=generator, dtype=torch.float64)
        z = torch.randn(len(base), d, generator=generator, dtype=torch.float64)
        return (base + span * s * z).clamp(lo, 1.0)

    k = n // 3
    levels = lo + span * torch.rand(n - 2 * k, 1, generator=generator, dtype=torch.float64)
    parts = [noisy(levels.expand(-1, d), 0.3), space.sample(k, generator)]
    if around is not None and len(around):
        pick = torch.randint(len(around), (k,), generator=generator)
        parts.append(noisy(around.to(torch.float64)[pick], 0.1))
    else:
        more = lo + span * torch.rand(k, 1, generator=generator, dtype=torch.float64)
        parts.append(noisy(more.expand(-1, d), 0.3))
    return torch.cat(parts)


class DirectSolver:
    """Minimizes the GP lower bound of CE at given FLOPs targets (see the module doc).

    ``predict``: the GP posterior; ``ce_range`` = (min, max) of the observed CE normalizes the
    bound to about [0, 1]; ``smooth_flops`` (differentiable) steers the refinement and
    ``exact_flops`` decides feasibility. ``pool`` is scored once at construction.
    """

    def __init__(self, space: WidthSpace, predict: CEPredictor, smooth_flops: FlopsFn,
                 exact_flops: FlopsFn, pool: Tensor, *, beta: float,
                 ce_range: tuple[float, float], starts: int = 4, steps: int = 25,
                 lr: float = 0.02) -> None:
        self.space, self.predict = space, predict
        self.smooth_flops, self.exact_flops = smooth_flops, exact_flops
        self.sqrt_beta = float(beta) ** 0.5
        self.ce_min, self.ce_scale = ce_range[0], max(ce_range[1] - ce_range[0], 1e-12)
        self.starts, self.steps, self.lr = starts, steps, lr
        self.pool = pool.to(torch.float64)
        with torch.no_grad():
            self.pool_flops = exact_flops(self.pool)
            self.pool_bound = self.bound(self.pool)
        self.pool_keys = space.channels_batch(self.pool)

    def bound(self, alpha: Tensor) -> Tensor:
        """The normalized lower confidence bound of CE at ``alpha`` (``(n, d) -> (n,)``)."""
        mean, sigma = self.predict(alpha)
        return (mean - self.sqrt_beta * sigma - self.ce_min) / self.ce_scale

    def solve(self, target: float, eps: float,
              exclude: Collection[tuple[int, ...]] = ()) -> SearchResult:
        """The configuration of lowest bound with ``|F - target| <= eps`` whose channel vector
        is not in ``exclude`` (the closest in FLOPs when none is feasible)."""
        return self._pick(target, eps, exclude, self._refine(self._starts(target, eps), target,
                                                             eps))

    def solve_each(self, targets: Sequence[float], eps: float) -> list[SearchResult]:
        """:meth:`solve` for every target in order, each excluding the channel vectors of the
        results before it (no two results are equal). The refinements of all targets run as
        one batch (``bench/proposals.py``: 64 targets in 0.31 s, 2 in 0.12 s, one at a time
        5.9 s and 0.23 s)."""
        if not len(targets):
            return []
        starts = [self._starts(t, eps) for t in targets]
        rows = torch.tensor([t for t, s in zip(targets, starts) for _ in range(len(s))],
                            dtype=torch.float64)
        refined = self._refine(torch.cat(starts), rows, eps).split([len(s) for s in starts])
        results: list[SearchResult] = []
        chosen: set[tuple[int, ...]] = set()
        for target, mine in zip(targets, refined):
            results.append(self._pick(target, eps, chosen, mine))
            chosen.add(tuple(int(c) for c in self.space.channels_batch(results[-1].alpha[None])[0]))
        return results

    def _starts(self, target: float, eps: float) -> Tensor:
        """The ``starts`` pool rows of lowest bound within ``eps`` of ``target`` (else the
        closest in FLOPs)."""
        gap = (self.pool_flops - target).abs()
        score = torch.where(gap <= eps, self.pool_bound, 1e6 + gap)
        return self.pool[torch.argsort(score)[: self.starts]]

    def _pick(self, target: float, eps: float, exclude: Collection[tuple[int, ...]],
              refined: Tensor) -> SearchResult:
        """The best of pool and ``refined`` for ``target`` whose channels are not excluded."""
        with torch.no_grad():
            alphas = torch.cat([self.pool, refined])
            flops = torch.cat([self.pool_flops, self.exact_flops(refined)])
            bound = torch.cat([self.pool_bound, self.bound(refined)])
            keys = torch.cat([self.pool_keys, self.space.channels_batch(refined)])
        gap = (flops - target).abs()
        score = torch.where(gap <= eps, bound, 1e6 + gap)
        for i in torch.argsort(score).tolist():
            if tuple(int(c) for c in keys[i]) not in exclude:
                return SearchResult(alphas[i].clone(), float(flops[i]), float("nan"), 1,
                                    float(gap[i]))
        raise ValueError("every candidate is excluded: the pool holds too few configurations")

    def _refine(self, starts: Tensor, target: float | Tensor, eps: float) -> Tensor:
        """Projected Adam on bound + penalty from each row of ``starts`` (``target``: one value
        or one per row); ``(k, d)``. Rows do not interact: the loss is a sum over rows."""
        x = starts.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.lr)
        half = max(eps / 2, 1e-6)
        for _ in range(self.steps):
            opt.zero_grad()
            excess = ((self.smooth_flops(x) - target).abs() - half).clamp_min(0.0) / half
            loss = (self.bound(x) + PENALTY * excess**2).sum()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(self.space.lower, 1.0)
        return x.detach()
