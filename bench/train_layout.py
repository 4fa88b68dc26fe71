"""Training speed by memory format: NCHW against channels_last, side by side in one process.

    python bench/train_layout.py --threads 2 --out bench/results/train-layout-t2.json

For each recipe, two :class:`~pareco.training.loop.Trainer` objects are built from the same
seed on the recipe's real data (Fashion-MNIST by default), one with the network's 4-d weights in
the contiguous (NCHW) format and one in ``channels_last``
(:func:`pareco.training.run.training_layout` picks channels_last for one-thread CPU runs,
from this benchmark's figures). They then take turns: a
block of ``--steps`` sandwich steps each (the Slim policy: full, smallest and two uniform
widths), ``--rounds`` times, the first block of each discarded as warm-up. Both start from the
same weights and train the same batches, so their first step's losses must agree to float
rounding (the script fails otherwise); later steps drift apart by rounding only. Printed: the
median seconds per step of each format and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import environment, format_table, load_average  # noqa: E402
from pareco.cliargs import positive_int  # noqa: E402
from pareco.data import DataBundle, load_data  # noqa: E402
from pareco.training.loop import Trainer  # noqa: E402
from pareco.training.methods import UniformPolicy  # noqa: E402
from pareco.training.recipe import Recipe, load_recipe  # noqa: E402
from pareco.training.run import build_net  # noqa: E402

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
FIRST_STEP_RTOL = 1e-5  # same weights, same batch: the formats differ only in summation order


def make_trainer(recipe: Recipe, data: DataBundle, memory_format: torch.memory_format,
                 seed: int) -> Trainer:
    """A Slim-policy trainer of ``recipe`` on ``data`` with its 4-d weights in ``memory_format``."""
    net = build_net(recipe, data, seed).to(memory_format=memory_format)
    policy = UniformPolicy(net.width_space, recipe.pareco.m, seed + 1)
    return Trainer(net, data, recipe.train, recipe.run_epochs, policy=policy, seed=seed)


def time_recipe(name: str, steps: int, rounds: int, seed: int) -> dict[str, Any]:
    """Interleaved blocks of ``steps`` steps per format; seconds per step and the losses."""
    recipe = load_recipe(name)
    data = load_data(recipe.data.dataset)
    trainers = {k: make_trainer(recipe, data, f, seed) for k, f in FORMATS.items()}
    batches = trainers["nchw"].batches(0, 0)
    per_step: dict[str, list[float]] = {k: [] for k in FORMATS}
    losses: dict[str, list[float]] = {k: [] for k in FORMATS}
    for r in range(rounds + 1):  # round 0 warms both up
        block = [next(batches) for _ in range(steps)]
        for k, t in trainers.items():
            results = [t.train_step(x, y) for x, y in block]
            losses[k] += [res.loss for res in results]
            if r:
                per_step[k] += [len(x) / res.images_per_s for (x, _), res in zip(block, results)]
    first = abs(losses["nchw"][0] - losses["channels_last"][0]) / abs(losses["nchw"][0])
    if first > FIRST_STEP_RTOL:
        raise SystemExit(f"{name}: the formats' first-step losses differ by {first:.2e} "
                         f"(relative), more than rounding ({FIRST_STEP_RTOL:g}): the layouts do "
                         f"not compute the same step")
    worst = max(abs(a - b) / abs(a) for a, b in zip(losses["nchw"], losses["channels_last"]))
    med = {k: statistics.median(v) for k, v in per_step.items()}
    return {"recipe": name, "steps_per_format": len(per_step["nchw"]), "median_step_s": med,
            "ratio_channels_last_over_nchw": med["channels_last"] / med["nchw"],
            "first_step_relative_loss_difference": first,
            "max_relative_loss_difference": worst}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", default="resnet20-fashionmnist,resnet20_quarter-fashionmnist",
                    help="comma-separated recipe names (default: %(default)s)")
    ap.add_argument("--steps", type=positive_int, default=5,
                    help="steps per block (default: %(default)s)")
    ap.add_argument("--rounds", type=positive_int, default=4,
                    help="timed blocks per format (default: %(default)s)")
    ap.add_argument("--threads", type=positive_int, default=torch.get_num_threads(),
                    help="torch threads (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the results here (JSON)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment({"torch": args.threads})
    cells = [time_recipe(n, args.steps, args.rounds, args.seed) for n in args.recipes.split(",")]
    env["load_after"] = load_average()
    rows = [[c["recipe"], f"{c['median_step_s']['nchw']:.3f}",
             f"{c['median_step_s']['channels_last']:.3f}",
             f"{c['ratio_channels_last_over_nchw']:.3f}",
             f"{c['first_step_relative_loss_difference']:.1e}",
             f"{c['max_relative_loss_difference']:.1e}"]
            for c in cells]
    print(format_table(["recipe", "NCHW s/step", "channels_last s/step", "ratio",
                        "loss diff, step 1", "later"],
                       rows, title=f"sandwich step, {args.threads} thread(s), load "
                                   f"{env['load_average_1_5_15']} -> {env['load_after']}"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"environment": env, "cells": cells}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
