"""Pareto-aware sampling (the paper's Algorithm 2) minus the optimizer it drives.

:func:`draw_target` picks a target FLOPs value where the current front is least explored;
:func:`binary_search` finds the scalarization weight ``lam_F`` whose minimizer hits it (the
paper's solver; :mod:`pareco.search.direct` reaches the same point in one optimization).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pareco.pareto import front_areas


TARGET_RULES = ("front", "uniform")
"""Where targets are drawn: ``front`` -- an interval between consecutive front points with
probability proportional to its area (the paper's eq. (4)); ``uniform`` -- uniformly over the
FLOPs range of the space (the journal version, Joslim)."""


def draw_target(flops: Tensor, ce: Tensor, lo: float, hi: float, generator: torch.Generator,
                rule: str = "front") -> float:
    """A target normalized FLOPs value in ``[lo, hi]`` (the smallest and the full config's FLOPs).

    ``front``: an interval of the (FLOPs, CE) front of the history drawn with probability
    proportional to its area (:func:`pareco.pareto.front_areas`: only between front points, never
    beyond its ends), then a value uniformly inside it. ``uniform``, and ``front`` when the front
    has no interval of positive area: uniform over ``[lo, hi]``.
    """
    if rule not in TARGET_RULES:
        raise ValueError(f"target rule must be one of {TARGET_RULES}, got {rule!r}")
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    if rule == "front":
        fa = front_areas(flops, ce)
        weights = np.asarray(fa.areas, dtype=np.float64)
        if weights.size and weights.sum() > 0:
            i = int(torch.multinomial(torch.from_numpy(weights), 1, generator=generator))
            a, b = (float(v) for v in np.asarray(fa.bounds)[i])
            return a + u * (b - a)
    return lo + u * (hi - lo)


@dataclass(frozen=True)
class SearchResult:
    """The candidate of :func:`binary_search` closest to the target."""

    alpha: Tensor       # (d,) float64
    flops: float        # its exact normalized FLOPs
    lam_flops: float    # the weight that produced it
    steps: int          # optimizations run (<= max_steps)
    error: float        # |flops - target|


def binary_search(solve: Callable[[float], Tensor], exact_flops: Callable[[Tensor], Tensor],
                  target: float, *, eps: float, max_steps: int) -> SearchResult:
    """Binary search on ``lam_F in [0, 1]`` (start 0.5) so that ``solve(lam_F)`` costs ``target``.

    ``solve(lam)`` returns the ``(d,)`` minimizer of the scalarization with FLOPs weight ``lam``;
    ``exact_flops`` maps ``(n, d) -> (n,)`` normalized FLOPs. A candidate costing more than the
    target raises ``lam_F`` (FLOPs matter more), otherwise lowers it. Stops once
    ``|F - target| <= eps`` or after ``max_steps`` optimizations, and returns the candidate closest
    to the target over all steps (the first of equally close ones).
    """
    lam, lam_min, lam_max = 0.5, 0.0, 1.0
    best: SearchResult | None = None
    for step in range(1, max_steps + 1):
        alpha = solve(lam)
        f = float(exact_flops(alpha.reshape(1, -1))[0])
        err = abs(f - target)
        if best is None or err < best.error:
            best = SearchResult(alpha, f, lam, step, err)
        if err <= eps:
            break
        if f > target:
            lam_min, lam = lam, (lam + lam_max) / 2
        else:
            lam_max, lam = lam, (lam + lam_min) / 2
    assert best is not None, "max_steps must be >= 1"
    return SearchResult(best.alpha, best.flops, best.lam_flops, step, best.error)
