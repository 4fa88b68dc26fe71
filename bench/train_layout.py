"""Training speed by memory format and precision, side by side in one process.

    python bench/train_layout.py --threads 2 --out bench/results/train-layout-t2.json
    python bench/train_layout.py --threads 2 --precisions fp32,bf16 --recipes resnet20-fashionmnist

For each recipe, one :class:`~pareco.training.loop.Trainer` per (memory format, precision) is
built from the same seed on the recipe's real data (Fashion-MNIST by default): the network's 4-d
weights in the contiguous (NCHW) format or in ``channels_last``
(:func:`pareco.training.run.training_layout` picks channels_last for one-thread CPU runs,
from this benchmark's figures), the training forward in float32 or under bfloat16 autocast
(``train.precision``). They then take turns: a block of ``--steps`` sandwich steps each (the
Slim policy: full, smallest and two uniform widths), ``--rounds`` times, the first block of each
discarded as warm-up. All start from the same weights and train the same batches, so their first
step's losses must agree with NCHW float32's to float rounding (bfloat16: to its 8-bit mantissa;
the script fails otherwise); later steps drift apart by rounding only. Printed: the median
seconds per step of each variant and its ratio to NCHW float32.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from pareco.training.recipe import PRECISIONS, Recipe, load_recipe  # noqa: E402
from pareco.training.run import build_net  # noqa: E402

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
REFERENCE = "nchw/fp32"
FIRST_STEP_RTOL = {"fp32": 1e-5,  # same weights, same batch: only the summation order differs
                   "bf16": 2e-2}  # bfloat16 keeps 8 bits of mantissa


def make_trainer(recipe: Recipe, data: DataBundle, memory_format: torch.memory_format,
                 precision: str, seed: int) -> Trainer:
    """A Slim-policy trainer of ``recipe`` on ``data``, its 4-d weights in ``memory_format``,
    its training forward in ``precision``."""
    net = build_net(recipe, data, seed).to(memory_format=memory_format)
    policy = UniformPolicy(net.width_space, recipe.pareco.m, seed + 1)
    spec = dataclasses.replace(recipe.train, precision=precision)
    return Trainer(net, data, spec, recipe.run_epochs, policy=policy, seed=seed)


def time_recipe(name: str, precisions: list[str], steps: int, rounds: int,
                seed: int) -> dict[str, Any]:
    """Interleaved blocks of ``steps`` steps per variant; seconds per step and the losses."""
    recipe = load_recipe(name)
    data = load_data(recipe.data.dataset)
    trainers = {f"{k}/{p}": make_trainer(recipe, data, f, p, seed)
                for p in precisions for k, f in FORMATS.items()}
    batches = trainers[REFERENCE].batches(0, 0)
    per_step: dict[str, list[float]] = {k: [] for k in trainers}
    losses: dict[str, list[float]] = {k: [] for k in trainers}
    for r in range(rounds + 1):  # round 0 warms all up
        block = [next(batches) for _ in range(steps)]
        for k, t in trainers.items():
            results = [t.train_step(x, y) for x, y in block]
            losses[k] += [res.loss for res in results]
            if r:
                per_step[k] += [len(x) / res.images_per_s for (x, _), res in zip(block, results)]
    ref = losses[REFERENCE]
    first = {k: abs(v[0] - ref[0]) / abs(ref[0]) for k, v in losses.items()}
    for k, diff in first.items():
        if diff > FIRST_STEP_RTOL[k.split("/")[1]]:
            raise SystemExit(f"{name}: {k}'s first-step loss differs from {REFERENCE}'s by "
                             f"{diff:.2e} (relative), more than rounding: the variants do not "
                             f"compute the same step")
    worst = {k: max(abs(a - b) / abs(b) for a, b in zip(v, ref)) for k, v in losses.items()}
    med = {k: statistics.median(v) for k, v in per_step.items()}
    return {"recipe": name, "steps_per_variant": len(per_step[REFERENCE]), "median_step_s": med,
            "ratio_to_nchw_fp32": {k: v / med[REFERENCE] for k, v in med.items()},
            "first_step_relative_loss_difference": first,
            "max_relative_loss_difference": worst}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", default="resnet20-fashionmnist,resnet20_quarter-fashionmnist",
                    help="comma-separated recipe names (default: %(default)s)")
    ap.add_argument("--precisions", default="fp32",
                    help=f"comma-separated, of {', '.join(PRECISIONS)} (default: %(default)s)")
    ap.add_argument("--steps", type=positive_int, default=5,
                    help="steps per block (default: %(default)s)")
    ap.add_argument("--rounds", type=positive_int, default=4,
                    help="timed blocks per format (default: %(default)s)")
    ap.add_argument("--threads", type=positive_int, default=torch.get_num_threads(),
                    help="torch threads (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the results here (JSON)")
    args = ap.parse_args(argv)
    precisions = [p for p in args.precisions.split(",") if p]
    if not precisions or any(p not in PRECISIONS for p in precisions) or "fp32" not in precisions:
        ap.error(f"--precisions: comma-separated of {', '.join(PRECISIONS)}, including fp32 "
                 f"(the reference), got {args.precisions!r}")
    torch.set_num_threads(args.threads)
    env = environment({"torch": args.threads})
    cells = [time_recipe(n, precisions, args.steps, args.rounds, args.seed)
             for n in args.recipes.split(",")]
    env["load_after"] = load_average()
    rows = [[c["recipe"], k, f"{c['median_step_s'][k]:.3f}", f"{c['ratio_to_nchw_fp32'][k]:.3f}",
             f"{c['first_step_relative_loss_difference'][k]:.1e}",
             f"{c['max_relative_loss_difference'][k]:.1e}"]
            for c in cells for k in c["median_step_s"]]
    print(format_table(["recipe", "format/precision", "s/step", "ratio to nchw/fp32",
                        "loss diff, step 1", "later"],
                       rows, title=f"sandwich step, {args.threads} thread(s), load "
                                   f"{env['load_average_1_5_15']} -> {env['load_after']}"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"environment": env, "cells": cells}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
