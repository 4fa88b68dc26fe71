"""Search more width configurations on a trained model's frozen weights, and re-select its front.

    python -m pareco.refine --weights runs/x/model.safetensors --configs 64

PareCO's history H is searched while the weights still change: the configurations proposed early
in training were the best guesses for weights that no longer exist. This runs the post-hoc
MOBO-RS search (TwoStage's second stage, :mod:`pareco.training.posthoc`) on the final weights,
seeded with every configuration the weight file already holds (front and calibrated candidates),
and adds ``configs`` new ones:

1. **search**: each seed and each new configuration is evaluated once on one fixed held-out batch
   of the validation split (``pareco.eval_batch`` images, batch-statistics BN, as during
   training); the search (the recipe's ``pareco`` settings, ``m`` proposals per iteration)
   proposes until ``configs`` new ones are in H;
2. **filter**: the new configurations non-dominated in (MACs, CE) among all of H, the CE averaged
   over two fresh held-out batches as for PareCO's final filter, are calibrated and validated
   exactly as the front was (the recipe's calibration images, the whole validation split);
3. **select**: the front is re-selected on validation accuracy from every calibrated configuration,
   old and new (:func:`pareco.front.select`, the recipe's ``front.max_configs``); test accuracy is
   measured for the chosen configurations that have none yet, after selection is final.

The test set never influences a choice. The weight file is rewritten atomically (in place unless
``--out``); its ``training.refine`` section records what was done. On a Slim model this is
TwoStage's second stage after the fact, started from the uniform grid instead of warm-up widths.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pareco.candidates import add_candidates, load_training_data
from pareco.cliargs import add_weight_file_tool_options, positive_int
from pareco.data import DataError
from pareco.evaluate import evaluate
from pareco.front import select
from pareco.pareto import area_under_front, nondominated
from pareco.training.history_eval import evaluate_history
from pareco.training.recipe import Recipe, RecipeError, from_dict
from pareco.weightfile import FrontConfig, WeightFileError, ZooModel, load_zoo_model, save_zoo_model

def seed_configs(zoo: ZooModel) -> Tensor:
    """The weight file's configurations (front and candidates) other than the smallest and the
    full one (the search's own anchors), one per channel vector, in MACs order."""
    space = zoo.net.width_space
    seen = {space.channels(space.smallest), space.channels(space.full)}
    rows = []
    for c in zoo.configs:
        if c.channels not in seen:
            seen.add(c.channels)
            rows.append(c.alpha)
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, space.dim)


def search_new(zoo: ZooModel, data: Any, recipe: Recipe, count: int,
               seed: int) -> tuple[Tensor, dict]:
    """``count`` new configurations proposed on ``zoo``'s frozen weights and the CE filter's
    survivors among them (step 1-2 of the module doc); returns ``(kept, stats)``."""
    from pareco.search import ParetoSearch, cost_functions  # BoTorch: imported when searching
    from pareco.training.loop import HeldOut
    from pareco.training.posthoc import PosthocSearch
    from pareco.training.run import FINAL_CE_BATCHES  # PareCO's final filter, the same average

    net, p = zoo.net, recipe.pareco
    fixed = HeldOut(data.val, p.eval_batch, seed + 3).draw()
    fresh = HeldOut(data.val, p.eval_batch, seed + 2)

    def ce_fixed(alphas: Tensor) -> Tensor:
        return evaluate_history(net, alphas, *fixed)

    def ce_fresh(alphas: Tensor) -> Tensor:
        return evaluate_history(net, alphas, *fresh.draw())

    search = ParetoSearch(net.width_space, *cost_functions(net, p.cost, p.latency_table),
                          m=p.m, warmup=2, eps=p.eps, max_steps=p.max_steps, solver=p.solver,
                          targets=p.targets, seed=seed, **({} if p.beta is None else {"beta": p.beta}))
    search.extend(seed_configs(zoo))  # H: the two anchors, then every calibrated configuration
    seeds = len(search.history)
    posthoc = PosthocSearch(search, seeds + count, ce_fixed)
    errors, duplicates = [], 0
    while not posthoc.done:
        stats = posthoc.iterate()
        errors += stats.get("flops_error", [])
        duplicates += stats.get("duplicates", 0)
    ce = posthoc.finalize(ce_fresh, FINAL_CE_BATCHES)
    h = search.history
    keep = nondominated(torch.stack([net.macs_batch(h), ce], dim=1).numpy(), [False, False])
    kept = h[[int(i) for i in sorted(keep) if i >= seeds]]
    return kept, {"searched": len(h) - seeds, "kept": len(kept), "seeds": seeds,
                  "mean_flops_error": float(np.mean(errors)) if errors else None,
                  "duplicates": duplicates, "search_s": posthoc.eval_s + posthoc.propose_s}


def reselect(zoo: ZooModel, data: Any, pool: list[FrontConfig], bn: dict, max_configs: int,
             batch_size: int) -> tuple[list[FrontConfig], list[FrontConfig], dict]:
    """Step 3 on ``pool`` (each config's statistics in ``bn`` by its id): the front chosen on
    validation accuracy, ids ``c00, c01, ...``, its test accuracy kept where the old front
    measured it and measured now otherwise; the rest as candidates ``k00, k01, ...`` by MACs;
    and the statistics by the new ids."""
    macs = np.array([c.macs for c in pool], dtype=np.float64)
    chosen = select(macs, np.array([c.accuracy for c in pool]), max_configs)
    old_test = {c.channels: c.test_acc for c in zoo.front}
    rest = sorted(set(range(len(pool))) - set(chosen), key=lambda i: (pool[i].macs, i))
    front, candidates, stats = [], [], {}
    for prefix, indices, out in (("c", chosen, front), ("k", rest, candidates)):
        width = max(2, len(str(len(indices) - 1)))
        for rank, i in enumerate(indices):
            c, cid = pool[i], f"{prefix}{rank:0{width}d}"
            test = None
            if prefix == "c":
                test = old_test.get(c.channels)
                if test is None and len(data.test):  # a dataset without a test split: none
                    test = evaluate(zoo.net, c.alpha, bn[c.id], data.test,
                                    batch_size=batch_size).accuracy
            out.append(FrontConfig(cid, c.alpha, c.channels, c.macs, c.params, c.val_acc, test))
            stats[cid] = bn[c.id]
    return front, candidates, stats


def refine(zoo: ZooModel, data: Any, count: int, *, seed: int = 0,
           progress: bool = False) -> tuple[list[FrontConfig], list[FrontConfig], dict, dict]:
    """Steps 1-3 of the module doc on ``zoo``. Returns ``(front, candidates, bn_stats, stats)``:
    the new front, every other calibrated configuration, the statistics of all by id, and what
    was done (counts, seconds, the search's mean |F - target| and duplicates)."""
    training = zoo.meta.get("training") or {}
    try:
        recipe = from_dict(training["recipe"])
    except (KeyError, TypeError, RecipeError) as e:
        raise WeightFileError(f"the weight file's training section holds no usable recipe "
                              f"({e})") from None
    t0 = time.perf_counter()
    kept, stats = search_new(zoo, data, recipe, count, seed)
    f = recipe.front
    new = [zoo.net.width_space.validate(r) for r in kept.tolist()]
    if new:
        candidates, bn = add_candidates(zoo, data, new, calib_images=f.calib_images,
                                        val_images=f.val_images, batch_size=f.batch_size,
                                        progress=progress)
    else:  # every new configuration was dominated in CE: nothing to calibrate
        candidates, bn = list(zoo.candidates), dict(zoo.bn_stats)
    front, candidates, bn = reselect(zoo, data, zoo.front + candidates, bn, f.max_configs,
                                     f.batch_size)
    new_channels = {zoo.net.width_space.channels(a) for a in new}
    stats["new_on_front"] = sum(c.channels in new_channels for c in front)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return front, candidates, bn, stats


def area(front: list[FrontConfig], lo: float, hi: float, key: str) -> float:
    """Area under ``front``'s ``key`` accuracy staircase over ``[lo, hi]`` MFLOPs, in %."""
    return 100 * area_under_front([c.mflops for c in front], [getattr(c, key) for c in front], lo, hi)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pareco.refine", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True, help="the weight file to refine")
    p.add_argument("--out", type=Path, help="where to write the result (default: in place)")
    p.add_argument("--configs", type=positive_int, default=64,
                   help="new configurations to search (default 64)")
    p.add_argument("--seed", type=int, help="seed of the held-out batches and the search "
                   "(default: the weight file's training seed)")
    add_weight_file_tool_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    # gpytorch (via botorch) decorates functions with torch.jit.script, deprecated in torch 2.9+
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        zoo = load_zoo_model(a.weights)
        training = dict(zoo.meta.get("training") or {})
        seed = int(training.get("seed", 0)) if a.seed is None else a.seed
        data = load_training_data(zoo, a.data_dir, not a.no_download)
        old = list(zoo.front)
        front, candidates, bn, stats = refine(zoo, data, a.configs, seed=seed,
                                              progress=not a.quiet)
        training["refine"] = {"configs": a.configs, "seed": seed, **stats}
        save_zoo_model(a.out or a.weights, zoo.net, front, bn, candidates=candidates,
                       preprocessing=zoo.preprocessing, classes=zoo.classes, training=training)
    except (WeightFileError, DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    lo, hi = min(c.mflops for c in old), max(c.mflops for c in old)
    print(f"{a.out or a.weights}: {stats['searched']} configurations searched, {stats['kept']} "
          f"calibrated, {stats['new_on_front']} of them on the front of {len(front)} (was "
          f"{len(old)}) in {stats['seconds']:.0f} s")
    for key in ("val_acc", "test_acc"):
        print(f"  area under the {key[:-4]} accuracy over [{lo:.3f}, {hi:.3f}] MFLOPs: "
              f"{area(old, lo, hi, key):.2f} % -> {area(front, lo, hi, key):.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
