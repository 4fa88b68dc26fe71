"""The learned front: BN calibration, selection on the validation split, test reporting (DESIGN §6).

    front, candidates, bn_stats = build_front(net, history, data, candidate_ce=history_ce)
    save_zoo_model(path, net, front, bn_stats, candidates=candidates, ...)

Procedure, for the candidate set = ``uniform_grid`` uniform widths from ``w0`` to 1 (both
included) + the configs of ``candidates`` (only their non-dominated set in (MACs, CE) when
``candidate_ce`` is given, rows with a non-finite CE dropped; at most ``max_candidates`` of them, spread over log-MFLOPs),
deduplicated by channel vector (the first occurrence, grid first, is kept):

1. **calibrate** each candidate's BN statistics on the first ``calib_images`` images of
   ``data.calib`` (no augmentation, fixed order; the batches are built once and reused);
2. **select** on ``data.val`` (the first ``val_images`` images, or all when ``None``): the
   non-dominated set in (MACs ↓, val accuracy ↑); if larger than ``max_configs``, a subset spread
   over log-MFLOPs (greedy farthest point, the smallest and largest always kept);
3. **report**: test accuracy of the kept configurations only. The test set is read after
   selection is final and never influences it.

Ids are ``c00, c01, ...`` in ascending MFLOPs. The stored ``val_acc`` is the accuracy the selection
used (on the first ``val_images`` validation images when bounded). Every other calibrated candidate
is returned too (ids ``k00, k01, ...`` in ascending MFLOPs, with its BN statistics and ``val_acc``,
no test accuracy), for fronts on other costs chosen later, e.g. latency on a deployment host.

Cost: one calibration pass (``calib_images``) plus one validation pass per candidate, which
dominates; ``max_candidates`` and ``val_images`` bound it. Test evaluation is ``len(front)``
passes over ``data.test``. Measured for ResNet20 at 28x28 (one thread, CPU time per image at
batch 256, full width / 0.66 / 0.316): validation 1.06 / 0.73 / 0.25 ms, calibration (batch-
statistics forward plus moment accumulation) 2.3 / 1.3 / 0.7 ms; so a mid-width candidate with
2000 calibration and 5000 validation images costs about 6 CPU-seconds, 2000 + 2000 about 4.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from pareco.calibrate import calibrate_bn
from pareco.evaluate import evaluate, eval_mode
from pareco.models.base import SlimmableNet
from pareco.pareto import nondominated
from pareco.slim import BNStats
from pareco.weightfile import FrontConfig, front_config

log = logging.getLogger(__name__)

CACHE_BYTES = 1 << 30
"""Evaluation batches up to this size (float32 images) are materialized once and reused."""


class _Batches:
    """The first ``n`` items of a dataset as in-order ``(images, labels)`` batches.

    Materialized on ``device`` at construction when they fit in :data:`CACHE_BYTES`, otherwise
    re-read through a ``DataLoader`` on every iteration (large images, e.g. ImageNet).
    """

    def __init__(self, dataset: Dataset, n: int | None, batch_size: int,
                 device: torch.device | str) -> None:
        total = len(dataset)  # type: ignore[arg-type]
        n = total if n is None else min(int(n), total)
        self.subset = Subset(dataset, range(n)) if n < total else dataset
        self.n, self.batch_size, self.device = n, batch_size, device
        self.cached: list[tuple[Tensor, Tensor]] | None = None
        if n and _item_bytes(dataset) * n <= CACHE_BYTES:
            self.cached = [(x.to(device), torch.as_tensor(y).to(device)) for x, y in self._read()]

    def _read(self) -> Iterator[tuple[Tensor, Tensor]]:
        yield from DataLoader(self.subset, batch_size=self.batch_size, shuffle=False, num_workers=0)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.cached) if self.cached is not None else self._read()

    def images(self) -> Iterator[Tensor]:
        return (x for x, _ in self)


class FrontResult(NamedTuple):
    """What :func:`build_front` returns: the front, the other calibrated candidates, and
    ``id -> BN statistics`` for all of them."""

    front: list[FrontConfig]
    candidates: list[FrontConfig]
    bn_stats: dict[str, BNStats]


def _item_bytes(dataset: Dataset) -> int:
    x = dataset[0][0]
    return x.numel() * 4 if isinstance(x, Tensor) else 1 << 40


def _check_candidates(net: SlimmableNet, candidates: Tensor, candidate_ce: Tensor | None,
                      max_candidates: int | None) -> Tensor:
    space = net.width_space
    c = torch.as_tensor(candidates, dtype=torch.float64).cpu()
    if c.dim() != 2 or (c.numel() and c.shape[1] != space.dim):
        raise ValueError(f"candidates must be an (n, {space.dim}) tensor of width multipliers, "
                         f"got shape {tuple(c.shape)}")
    c = c.reshape(-1, space.dim)
    rows = torch.tensor([space.validate(row) for row in c], dtype=torch.float64)
    rows = rows.reshape(-1, space.dim)
    if len(rows) == 0:
        return rows
    macs = net.macs_batch(rows)
    if candidate_ce is not None:
        ce = torch.as_tensor(candidate_ce, dtype=torch.float64).cpu().reshape(-1)
        if ce.shape[0] != rows.shape[0]:
            raise ValueError(f"candidate_ce has {ce.shape[0]} entries for {rows.shape[0]} candidates")
        finite = torch.isfinite(ce)  # a diverged evaluation (NaN/inf CE) is never a candidate
        rows, macs, ce = rows[finite], macs[finite], ce[finite]
        if len(rows) == 0:
            return rows
        keep = torch.as_tensor(nondominated(torch.stack([macs, ce], dim=1), [False, False]))
        rows, macs = rows[keep], macs[keep]
    if max_candidates is not None and len(rows) > max_candidates:
        order = torch.argsort(macs, stable=True)
        pick = spread_subset(macs[order].numpy(), max_candidates)
        rows = rows[order[torch.as_tensor(pick)]]
    return rows


def candidate_set(net: SlimmableNet, candidates: Tensor, candidate_ce: Tensor | None = None,
                  uniform_grid: int = 8,
                  max_candidates: int | None = 48) -> list[tuple[float, ...]]:
    """The configurations :func:`build_front` evaluates, in evaluation order (see module doc)."""
    if max_candidates is not None and max_candidates < 2:
        raise ValueError(f"max_candidates must be at least 2 or None, got {max_candidates}")
    if uniform_grid < 0 or uniform_grid == 1:
        raise ValueError(f"uniform_grid must be 0 or >= 2 (it includes w0 and 1), got {uniform_grid}")
    space = net.width_space
    grid = torch.linspace(space.lower, 1.0, uniform_grid, dtype=torch.float64)
    configs = [space.uniform(float(w)) for w in grid]
    rows = _check_candidates(net, candidates, candidate_ce, max_candidates)
    configs += [tuple(r) for r in rows.tolist()]
    seen: set[tuple[int, ...]] = set()
    out = []
    for alpha in configs:
        ch = space.channels(alpha)
        if ch not in seen:
            seen.add(ch)
            out.append(space.validate(alpha))
    if not out:
        raise ValueError("no candidate configurations: pass candidates or uniform_grid >= 2")
    return out


def spread_subset(mflops: np.ndarray | list[float], k: int) -> list[int]:
    """Indices (ascending) of ``k`` points spread over log-MFLOPs; ends always kept.

    Greedy farthest-point: start from the smallest and the largest, repeatedly add the point
    farthest (in log-MFLOPs) from those already kept; ties go to the lower index.
    """
    x = np.log(np.asarray(mflops, dtype=np.float64))
    n = len(x)
    if k >= n:
        return list(range(n))
    if k < 2:
        raise ValueError(f"max_configs must be at least 2, got {k}")
    lo, hi = int(np.argmin(x)), int(np.argmax(x))
    kept = [lo] if lo == hi else [lo, hi]
    dist = np.min(np.abs(x[:, None] - x[kept][None, :]), axis=1)
    while len(kept) < k:
        i = int(np.argmax(dist))
        kept.append(i)
        dist = np.minimum(dist, np.abs(x - x[i]))
        dist[kept] = -1.0
    return sorted(kept)


def build_front(net: SlimmableNet, candidates: Tensor, data: Any, *,
                candidate_ce: Tensor | None = None, calib_images: int = 2000,
                val_images: int | None = None, max_configs: int = 12, uniform_grid: int = 8,
                max_candidates: int | None = 48,
                batch_size: int = 256, device: torch.device | str = "cpu", seed: int = 0,
                progress: bool = False) -> FrontResult:
    """Calibrate, select and report the front of ``net`` (see the module doc for the procedure).

    ``candidates``: ``(n, d)`` float64 width multipliers (e.g. the history H; may be empty);
    ``candidate_ce``: their latest cross-entropies, to keep only H's non-dominated set;
    ``data``: a :class:`pareco.data.DataBundle` (``calib``, ``val``, ``test`` are used);
    ``calib_images``: BN calibration images per config (at least 2);
    ``val_images``: bound on the validation images used for selection (``None``: all);
    ``max_candidates``: bound on the configs taken from ``candidates`` (after the CE filter),
    thinned by :func:`spread_subset` over log-MFLOPs (``None``: no bound).
    ``net`` must already be on ``device``; its weights are not modified. ``seed`` seeds torch's
    RNG for the duration (the procedure itself is deterministic). Returns a
    :class:`FrontResult`; front and candidates are sorted by MFLOPs.
    """
    if calib_images < 2:
        raise ValueError(f"calib_images must be at least 2, got {calib_images}")
    if max_configs < 2:
        raise ValueError(f"max_configs must be at least 2, got {max_configs}")
    if val_images is not None and val_images < 1:
        raise ValueError(f"val_images must be positive or None, got {val_images}")
    configs = candidate_set(net, candidates, candidate_ce, uniform_grid, max_candidates)
    with torch.random.fork_rng(devices=[]), eval_mode(net):
        torch.manual_seed(seed)
        stats, val_acc = calibrate_and_validate(net, configs, data, calib_images=calib_images,
                                                val_images=val_images, batch_size=batch_size,
                                                device=device, progress=progress)
        macs = [net.macs(alpha) for alpha in configs]
        chosen = select(np.asarray(macs, dtype=np.float64), np.asarray(val_acc), max_configs)
        test = _Batches(data.test, None, batch_size, device)  # only now: reporting only
        front, bn = [], {}
        width = max(2, len(str(len(chosen) - 1)))
        for rank, i in enumerate(chosen):
            cid = f"c{rank:0{width}d}"
            test_acc = (evaluate(net, configs[i], stats[i], test, device=device).accuracy
                        if test.n else None)  # no test split: nothing to report
            front.append(front_config(net, cid, configs[i], val_acc[i], test_acc))
            bn[cid] = stats[i]
    rest = sorted(set(range(len(configs))) - set(chosen), key=lambda i: (macs[i], i))
    width = max(2, len(str(len(rest) - 1)))
    candidates = []
    for rank, i in enumerate(rest):
        cid = f"k{rank:0{width}d}"
        candidates.append(front_config(net, cid, configs[i], val_acc[i]))
        bn[cid] = stats[i]
    return FrontResult(front, candidates, bn)


def calibrate_and_validate(net: SlimmableNet, configs: list[tuple[float, ...]], data: Any, *,
                           calib_images: int, val_images: int | None, batch_size: int,
                           device: torch.device | str, progress: bool = False
                           ) -> tuple[list[BNStats], list[float]]:
    """Steps 1-2 of the procedure for every config: its BN statistics calibrated on the first
    ``calib_images`` images of ``data.calib`` and its accuracy on the first ``val_images``
    (``None``: all) of ``data.val``, in the order of ``configs``. ``net`` is in eval mode."""
    calib = _Batches(data.calib, calib_images, batch_size, device)
    if calib.n < 2:
        raise ValueError(f"BN calibration needs at least 2 images, data.calib has {calib.n}")
    val = _Batches(data.val, val_images, batch_size, device)
    if val.n == 0:
        raise ValueError("the validation split is empty: front selection needs it")
    stats, val_acc = [], []
    t0 = time.perf_counter()
    for alpha in _progress(configs, progress, "front: calibrate + validate"):
        s = calibrate_bn(net, alpha, calib.images(), device)
        stats.append(s)
        val_acc.append(evaluate(net, alpha, s, val, device=device).accuracy)
    log.info("front: %d candidates, %.2f s each (%d calibration + %d validation images)",
             len(configs), (time.perf_counter() - t0) / max(1, len(configs)), calib.n, val.n)
    return stats, val_acc


def select(macs: np.ndarray, val_acc: np.ndarray, max_configs: int) -> list[int]:
    """Indices, by ascending MACs, of the non-dominated (MACs ↓, acc ↑) points, at most
    ``max_configs`` of them spread over log-MACs (:func:`spread_subset`)."""
    nd = nondominated(np.stack([macs, val_acc], axis=1), maximize=[False, True])
    nd = nd[np.argsort(macs[nd], kind="stable")]
    return [int(nd[j]) for j in spread_subset(macs[nd], max_configs)]


def _progress(items: list, enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a training dependency
        return items
    return tqdm(items, desc=desc, unit="config", dynamic_ncols=True)
