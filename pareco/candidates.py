"""Add calibrated candidates to an existing weight file, for fronts chosen on the deployment host.

A weight file carries, besides its (MFLOPs, accuracy) front, the other configurations the front
was chosen from (``candidates``, :mod:`pareco.weightfile`): with their BN statistics and
validation accuracy a serving host can build its own front on measured latency
(:mod:`serve.fronts`) without training data. Files written before version 2, or trained with
few candidates, can get them afterwards::

    python -m pareco.candidates --weights zoo/resnet20-fashionmnist/model.safetensors --round-to 8

New candidates: the recipe's uniform grid (``front.uniform_grid`` widths from the smallest to
full) and, with ``--round-to m``, every front and grid configuration with each group's channel
count rounded to the nearest multiple of ``m`` the width space allows (hardware-friendly
counts: ONNX Runtime's blocked kernels favour multiples of 8). Each is calibrated and validated
exactly as the front was (:func:`pareco.front.calibrate_and_validate`, the recipe's calibration
images and validation split, rebuilt from the weight file's ``training`` section); the front,
its BN statistics and its test accuracies are kept bit for bit, the test set is never read.
The file is rewritten atomically (in place unless ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pareco.cliargs import add_weight_file_tool_options, int_at_least, positive_int
from pareco.data import DataError, load_data
from pareco.evaluate import eval_mode
from pareco.front import calibrate_and_validate
from pareco.slim import BNStats
from pareco.weightfile import FrontConfig, WeightFileError, ZooModel, front_config, \
    load_zoo_model, save_zoo_model
from pareco.width import WidthSpace


def rounded(space: WidthSpace, alpha: tuple[float, ...], multiple: int) -> tuple[float, ...]:
    """``alpha`` with each group's channel count moved to the nearest multiple of ``multiple``
    that the space allows (at least the smallest width's count; a group's full count is always
    allowed); ties go to the larger count."""
    out = []
    for c, least, g in zip(space.channels(alpha), space.channels(space.smallest), space.groups):
        options = [k * multiple for k in range(1, g.channels // multiple + 1)
                   if k * multiple >= least] + [g.channels]
        out.append(min(options, key=lambda o: (abs(o - c), -o)) / g.channels)
    return space.validate(out)


def new_configs(zoo: ZooModel, uniform_grid: int, round_to: int) -> list[tuple[float, ...]]:
    """The configurations to add (see the module doc), none sharing a channel vector with the
    front, the existing candidates or each other; in a fixed order."""
    space = zoo.net.width_space
    grid = [space.uniform(float(w)) for w in torch.linspace(space.lower, 1.0, uniform_grid,
                                                            dtype=torch.float64)]
    proposals = list(grid)
    if round_to > 1:
        proposals += [rounded(space, c.alpha, round_to) for c in zoo.front]
        proposals += [rounded(space, a, round_to) for a in grid]
    seen = {c.channels for c in zoo.configs}
    out = []
    for alpha in proposals:
        ch = space.channels(alpha)
        if ch not in seen:
            seen.add(ch)
            out.append(alpha)
    return out


def load_training_data(zoo: ZooModel, data_dir: Path | None, download: bool) -> Any:
    """The weight file's training data with the same validation split (seed 0, its
    ``val_size``, ``subset`` and image size), as :func:`pareco.data.load_data` returns it."""
    training = zoo.meta.get("training") or {}
    data = (training.get("recipe") or {}).get("data")
    if not data or "dataset" not in data:
        raise WeightFileError("the weight file's training section names no recipe data: its "
                              "validation split cannot be rebuilt")
    return load_data(data["dataset"], data_dir=data_dir, download=download,
                     val_size=data.get("val_size"), subset=training.get("subset"), seed=0,
                     image_size=data.get("image_size"))


def add_candidates(zoo: ZooModel, data: Any, configs: list[tuple[float, ...]], *,
                   calib_images: int, val_images: int | None, batch_size: int = 256,
                   progress: bool = False) -> tuple[list[FrontConfig], dict[str, BNStats]]:
    """The existing candidates plus ``configs`` calibrated and validated, re-numbered ``k00,
    k01, ...`` by MACs, and the BN statistics of the front and all candidates (by new id)."""
    net = zoo.net
    with torch.random.fork_rng(devices=[]), eval_mode(net):
        torch.manual_seed(0)
        stats, val_acc = calibrate_and_validate(net, configs, data, calib_images=calib_images,
                                                val_images=val_images, batch_size=batch_size,
                                                device="cpu", progress=progress)
    pool = [(c.alpha, c.val_acc, zoo.bn_stats[c.id]) for c in zoo.candidates]
    pool += list(zip(configs, val_acc, stats))
    pool.sort(key=lambda p: net.macs(p[0]))
    width = max(2, len(str(len(pool) - 1)))
    bn = {c.id: zoo.bn_stats[c.id] for c in zoo.front}
    candidates = []
    for rank, (alpha, acc, s) in enumerate(pool):
        cid = f"k{rank:0{width}d}"
        candidates.append(front_config(net, cid, alpha, acc))
        bn[cid] = s
    return candidates, bn


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pareco.candidates", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True, help="the weight file to extend")
    p.add_argument("--out", type=Path, help="where to write the result (default: in place)")
    p.add_argument("--uniform-grid", type=int_at_least(2), help="uniform widths to add, both ends included "
                   "(default: the recipe's front.uniform_grid)")
    p.add_argument("--round-to", type=positive_int, default=1, metavar="M",
                   help="also add every front and grid config with its channel counts rounded "
                        "to multiples of M (1: none; default 1)")
    add_weight_file_tool_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    try:
        zoo = load_zoo_model(a.weights)
        front = ((zoo.meta.get("training") or {}).get("recipe") or {}).get("front", {})
        configs = new_configs(zoo, a.uniform_grid or int(front.get("uniform_grid", 24)), a.round_to)
        data = load_training_data(zoo, a.data_dir, not a.no_download)
        candidates, bn = add_candidates(
            zoo, data, configs, calib_images=int(front.get("calib_images", 2000)),
            val_images=front.get("val_images"), batch_size=int(front.get("batch_size", 256)),
            progress=not a.quiet)
        save_zoo_model(a.out or a.weights, zoo.net, zoo.front, bn, candidates=candidates,
                       preprocessing=zoo.preprocessing, classes=zoo.classes,
                       training=zoo.meta.get("training"))
    except (WeightFileError, DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    best = max(candidates, key=lambda c: c.accuracy, default=None)
    print(f"{a.out or a.weights}: {len(configs)} candidates added ({len(candidates)} in all, "
          f"front of {len(zoo.front)} unchanged) in {time.perf_counter() - t0:.0f} s"
          + ("" if best is None else f"; best candidate {best.id}: {best.mflops:.2f} MFLOPs, "
                                     f"val {best.accuracy:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
