"""How well a per-layer latency table predicts whole subnets, and which widths win on latency.

    python -m pareco.profile --weights zoo/resnet20-fashionmnist/model.safetensors --threads 1 \
        --out bench/results/latency-table-resnet20-fmnist-t1.json
    python bench/latency_table.py --table bench/results/latency-table-resnet20-fmnist-t1.json

On the shipped slimmable model (trained over the continuous width space, so every divisor-8 or
latency-chosen configuration is a valid subnet of it), with ONNX Runtime CPU at batch 1:

1. **Prediction error**: measured end-to-end latency of ``--random`` random and ``--uniform``
   uniform-width dense subnets (BN folded, exported by :func:`export.onnx_io.to_onnx_many`,
   timed with the table's own protocol: interleaved rounds, low quantile) against the table.
2. **Fronts on (measured latency, validation accuracy)**, every config calibrated and validated
   by :func:`pareco.front.build_front` (its BN calibration images, the whole validation split;
   no test data is read): ``uniform`` widths; ``macs-front``, the shipped (MFLOPs) front;
   ``divisor8``, the uniform and shipped-front configs rounded to multiples of 8 channels;
   ``latency-picks`` and ``macs-picks``, the non-dominated configs of one random pool (half
   continuous, half rounded to multiples of 8 channels) in (predicted latency, CE) and (MACs,
   CE), CE on one 256-image validation batch with batch-statistics BN as PareCO's search
   measures it. Dominance and the area under each front over
   the common latency range are printed and written to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, environment, load_average  # noqa: E402
from export.onnx_io import to_onnx_many  # noqa: E402
from pareco.data import load_data  # noqa: E402
from pareco.front import build_front, spread_subset  # noqa: E402
from pareco.pareto import nondominated  # noqa: E402
from pareco.profile import LatencyModel, load_table, measure, ort_runners  # noqa: E402
from pareco.training.history_eval import evaluate_history  # noqa: E402
from pareco.weightfile import load_zoo_model  # noqa: E402
from pareco.width import WidthSpace  # noqa: E402

Alpha = tuple[float, ...]


def divisor_rounded(space: WidthSpace, alphas: list[Alpha], divisor: int) -> list[Alpha]:
    """``alphas`` with channels rounded to multiples of ``divisor``, as exact multipliers
    ``c / C`` of the same (divisor-1) space; duplicates dropped. A count the rounding puts
    below the trained minimum ``lower * C`` (8 of 32 channels: 0.25 < 0.316) is raised to the
    next multiple: the model never trained narrower subnets."""
    rounded = WidthSpace(space.groups, space.lower, divisor)
    out, seen = [], set()
    for a in alphas:
        ch = tuple(c if c >= space.lower * f else math.ceil(space.lower * f / divisor) * divisor
                   for c, f in zip(rounded.channels(a), space.full_channels))
        if ch not in seen:
            seen.add(ch)
            out.append(tuple(c / f for c, f in zip(ch, space.full_channels)))
    return out


def pool_picks(zoo, model: LatencyModel, data, n_pool: int, k: int, seed: int) -> dict:
    """``latency-picks`` and ``macs-picks`` from one random pool (see the module doc)."""
    net, space = zoo.net, zoo.net.width_space
    drawn = space.sample(n_pool, generator=torch.Generator().manual_seed(seed + 1))
    half = n_pool // 2  # half continuous, half rounded to multiples of 8 channels
    rows = [tuple(r) for r in drawn[:half].tolist()]
    rows += divisor_rounded(space, [space.validate(r) for r in drawn[half:]], 8)
    pool = torch.tensor(rows + [space.smallest, space.full], dtype=torch.float64)
    x = torch.stack([data.val[i][0] for i in range(256)])
    y = torch.tensor([int(data.val[i][1]) for i in range(256)])
    ce = evaluate_history(net, pool, x, y)
    costs = {"latency-picks": model.predict_ms(space.channels_batch(pool)),
             "macs-picks": net.macs_batch(pool)}
    picks = {}
    for name, cost in costs.items():
        nd = nondominated(torch.stack([cost, ce], dim=1).numpy(), maximize=[False, False])
        nd = nd[np.argsort(cost.numpy()[nd], kind="stable")]
        chosen = [int(nd[j]) for j in spread_subset(cost.numpy()[nd], k)]
        picks[name] = [space.validate(pool[i]) for i in chosen]
    return picks


def accuracies(zoo, data, configs: list[Alpha], calib_images: int,
               val_images: int | None) -> dict[tuple, tuple]:
    """``channels -> (val_acc, bn_stats)`` of every config, by :func:`build_front` (no test;
    the first ``val_images`` validation images, ``None``: all)."""
    bundle = SimpleNamespace(calib=data.calib, val=data.val, test=[])
    rows = torch.tensor(configs, dtype=torch.float64)
    result = build_front(zoo.net, rows, bundle, calib_images=calib_images, val_images=val_images,
                         max_configs=len(configs) + 2, uniform_grid=0, max_candidates=None)
    out = {}
    for c in result.front + result.candidates:
        out[tuple(c.channels)] = (c.val_acc, result.bn_stats[c.id])
    return out


def time_subnets(zoo, configs: list[Alpha], stats: dict, threads: int, rounds: int,
                 calls: int) -> tuple[dict[tuple, float], dict]:
    """Measured ms of each config's dense ONNX subnet (calibrated BN folded; placeholder-free)."""
    space, net = zoo.net.width_space, zoo.net
    shape = (net.in_channels, net.image_size, net.image_size)
    keys = sorted({space.channels(a) for a in configs})
    alpha_of = {space.channels(a): a for a in configs}
    models = {}
    for start in range(0, len(keys), 24):
        chunk = keys[start:start + 24]
        dense = [net.extract(alpha_of[k], stats[k]) for k in chunk]
        models.update({str(k): m for k, m in zip(chunk, to_onnx_many(dense, shape))})
    before = load_average()
    t0 = _dt.datetime.now(_dt.timezone.utc)
    sec = measure(models, ort_runners(threads), rounds=rounds, calls=calls, quantile=0.2)
    info = {"load_before": before, "load_after": load_average(), "started": t0.isoformat(),
            "seconds": (_dt.datetime.now(_dt.timezone.utc) - t0).total_seconds(),
            "models": len(models), "rounds": rounds, "calls": calls, "quantile": 0.2}
    return {k: 1e3 * sec[str(k)] for k in keys}, info


def front_of(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated (latency ↓, accuracy ↑) points, ascending latency."""
    arr = np.asarray(points)
    nd = nondominated(arr, maximize=[False, True])
    return sorted((float(arr[i, 0]), float(arr[i, 1])) for i in nd)


def area(front: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Mean best accuracy reachable within a latency budget, over budgets uniform in [lo, hi]
    (0 below the front's fastest point): higher is better."""
    budgets = np.linspace(lo, hi, 2001)
    best = [max([a for t, a in front if t <= b], default=0.0) for b in budgets]
    return float(np.mean(best))


def dominated_share(a: list, b: list) -> float:
    """Share of ``a``'s points that some point of ``b`` dominates (<= latency, >= accuracy,
    better in one)."""
    hit = sum(any(tb <= ta and ab >= aa and (tb < ta or ab > aa) for tb, ab in b) for ta, aa in a)
    return hit / len(a)


def prediction_errors(model: LatencyModel, space: WidthSpace, sets: dict, measured: dict) -> dict:
    """Relative error of the table per named config set (mean, max, n)."""
    out = {}
    for name, alphas in sets.items():
        ch = sorted({space.channels(a) for a in alphas})
        pred = model.predict_ms(torch.tensor(ch, dtype=torch.float64)).numpy()
        meas = np.array([measured[c] for c in ch])
        rel = np.abs(pred - meas) / meas
        out[name] = {"n": len(ch), "mean_rel_err": float(rel.mean()),
                     "max_rel_err": float(rel.max()),
                     "rank_corr": float(np.corrcoef(np.argsort(np.argsort(pred)),
                                                    np.argsort(np.argsort(meas)))[0, 1])}
    return out


def compare_fronts(sets: dict, space: WidthSpace, measured: dict, acc: dict) -> dict:
    """Per set: its (measured latency, val acc) front, area, dominance vs ``macs-front``."""
    fronts = {name: front_of([(measured[space.channels(a)], acc[space.channels(a)][0])
                              for a in alphas]) for name, alphas in sets.items()}
    lo = max(f[0][0] for f in fronts.values())
    hi = min(f[-1][0] for f in fronts.values())
    ref = fronts["macs-front"]
    return {name: {"front": f, "area": area(f, lo, hi), "window_ms": [lo, hi],
                   "dominates_share_of_macs_front": dominated_share(ref, f),
                   "dominated_share_by_macs_front": dominated_share(f, ref)}
            for name, f in fronts.items()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path,
                   default=Path("zoo/resnet20-fashionmnist/model.safetensors"))
    p.add_argument("--table", type=Path, required=True, help="from python -m pareco.profile")
    p.add_argument("--data-dir", type=Path, help="Fashion-MNIST folder (default: the usual lookup)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (the table's)")
    p.add_argument("--torch-threads", type=int, default=2, help="for calibration / validation")
    p.add_argument("--random", type=int, default=40, help="random configs for the error")
    p.add_argument("--uniform", type=int, default=12, help="uniform widths")
    p.add_argument("--pool", type=int, default=300, help="random pool of the picks")
    p.add_argument("--picks", type=int, default=12, help="configs per picked front")
    p.add_argument("--val-images", type=int, help="validation images (default: the whole split)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path,
                   help="result JSON (default bench/results/latency-table-<date>.json)")
    return p.parse_args(argv)


def config_sets(zoo, model: LatencyModel, data, args: argparse.Namespace) -> tuple[dict, dict]:
    """(timed-only sets, fronts' sets): random configs; uniform, shipped front, divisor-8, picks."""
    space = zoo.net.width_space
    gen = torch.Generator().manual_seed(args.seed)
    random = [space.validate(r) for r in space.sample(args.random, generator=gen)]
    uniform = [space.uniform(float(w)) for w in np.linspace(space.lower, 1.0, args.uniform)]
    shipped = [c.alpha for c in zoo.front]
    fronts = {"uniform": uniform, "macs-front": shipped,
              "divisor8": divisor_rounded(space, uniform + shipped, 8),
              **pool_picks(zoo, model, data, args.pool, args.picks, args.seed)}
    return {"random": random}, fronts


def report(result: dict) -> None:
    """Print the figures of a result document."""
    t = result["timing"]
    print(f"timing: {t['models']} subnets, {t['rounds']} rounds x {t['calls']} calls, "
          f"load before {t['load_before']} after {t['load_after']}")
    print(f"{'set':16s} {'n':>3s} {'mean err':>9s} {'max err':>8s} {'rank corr':>9s}")
    for name, e in result["prediction"].items():
        print(f"{name:16s} {e['n']:3d} {100 * e['mean_rel_err']:8.1f}% "
              f"{100 * e['max_rel_err']:7.1f}% {e['rank_corr']:9.3f}")
    lo, hi = next(iter(result["fronts"].values()))["window_ms"]
    print(f"fronts on (measured ms, val acc); area = mean best val acc over budgets "
          f"{lo:.3f}-{hi:.3f} ms")
    print(f"{'set':16s} {'pts':>3s} {'area':>7s} {'dominates':>10s} {'dominated':>10s}  front")
    for name, f in result["fronts"].items():
        pts = " ".join(f"{ms:.3f}/{100 * acc:.2f}" for ms, acc in f["front"])
        print(f"{name:16s} {len(f['front']):3d} {100 * f['area']:6.2f}% "
              f"{100 * f['dominates_share_of_macs_front']:9.0f}% "
              f"{100 * f['dominated_share_by_macs_front']:9.0f}%  {pts}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    zoo = load_zoo_model(args.weights)
    table = load_table(args.table)
    model = LatencyModel.for_net(zoo.net, table)
    recipe = zoo.meta["training"]["recipe"]
    data = load_data(recipe["data"]["dataset"], data_dir=args.data_dir, download=False,
                     val_size=recipe["data"]["val_size"], seed=0)
    timed, fronts = config_sets(zoo, model, data, args)
    front_configs = [a for alphas in fronts.values() for a in alphas]
    acc = accuracies(zoo, data, front_configs, recipe["front"]["calib_images"], args.val_images)
    space = zoo.net.width_space
    stats = {k: s for k, (_, s) in acc.items()}
    for a in timed["random"]:  # timing only: any statistics of the right shapes will do
        stats.setdefault(space.channels(a), _placeholder(zoo.net, a))
    measured, timing = time_subnets(zoo, timed["random"] + front_configs, stats, args.threads,
                                    args.rounds, args.calls)
    sets = {**timed, **fronts}
    result = {"environment": environment(threads={"onnxruntime_intra_op": args.threads,
                                                  "torch": args.torch_threads}),
              "table": {"path": str(args.table), "measurement": table.measurement,
                        "scale": table.scale, "overhead_ms": table.overhead_ms,
                        "interpolation_check": table.interpolation_check},
              "timing": timing,
              "prediction": prediction_errors(model, space, {
                  "random+uniform": sets["random"] + sets["uniform"], **sets}, measured),
              "fronts": compare_fronts(fronts, space, measured, acc),
              "configs": {name: [{"channels": list(space.channels(a)),
                                  "measured_ms": measured[space.channels(a)],
                                  "predicted_ms": float(model.predict_ms(torch.tensor(
                                      [space.channels(a)], dtype=torch.float64))[0]),
                                  "mflops": zoo.net.macs(a) / 1e6,
                                  "val_acc": acc.get(space.channels(a), (None,))[0]}
                                 for a in alphas] for name, alphas in sets.items()}}
    out = args.out or RESULTS / f"latency-table-{_dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    report(result)
    print(f"wrote {out}")
    return 0


def _placeholder(net, alpha: Alpha):
    from pareco.profile.subnets import placeholder_stats

    return placeholder_stats(net, alpha)


if __name__ == "__main__":
    sys.exit(main())
