"""Pareto utilities: non-dominated filtering, the under-exploration areas of PareCO's eq. (4), and
summary numbers that compare fronts (area under the accuracy-MFLOPs staircase, 2-D hypervolume).

Inputs may be numpy arrays or torch tensors (any real dtype, any device); array-valued results
come back as the same kind (a torch input gives float64 CPU tensors), scalars as Python floats.
:func:`nondominated` always returns a numpy integer index array (it indexes both kinds).

    >>> nondominated([[1.0, 0.9], [2.0, 0.5], [3.0, 0.7]], maximize=[False, False])
    array([0, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

_CHUNK = 1024  # rows compared at once by nondominated (bounds memory at _CHUNK * n * k bools)


def _as_numpy(x: Any, name: str, ndim: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {a.shape}")
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN")
    return a


def _like(a: np.ndarray, ref: Any) -> np.ndarray | torch.Tensor:
    return torch.from_numpy(a) if isinstance(ref, torch.Tensor) else a


def _min_form(points: Any, maximize: Sequence[bool]) -> np.ndarray:
    p = _as_numpy(points, "points", 2)
    if len(maximize) != p.shape[1]:
        raise ValueError(f"maximize has {len(maximize)} entries but points have {p.shape[1]} columns")
    sign = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    return p * sign


def nondominated(points: Any, maximize: Sequence[bool]) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of an ``(n, k)`` array of objective values.

    ``maximize[j]`` says whether column ``j`` is maximized (else minimized). Row ``i`` is dominated
    when another row is at least as good in every objective and strictly better in one. Exact
    duplicates do not dominate each other; of a group of identical non-dominated rows only the
    first (lowest index) is kept, so the result is deterministic.
    """
    p = _min_form(points, maximize)
    n = p.shape[0]
    keep = np.ones(n, dtype=bool)
    for start in range(0, n, _CHUNK):
        block = p[start:start + _CHUNK]                                   # (b, k)
        le = (p[None, :, :] <= block[:, None, :]).all(axis=2)            # (b, n): j weakly better
        lt = (p[None, :, :] < block[:, None, :]).any(axis=2)
        eq = (p[None, :, :] == block[:, None, :]).all(axis=2)
        earlier = np.arange(n)[None, :] < np.arange(start, start + block.shape[0])[:, None]
        keep[start:start + block.shape[0]] = ~((le & lt) | (eq & earlier)).any(axis=1)
    return np.flatnonzero(keep)


class FrontAreas(NamedTuple):
    """Result of :func:`front_areas`.

    ``index``: positions (into the inputs) of the non-dominated points, sorted by FLOPs ascending
    (``k`` of them). ``bounds``: ``(k - 1, 2)`` FLOPs intervals ``[F_1, F_2], ..., [F_{k-1}, F_k]``
    between consecutive front points. ``areas``: ``(k - 1,)`` non-negative under-exploration area
    of each interval.
    """

    index: np.ndarray
    bounds: np.ndarray | torch.Tensor
    areas: np.ndarray | torch.Tensor


def front_areas(flops: Any, ce: Any) -> FrontAreas:
    """Eq. (4) of the paper: the area between consecutive points of the (FLOPs, CE) front.

    The front is the non-dominated set of ``(flops, ce)`` (both minimized), sorted by FLOPs:
    ``F_1 < ... < F_k`` with ``CE_1 > ... > CE_k``. Interval ``i`` gets
    ``A_i = (F_{i+1} - F_i) (CE_i - CE_{i+1})``.

    There are no end segments: nothing is known beyond the front's ends, and a target drawn there
    is one no configuration can reach (an earlier version extrapolated them and put 65-99 % of the
    targets there). PareCO keeps the full model and the smallest configuration in its history, so
    the front spans the whole FLOPs range. A single-point front has no interval (empty arrays).
    ``flops`` and ``ce`` are 1-D, same length, at least one point.

        >>> front_areas([0.2, 0.5, 1.0], [2.0, 1.0, 0.8]).areas
        array([0.3, 0.1])
    """
    f = _as_numpy(flops, "flops", 1)
    c = _as_numpy(ce, "ce", 1)
    if f.shape != c.shape or f.size == 0:
        raise ValueError(f"flops and ce must be non-empty and of equal length, got {f.size} and {c.size}")
    idx = nondominated(np.stack([f, c], axis=1), maximize=[False, False])
    idx = idx[np.argsort(f[idx], kind="stable")]
    fk, ck = f[idx], c[idx]
    bounds = np.stack([fk[:-1], fk[1:]], axis=1)
    areas = np.diff(fk) * -np.diff(ck)
    return FrontAreas(idx, _like(bounds, flops), _like(areas, flops))


def area_under_front(mflops: Any, acc: Any, lo: float, hi: float) -> float:
    """Mean over budgets ``b in [lo, hi]`` of the best accuracy achievable within ``b``.

    The accuracy-MFLOPs staircase is ``S(b) = max{acc_i : mflops_i <= b}`` (0 where no point fits
    the budget: a method with no model that cheap earns nothing there). Returns
    ``integral_lo^hi S(b) db / (hi - lo)``, in the units of ``acc``: it reads as a mean accuracy,
    higher is better, and it is comparable between methods evaluated on the same ``[lo, hi]``.
    """
    m = _as_numpy(mflops, "mflops", 1)
    a = _as_numpy(acc, "acc", 1)
    if m.shape != a.shape:
        raise ValueError(f"mflops and acc must have equal length, got {m.size} and {a.size}")
    if not hi > lo:
        raise ValueError(f"need lo < hi, got [{lo}, {hi}]")
    order = np.argsort(m, kind="stable")
    best = np.maximum.accumulate(a[order])                 # staircase value from each point on
    edges = np.clip(np.concatenate([m[order], [hi]]), lo, hi)
    return float(np.sum(best * np.diff(edges))) / (hi - lo)


def hypervolume_2d(points: Any, ref: Sequence[float], maximize: Sequence[bool]) -> float:
    """Area dominated by ``points`` (``(n, 2)``) and bounded by the reference point ``ref``.

    ``ref`` must be worse than the interesting points in both objectives (larger for minimized,
    smaller for maximized); points not strictly better than ``ref`` in both contribute nothing.
    """
    p = _min_form(points, maximize)
    if p.shape[1] != 2 or len(ref) != 2:
        raise ValueError("hypervolume_2d needs 2 objectives")
    r = np.asarray(ref, dtype=np.float64) * np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    p = p[(p < r).all(axis=1)]
    if p.size == 0:
        return 0.0
    p = p[nondominated(p, [False, False])]
    p = p[np.argsort(p[:, 0], kind="stable")]            # x ascending, hence y descending
    widths = np.diff(np.concatenate([p[:, 0], [r[0]]]))
    return float(np.sum(widths * (r[1] - p[:, 1])))
