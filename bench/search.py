"""Search benchmark: PareCO's two solvers and two target rules on a CE landscape with a known front.

    python bench/search.py                      # 3 seeds x 12 refreshes, ~2 min on one core
    python bench/search.py --seeds 0,1 --refreshes 20 --out /tmp/search.json

The landscape (3 channel groups of 64, FLOPs quadratic in the widths, CE decreasing in every
width, group ``a`` mattering most) is the one of ``tests/test_search.py``; its best CE at any
FLOPs value is found by a dense random sample of the box. Each variant runs the real
:class:`pareco.search.ParetoSearch` (uniform warm-up of 20, M = 2, eps = 0.02) fed the exact CE,
interleaved with the others per seed, and reports per proposal:

- ``flops_error``: |F(proposal) - target| in normalized FLOPs (the search's own miss);
- ``regret``: CE(proposal) - the best CE within eps of the target (how good the point is);
- ``propose_s``: wall time of one refresh (GP fit + M proposals), measured side by side;
- ``duplicates``: proposals of a refresh with the same channels as another;

and per run the hypervolume of H's true (FLOPs, CE) front with reference (1.0, 2.5).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench.common import environment, load_average
from pareco.pareto import hypervolume_2d
from pareco.search import ParetoSearch
from pareco.width import ChannelGroup, WidthSpace

SPACE = WidthSpace((ChannelGroup("a", 64), ChannelGroup("b", 64), ChannelGroup("c", 64)), 0.316)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
IMPORTANCE = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
VARIANTS = {"direct/front": ("direct", "front"), "tchebyshev/front": ("tchebyshev", "front"),
            "direct/uniform": ("direct", "uniform")}


def smooth_flops(alpha: torch.Tensor) -> torch.Tensor:
    return (alpha**2 * WEIGHTS).sum(-1)


def exact_flops(alpha: torch.Tensor) -> torch.Tensor:
    return ((SPACE.channels_batch(alpha) / 64) ** 2 * WEIGHTS).sum(-1)


def true_ce(alpha: torch.Tensor) -> torch.Tensor:
    return 0.4 + 1.0 / (alpha * IMPORTANCE).sum(-1)


class BestCE:
    """The lowest CE within ``eps`` of a FLOPs target, over a dense random sample of the box."""

    def __init__(self, n: int = 200_000) -> None:
        dense = SPACE.sample(n, torch.Generator().manual_seed(0))
        self.flops, self.ce = exact_flops(dense), true_ce(dense)

    def __call__(self, target: float, eps: float) -> float:
        return float(self.ce[(self.flops - target).abs() <= eps].min())


def run(solver: str, targets: str, seed: int, refreshes: int, best: BestCE) -> dict[str, Any]:
    search = ParetoSearch(SPACE, smooth_flops, exact_flops, m=2, warmup=20, eps=0.02,
                          solver=solver, targets=targets, seed=seed)
    while search.warming_up:
        search.extend(search.propose(None))
    errors, regrets, times, duplicates = [], [], [], 0
    for _ in range(refreshes):
        alphas = search.propose(true_ce(search.history))
        stats = search.last_stats
        errors += stats["flops_error"]
        regrets += [float(true_ce(a[None])[0]) - best(t, 0.02)
                    for a, t in zip(alphas, stats["targets"])]
        times.append(stats["propose_s"])
        duplicates += stats["duplicates"]
        search.extend(alphas)
    points = torch.stack([exact_flops(search.history), true_ce(search.history)], dim=1)
    return {"flops_error": errors, "regret": regrets, "propose_s": times,
            "duplicates": duplicates,
            "hypervolume": hypervolume_2d(points, [1.0, 2.5], [False, False])}


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    cat = {k: np.concatenate([r[k] for r in runs]) for k in ("flops_error", "regret", "propose_s")}
    return {"mean_flops_error": float(cat["flops_error"].mean()),
            "max_flops_error": float(cat["flops_error"].max()),
            "share_within_eps": float((cat["flops_error"] <= 0.02).mean()),
            "mean_regret": float(cat["regret"].mean()),
            "mean_propose_s": float(cat["propose_s"].mean()),
            "duplicates": int(sum(r["duplicates"] for r in runs)),
            "hypervolume": [r["hypervolume"] for r in runs]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/search.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--refreshes", type=int, default=12, help="search refreshes per run")
    p.add_argument("--out", type=Path, help="result JSON (default: print only)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    best = BestCE()
    load0 = load_average()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for seed in seeds:  # interleaved: every variant of a seed before the next seed
        for name, (solver, targets) in VARIANTS.items():
            runs[name].append(run(solver, targets, seed, a.refreshes, best))
    results = {"benchmark": "search", "environment": environment(), "load_before": load0,
               "load_after": load_average(), "seeds": seeds, "refreshes": a.refreshes,
               "variants": {name: summarize(r) for name, r in runs.items()}}
    t = results["variants"]
    results["time_ratio_tchebyshev_vs_direct"] = (t["tchebyshev/front"]["mean_propose_s"]
                                                  / t["direct/front"]["mean_propose_s"])
    print(f"{'variant':18} {'mean |F-t|':>10} {'max':>7} {'in eps':>7} {'regret':>8} "
          f"{'s/refresh':>9} {'dups':>5}  hypervolume per seed")
    for name, s in t.items():
        print(f"{name:18} {s['mean_flops_error']:10.4f} {s['max_flops_error']:7.4f} "
              f"{s['share_within_eps']:7.2f} {s['mean_regret']:8.4f} {s['mean_propose_s']:9.3f} "
              f"{s['duplicates']:5d}  " + " ".join(f"{h:.5f}" for h in s["hypervolume"]))
    print(f"refresh time tchebyshev / direct: {results['time_ratio_tchebyshev_vs_direct']:.2f}x "
          f"(load {load0} -> {results['load_after']})")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
