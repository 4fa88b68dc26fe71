"""``python -m pareco.profile``: measure a network's per-layer latency table on ONNX Runtime CPU.

    python -m pareco.profile --weights zoo/resnet20-fashionmnist/model.safetensors --threads 1 \
        --out zoo/resnet20-fashionmnist/latency-ort-t1.json
    python -m pareco.profile --arch resnet20 --in-channels 1 --image-size 28 --num-classes 10 \
        --divisor 8 --out r20-d8.json

The table (see :mod:`pareco.profile.table`) feeds ``python -m pareco.train --cost latency
--latency-table PATH``. Run it on the target host, with the thread count the deployment uses,
on an otherwise idle machine. Exit status: 0 on success, 2 on bad input (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import NoReturn

from pareco.cliargs import int_at_least


class UsageError(Exception):
    """Bad command-line input: one ``error:`` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m pareco.profile", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", type=Path, help="a zoo weight file (model.safetensors)")
    src.add_argument("--arch", help="an architecture of pareco.models.available()")
    p.add_argument("--in-channels", type=int_at_least(1), default=3,
                   help="with --arch (default 3)")
    p.add_argument("--image-size", type=int_at_least(1), default=32,
                   help="with --arch: input side in pixels (default 32)")
    p.add_argument("--num-classes", type=int_at_least(1), default=10,
                   help="with --arch (default 10)")
    p.add_argument("--divisor", type=int_at_least(1), default=1,
                   help="with --arch: channel divisor of the width space (default 1)")
    p.add_argument("--out", type=Path, required=True, help="the JSON table to write")
    p.add_argument("--threads", type=int_at_least(1), default=1,
                   help="ONNX Runtime intra-op threads (default 1)")
    p.add_argument("--max-points", type=int_at_least(2), default=24,
                   help="most measured channel counts per group, for the block's multiples "
                        "and for the other counts each (default 24: the shipped model's table "
                        "predicts whole subnets within 7.5 %% on average, 10.6 %% with 12)")
    p.add_argument("--block", type=int_at_least(1), default=8,
                   help="the runtime's channel block: every multiple of it is measured and "
                        "interpolated apart from other counts (default 8, ONNX Runtime's AVX2 "
                        "NCHWc kernels; 16 on AVX-512; 1: no classes)")
    p.add_argument("--anchors", type=int_at_least(2), default=5,
                   help="uniform-width whole subnets measured to fit scale and overhead "
                        "(default 5)")
    p.add_argument("--random-anchors", type=int_at_least(0), default=3,
                   help="random whole subnets added to that fit (default 3)")
    p.add_argument("--check-cells", type=int_at_least(0), default=20,
                   help="off-grid cells measured to report the interpolation error (default 20)")
    p.add_argument("--rounds", type=int_at_least(1), default=7,
                   help="interleaved rounds (default 7)")
    p.add_argument("--calls", type=int_at_least(1), default=20,
                   help="timed calls per model and round (default 20)")
    p.add_argument("--quantile", type=_fraction, default=0.2,
                   help="quantile of the per-round means (default 0.2)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="order and weights seed")
    return p


def _network(args: argparse.Namespace):
    from pareco import models

    if args.weights is not None:
        from pareco.weightfile import WeightFileError, load_zoo_model

        try:
            return load_zoo_model(args.weights).net
        except (OSError, WeightFileError) as e:
            raise UsageError(f"--weights {args.weights}: {e}") from None
    if args.arch not in models.available():
        raise UsageError(f"--arch: unknown model {args.arch!r}; available: "
                         f"{', '.join(models.available())}")
    try:
        return models.build(args.arch, num_classes=args.num_classes, in_channels=args.in_channels,
                            image_size=args.image_size, divisor=args.divisor)
    except (TypeError, ValueError) as e:
        raise UsageError(f"cannot build {args.arch}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (see the module doc)."""
    try:
        args = build_parser().parse_args(argv)
        if args.weights is not None and args.divisor != 1:
            raise UsageError("--divisor is only for --arch (a weight file has its own)")
        warnings.filterwarnings("ignore", category=FutureWarning)
        import torch

        from pareco.profile import ort_runners, profile_net

        torch.set_num_threads(args.threads)
        net = _network(args).eval()
        t0 = time.perf_counter()
        table = profile_net(net, ort_runners(args.threads), threads=args.threads,
                            max_points=args.max_points, block=args.block,
                            anchors=args.anchors, random_anchors=args.random_anchors,
                            check_cells=args.check_cells, rounds=args.rounds, calls=args.calls,
                            quantile=args.quantile, seed=args.seed)
        try:
            table.save(args.out)
        except OSError as e:
            raise UsageError(f"cannot write {args.out}: {e.strerror or e}") from None
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _summary(table, args.out, time.perf_counter() - t0)
    return 0


def _summary(table, out: Path, seconds: float) -> None:
    m, check = table.measurement, table.interpolation_check
    print(f"wrote {out}: {len(table.layers)} distinct layers, {m['models']} models measured in "
          f"{seconds:.1f} s ({m['runtime']} {m['runtime_version']}, {m['threads']} thread(s))")
    print(f"fit on {len(table.calibration)} whole subnets: latency = {table.scale:.3f} x layer "
          f"sum + {table.overhead_ms:.4f} ms")
    for c in table.calibration:
        pred = table.scale * c["layers_ms"] + table.overhead_ms
        print(f"  channels {c['channels']}: measured {c['measured_ms']:.4f} ms, "
              f"predicted {pred:.4f} ms")
    if check.get("cells"):
        print(f"interpolation on {check['cells']} off-grid cells: mean relative error "
              f"{100 * check['mean_rel_err']:.1f} %, max {100 * check['max_rel_err']:.1f} %")


if __name__ == "__main__":
    sys.exit(main())
