"""Cost of one refresh of K proposals: the direct solver one target at a time vs in one batch.

    python bench/proposals.py                            # K = 2, 16, 64; 3 seeds; ~3 min on one core
    python bench/proposals.py --counts 64 --seeds 0 --out /tmp/proposals.json

On the width space and exact FLOPs of the half-width ResNet20 of the ``resolve`` protocol (6
channel groups), a search is warmed up and grown to |H| = ``--history`` on a synthetic CE
landscape (CE falling with every group's width, groups weighted unequally). At that H, the GP
and the scored candidate pool of a refresh are built once per (seed, K), and the same K targets
are solved both ways, interleaved: :meth:`DirectSolver.solve` per target, each excluding the
earlier results (how :meth:`ParetoSearch.propose` solved them before), and
:meth:`DirectSolver.solve_each` (one batched refinement, what it does now). Printed: seconds per
refresh for each, their ratio, and whether both returned the same configurations.
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

from bench.common import environment, format_table, load_average
from pareco import models
from pareco.search import ParetoSearch, flops_functions
from pareco.search.direct import DirectSolver
from pareco.search.gp import fit_ce_gp
from pareco.search.sampling import draw_target


def synthetic_ce(alpha: torch.Tensor) -> torch.Tensor:
    """CE in nats: 0.3 + 0.5 / (weighted width sum), a little ripple; lower for wider groups."""
    w = torch.linspace(1.0, 2.0, alpha.shape[1], dtype=torch.float64)
    return 0.3 + 0.5 / (alpha * w).sum(-1) + 0.01 * torch.sin(17 * alpha).sum(-1)


def grown_search(seed: int, history: int) -> ParetoSearch:
    """A search on half-width ResNet20 with ``history`` rows in H (2 proposals per refresh)."""
    net = models.build("resnet20", num_classes=10, in_channels=1, image_size=28, width_factor=0.5)
    search = ParetoSearch(net.width_space, *flops_functions(net), m=2, warmup=10, seed=seed)
    while len(search.history) < history:
        ce = None if search.warming_up else synthetic_ce(search.history)
        search.extend(search.propose(ce))
    return search


def refresh_solver(search: ParetoSearch, seed: int) -> tuple[DirectSolver, list, torch.Generator]:
    """The GP, scored pool and target generator of one refresh, built as ``propose`` does."""
    y = synthetic_ce(search.history)
    gen = torch.Generator().manual_seed(seed)
    gp = fit_ce_gp(search.history, y, search.space.lower)
    h_flops = search.exact_flops(search.history)
    return search.direct_solver(gp, y, h_flops, gen), [h_flops, y, *search.flops_range], gen


def one_cell(search: ParetoSearch, seed: int, count: int) -> dict[str, Any]:
    solver, target_args, gen = refresh_solver(search, seed)
    targets = [draw_target(*target_args, gen, search.targets) for _ in range(count)]
    t0 = time.perf_counter()
    taken: set[tuple[int, ...]] = set()
    one_by_one = []
    for t in targets:
        one_by_one.append(solver.solve(t, search.eps, taken))
        taken.add(search.space.channels(one_by_one[-1].alpha.tolist()))
    t1 = time.perf_counter()
    batched = solver.solve_each(targets, search.eps)
    t2 = time.perf_counter()
    same = all(torch.allclose(a.alpha, b.alpha) for a, b in zip(one_by_one, batched))
    return {"seed": seed, "count": count, "one_by_one_s": t1 - t0, "batched_s": t2 - t1,
            "same_configs": same,
            "max_flops_error": max(r.error for r in batched)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/proposals.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", default="2,16,64", help="proposals per refresh K (default 2,16,64)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--history", type=int, default=38,
                   help="|H| at the measured refresh (default 38, the default recipe's)")
    p.add_argument("--out", type=Path, help="result JSON (default: print only)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    counts = [int(c) for c in a.counts.split(",") if c.strip()]
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    load0 = load_average()
    cells = []
    for seed in seeds:
        search = grown_search(seed, a.history)
        cells += [one_cell(search, seed, k) for k in counts]
    rows = []
    for k in counts:
        mine = [c for c in cells if c["count"] == k]
        one, batch = (float(np.mean([c[f] for c in mine])) for f in ("one_by_one_s", "batched_s"))
        rows.append([k, f"{one:.3f}", f"{batch:.3f}", f"{one / batch:.1f}",
                     all(c["same_configs"] for c in mine)])
    print(format_table(["K", "one by one s", "batched s", "ratio", "same configs"], rows,
                       title=f"one refresh, |H| = {a.history}, mean of seeds {seeds}"))
    load1 = load_average()
    print(f"load average {load0} -> {load1}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"benchmark": "proposals", "environment": environment(),
                                     "load_before": load0, "load_after": load1,
                                     "history": a.history, "cells": cells}, indent=1) + "\n")
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
