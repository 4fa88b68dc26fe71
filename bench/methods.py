"""Methods benchmark: PareCO vs Slim vs TwoStage (and independent models) on Fashion-MNIST.

    python bench/methods.py                                   # the default protocol (~2 h, 2 cores)
    python bench/methods.py --networks resnet20_half --seeds 0 --epochs 2 --subset 20000
    python bench/methods.py --quick --data-dir /tmp/fmnist --out /tmp/m.json   # tiny smoke run

Every run goes through the real training CLI, one subprocess at a time::

    python -m pareco.train --recipe <network>-fashionmnist --method <method> --seed <s>
        --out <runs-dir>/<network>/<method>/seed<s> --quiet --no-download <protocol flags>

with the SAME protocol flags (epochs, subset, validation size, |H|, held-out batch, calibration
images, front settings, ``--set`` overrides) for every method, network and seed, so the methods
differ only in how they choose the sandwich's middle widths. The two networks are the recipes
``resnet20-fashionmnist`` (ResNet20, base width 16) and ``resnet20_half-fashionmnist`` (ResNet20 at
half its base width, ``model.kwargs.width_factor: 0.5``: the less over-parameterized variant where
the paper finds PareCO's gains largest). ``independent`` trains each uniform width of
``--independent-widths`` alone for the same number of epochs (reference points).

Resumable: each run writes into its own folder with a ``bench.json`` holding the exact CLI
arguments. A folder whose weight file exists (and holds no unfinished state) is reused as is; one
with an unfinished state is continued with ``--resume``; a folder made with other arguments is an
error (pick another ``--runs-dir``). So an interrupted protocol continues where it stopped.

Reported per network and method (mean and spread over seeds):

- the front: test accuracy vs MFLOPs of every front configuration in the weight file;
- the area under the front (:func:`pareco.pareto.area_under_front`: the mean over budgets in the
  common MFLOPs range of the best test accuracy within the budget), with the paired per-seed
  difference PareCO - Slim (and TwoStage - Slim). The common range of a network runs from the
  largest "smallest MFLOPs" of the slimmable runs' fronts (below it some method has no model) to
  the largest MFLOPs of any of their fronts (in practice [MFLOPs(w0), MFLOPs(full width)]);
- accuracy at matched MFLOPs (like the paper's Table 1): for budgets at the MFLOPs of uniform widths,
  the best test accuracy with MFLOPs <= budget per method, and the paired deltas vs Slim;
- training wall-clock time from the weight file's ``training`` section, which separates the
  training loop (``train_s``; for PareCO it includes the H re-evaluations and the search, also
  given separately), TwoStage's post-hoc search (``search_s``) and the front construction
  (``front_s``: BN calibration and evaluation, the same work for every method); the time ratio
  PareCO/Slim of the training loop (and of the whole run);
- a plot like the paper's Figure 4 (one panel per network; each seed's front as a thin staircase,
  the seed-mean staircase thick, independent models as points), written next to the JSON;
- raw JSON of all of it, the environment and the exact command (``--out``, default
  ``bench/results/methods-<host>-<date>.json``), and markdown tables on stdout.

Default protocol and its time budget (2 CPU cores, DESIGN §10: a ResNet20 training step at batch 128
costs ~215 ms at full width and ~70 ms at width 0.35, so one sandwich step {full, w0, 2 uniform
middles, E[w^2] ~ 0.47} costs ~0.5 s; half-width ResNet20 has 1/4 of the MACs but small convolutions
are less efficient on CPU, measured at ~0.45x the step time):

    subset 12000 images, 1000 of them the validation split -> 11000 training images,
    85 steps per epoch (batch 128) x 3 epochs = 255 steps per run
    |H| = 60 (30 full iterations of M = 2, every 8 steps), held-out batch 64,
    BN calibration with 1000 images, front from <= 12 configs, validation 1000 images

    per seed, ResNet20:      slim ~135 s, twostage ~135 s + search ~25 s, pareco ~135 s + ~30 s
                             (H re-evaluation + GP fits + acquisition), independent 4 widths
                             ~130 s (one width per step), fronts ~4 x 30 s + 4 x 10 s
                             -> ~730 s
    per seed, ResNet20-half: ~0.5 x the training and fronts, the same search cost -> ~450 s
    2 seeds x 2 networks, plus ~8 s of process start per run (16 runs)
                             -> 2 x (730 + 450) + 16 x 8 ~ 2500 s ~ 42 min on idle cores

Measured on the project's idle 2-vCPU VM: 62 min (a ResNet20 sandwich step costs ~0.78 s there,
not 0.5 s; PareCO's search ~60-80 s per run; see bench/RESULTS.md).

PareCO's search cost is fixed by |H| (~20 GP fits + 40 acquisition optimizations, ~70 s) while
training scales with epochs x images, so on a protocol this short its overhead over Slim is far
larger than the paper's ~20% over hundreds of epochs; the JSON separates it (``search``: H
re-evaluation and proposal seconds inside ``train_s``). The estimate leaves a ~2.5x margin for a
machine shared with other work (the protocol is meant to run in
the background) within the ~2 hours asked for. Measured times are recorded per run in the JSON.
On a machine shared with other CPU-heavy work pass ``--threads 1``: two-thread runs next to
other multi-threaded processes oversubscribe the cores and were measured here to slow down ~7x
(one half-width ResNet20 training step: 1.2 s with 1 thread vs 7.9 s with 2 under a load of 6).
Larger protocols (e.g. ``--epochs 10 --subset 60000``) scale linearly in epochs x images; on a GPU
(``--device cuda``, auto-detected) they run much faster.

``twostage`` trains exactly the same sub-networks as ``slim`` (same seed, same uniform sampler), so
its training loop is a second measurement of Slim's; it differs only by the post-hoc search.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.common import REPO, default_result_path, environment, format_table, load_average

NETWORKS = ("resnet20", "resnet20_half")
METHODS = ("slim", "pareco", "twostage", "independent")
SLIMMABLE = ("slim", "pareco", "twostage")
WEIGHT_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
BENCH_FILE = "bench.json"
BUDGET_WIDTHS = (0.316, 0.4, 0.5, 0.625, 0.75, 0.875, 1.0)
"""The matched-MFLOPs budgets are the MFLOPs of these uniform widths of each network."""

DEFAULTS = {"epochs": 3, "seeds": "0,1", "subset": 12000, "val_size": 1000, "history_size": 60,
            "eval_batch": 64, "calib_images": 1000, "val_images": 1000, "max_configs": 12,
            "batch_size": 128, "independent_widths": "0.316,0.5,0.75,1.0"}
QUICK = {"epochs": 1, "seeds": "0", "subset": 200, "val_size": 40, "history_size": 6,
         "eval_batch": 32, "calib_images": 32, "val_images": 40, "max_configs": 6,
         "batch_size": 32, "independent_widths": "0.316,1.0",
         "set": ["data.image_size=16", "pareco.warmup_configs=4", "pareco.max_overhead=1",
                 "front.uniform_grid=4"]}


class BenchError(RuntimeError):
    """A protocol that cannot run (bad arguments, a run folder of another protocol)."""


# ------------------------------------------------------------------------------------ runs
def recipe_name(network: str) -> str:
    return f"{network}-fashionmnist"


def protocol_args(a: argparse.Namespace) -> list[str]:
    """The CLI flags every run shares (identical hyper-parameters across methods)."""
    args = ["--epochs", str(a.epochs), "--subset", str(a.subset), "--val-size", str(a.val_size),
            "--batch-size", str(a.batch_size), "--history-size", str(a.history_size),
            "--eval-batch", str(a.eval_batch), "--calib-images", str(a.calib_images),
            "--max-configs", str(a.max_configs), "--set", f"front.val_images={a.val_images}",
            "--set", "independent.widths=[" + ",".join(f"{w:g}" for w in a.independent_widths) + "]"]
    for item in a.set:
        args += ["--set", item]
    if a.data_dir is not None:
        args += ["--data-dir", str(a.data_dir)]
    if a.threads is not None:
        args += ["--threads", str(a.threads)]
    if a.device is not None:
        args += ["--device", a.device]
    return args


def run_dir(runs: Path, network: str, method: str, seed: int) -> Path:
    return runs / network / method / f"seed{seed}"


def weight_files(out: Path, method: str) -> list[Path]:
    """The finished weight files of a run folder (independent: one per width), [] if unfinished."""
    if method != "independent":
        done = (out / WEIGHT_FILE).is_file() and not (out / STATE_FILE).is_file()
        return [out / WEIGHT_FILE] if done else []
    index = out / "index.json"
    if not index.is_file():
        return []
    files = sorted(out.glob(f"w*/{WEIGHT_FILE}"))
    if any((f.parent / STATE_FILE).is_file() for f in files):
        return []
    return files


def unfinished(out: Path, method: str) -> bool:
    if method != "independent":
        return (out / STATE_FILE).is_file()
    return (out / "run.json").is_file()


def run_one(network: str, method: str, seed: int, runs: Path, shared: list[str],
            expected_files: int) -> dict[str, Any]:
    """Train one (network, method, seed) through the CLI unless its folder already holds it."""
    out = run_dir(runs, network, method, seed)
    argv = ["--recipe", recipe_name(network), "--method", method, "--seed", str(seed),
            "--out", str(out), "--quiet", "--no-download", *shared]
    record = out / BENCH_FILE
    if record.is_file():
        saved = json.loads(record.read_text())["argv"]
        if saved != argv:
            raise BenchError(f"{out} was trained with other arguments:\n  {shlex.join(saved)}\n"
                             f"now\n  {shlex.join(argv)}\nuse another --runs-dir or delete it")
    elif out.exists() and any(out.iterdir()):
        raise BenchError(f"{out} holds files not made by this benchmark; use another --runs-dir")
    files = weight_files(out, method)
    info: dict[str, Any] = {"network": network, "method": method, "seed": seed, "out": str(out)}
    if len(files) >= expected_files:
        return {**info, "status": "reused", "files": [str(f) for f in files]}
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"argv": argv}, indent=1) + "\n")
    resume = unfinished(out, method)
    cmd = [sys.executable, "-m", "pareco.train", *argv, *(["--resume"] if resume else [])]
    load0, t0 = load_average(), time.perf_counter()
    print(f"[methods] {network} {method} seed {seed}: {'resuming' if resume else 'training'} "
          f"-> {out}", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, preexec_fn=_die_with_parent)
    elapsed = time.perf_counter() - t0
    (out / "bench.log").write_text(proc.stdout)
    if proc.returncode == 130:
        raise KeyboardInterrupt
    info.update(command=shlex.join(cmd), process_s=round(elapsed, 2), load_before=load0,
                load_after=load_average())
    files = weight_files(out, method)
    if proc.returncode != 0 or len(files) < expected_files:
        tail = proc.stdout.strip().splitlines()[-5:]
        print(f"[methods]   FAILED (exit {proc.returncode}): " + " | ".join(tail), flush=True)
        return {**info, "status": "failed", "returncode": proc.returncode, "output_tail": tail}
    print(f"[methods]   done in {elapsed:.0f} s", flush=True)
    return {**info, "status": "trained", "files": [str(f) for f in files]}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: a training run gets SIGINT (it saves its resume state and exits 130) if the
    benchmark dies without cleaning up, instead of running on as an orphan."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


# --------------------------------------------------------------------------------- results
def read_run(files: list[str]) -> dict[str, Any]:
    """Front points and timings of one run (independent: every width's single point)."""
    from pareco.weightfile import read_metadata

    points, trainings = [], []
    for f in files:
        meta = read_metadata(f)
        t = meta["training"]
        trainings.append(t)
        for c in meta["front"]:
            points.append({"id": c["id"], "mflops": c["mflops"], "test_acc": c["test_acc"],
                           "val_acc": c["val_acc"], "alpha": c["alpha"],
                           **({"width": t["width"]} if "width" in t else {})})
    points.sort(key=lambda p: p["mflops"])
    keys = ("wall_s", "train_s", "search_s", "front_s")
    times = {k: round(sum(float(t.get(k) or 0.0) for t in trainings), 3) for k in keys}
    times["training_s"] = round(times["train_s"] + times["search_s"], 3)
    t0 = trainings[0]
    doc = {"front": points, "times": times, "steps": sum(int(t.get("steps", 0)) for t in trainings),
           "epochs": t0.get("epochs"), "train_images": t0.get("train_images"),
           "device": t0.get("device"), "threads": t0.get("threads"),
           "arch": read_metadata(files[0])["arch"]}
    search = t0.get("search")
    if search and len(trainings) == 1:
        doc["search"] = search
    return doc


def staircase(points: list[dict], budgets: np.ndarray) -> np.ndarray:
    """Best test accuracy with MFLOPs <= each budget (nan where nothing fits)."""
    m = np.array([p["mflops"] for p in points])
    a = np.array([p["test_acc"] for p in points])
    return np.array([a[m <= b].max() if np.any(m <= b) else np.nan for b in budgets])


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample std (ddof 1; 0 for one value), min, max and n of finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "values": []}
    return {"n": int(v.size), "mean": float(v.mean()),
            "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "values": [float(x) for x in v]}


def budgets_of(arch: dict[str, Any]) -> dict[str, float]:
    """MFLOPs of the uniform widths of ``BUDGET_WIDTHS`` for a weight file's architecture."""
    from pareco import models

    net = models.build(arch["name"], **arch["kwargs"])
    space = net.width_space
    return {f"{w:g}": net.macs(space.uniform(max(w, space.lower))) / 1e6 for w in BUDGET_WIDTHS}


def analyze(runs: dict[str, dict[str, dict[int, dict]]], methods: list[str]) -> dict[str, Any]:
    """Areas, matched-MFLOPs accuracies, times and ratios per network from the runs' fronts."""
    from pareco.pareto import area_under_front

    out: dict[str, Any] = {}
    for network, by_method in runs.items():
        done = {m: s for m, s in by_method.items() if s}
        if not done:
            continue
        slimmable = [r for m in SLIMMABLE for r in done.get(m, {}).values()]
        ref = slimmable or [r for s in done.values() for r in s.values()]
        # budgets at which every method (and seed) has a model: from the largest of the fronts'
        # smallest MFLOPs to the largest MFLOPs of any front (a staircase stays flat after its
        # last point: a front whose best model is cheap offers that accuracy at larger budgets)
        lo = max(min(p["mflops"] for p in r["front"]) for r in ref)
        hi = max(max(p["mflops"] for p in r["front"]) for r in ref)
        arch = ref[0]["arch"]
        budgets = budgets_of(arch)
        net_doc: dict[str, Any] = {"arch": arch, "mflops_range": [lo, hi], "budgets": budgets,
                                   "methods": {}}
        bvals = np.array(list(budgets.values()))
        for method in methods:
            seeds = done.get(method, {})
            if not seeds:
                continue
            areas, at_budget, times = {}, {}, {}
            for seed, r in seeds.items():
                m = [p["mflops"] for p in r["front"]]
                a = [p["test_acc"] for p in r["front"]]
                areas[seed] = area_under_front(m, a, lo, hi) if hi > lo else float("nan")
                at_budget[seed] = staircase(r["front"], bvals).tolist()
                times[seed] = r["times"]
            mdoc = {
                "seeds": sorted(seeds),
                "area": {**spread(list(areas.values())), "per_seed": areas},
                "matched": {name: {**spread([at_budget[s][i] for s in seeds]),
                                   "per_seed": {s: at_budget[s][i] for s in seeds}}
                            for i, name in enumerate(budgets)},
                "times": {k: {**spread([times[s][k] for s in seeds]),
                              "per_seed": {s: times[s][k] for s in seeds}}
                          for k in ("wall_s", "training_s", "train_s", "search_s", "front_s")},
                "fronts": {s: seeds[s]["front"] for s in seeds},
            }
            searches = {s: seeds[s]["search"] for s in seeds if "search" in seeds[s]}
            if searches:
                mdoc["search"] = searches
            net_doc["methods"][method] = mdoc
        net_doc["vs_slim"] = _vs_slim(net_doc["methods"], list(budgets))
        out[network] = net_doc
    return out


def _paired(a: dict, b: dict, fn) -> dict[str, Any]:
    common = sorted(set(a) & set(b))
    values = {s: fn(a[s], b[s]) for s in common}
    return {**spread(list(values.values())), "per_seed": values}


def _vs_slim(mdocs: dict[str, Any], budgets: list[str]) -> dict[str, Any]:
    """Paired (same seed) differences vs Slim: areas, matched accuracies, time ratios."""
    slim = mdocs.get("slim")
    if slim is None:
        return {}
    res: dict[str, Any] = {}
    for method, d in mdocs.items():
        if method == "slim":
            continue
        entry: dict[str, Any] = {
            "area_delta": _paired(d["area"]["per_seed"], slim["area"]["per_seed"],
                                  lambda x, y: x - y),
            "matched_delta": {b: _paired(d["matched"][b]["per_seed"],
                                         slim["matched"][b]["per_seed"], lambda x, y: x - y)
                              for b in budgets},
        }
        if method in SLIMMABLE:
            for k in ("training_s", "wall_s"):
                entry[f"time_ratio_{k}"] = _paired(d["times"][k]["per_seed"],
                                                   slim["times"][k]["per_seed"],
                                                   lambda x, y: x / y if y > 0 else float("nan"))
                ms, ss = d["times"][k]["mean"], slim["times"][k]["mean"]
                entry[f"time_ratio_{k}_of_means"] = ms / ss if ss else None
        res[method] = entry
    return res


# ------------------------------------------------------------------------------- reporting
def _pm(d: dict | None, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    if not d or d.get("mean") is None:
        return "-"
    text = fmt.format(scale * d["mean"])
    if d["n"] > 1:
        text += " ± " + fmt.format(scale * d["std"])
    return text


def markdown(results: dict[str, Any]) -> str:
    """The report tables (accuracies in %, areas in % mean accuracy over the common range)."""
    lines: list[str] = []
    for network, nd in results["networks"].items():
        lo, hi = nd["mflops_range"]
        lines += [f"### {network} ({nd['arch']['name']} {nd['arch']['kwargs'].get('width_factor', 1)}x"
                  f" base width) — MFLOPs range [{lo:.3f}, {hi:.3f}]", ""]
        lines += ["| method | seeds | area under front (%) | Δ area vs slim (pp) | training s |"
                  " search s (post hoc) | front s | time ratio vs slim (training) |"
                  " time ratio vs slim (wall) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for method, d in nd["methods"].items():
            vs = nd["vs_slim"].get(method, {})
            lines.append(
                f"| {method} | {len(d['seeds'])} | {_pm(d['area'], 100)} | "
                f"{_pm(vs.get('area_delta'), 100, '{:+.2f}') if vs else '-'} | "
                f"{_pm(d['times']['train_s'], 1, '{:.0f}')} | "
                f"{_pm(d['times']['search_s'], 1, '{:.0f}')} | "
                f"{_pm(d['times']['front_s'], 1, '{:.0f}')} | "
                f"{_pm(vs.get('time_ratio_training_s'), 1, '{:.3f}') if vs else '-'} | "
                f"{_pm(vs.get('time_ratio_wall_s'), 1, '{:.3f}') if vs else '-'} |")
        lines += ["", "Accuracy at matched MFLOPs (best test accuracy with MFLOPs ≤ budget, %; "
                  "Δ = paired difference vs slim, pp):", ""]
        methods = list(nd["methods"])
        others = [m for m in methods if m != "slim" and m in nd["vs_slim"]]
        head = ["budget (width)", "MFLOPs", *methods, *(f"Δ {m}−slim" for m in others)]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, mf in nd["budgets"].items():
            row = [f"w={name}", f"{mf:.3f}"]
            row += [_pm(nd["methods"][m]["matched"][name], 100) for m in methods]
            row += [_pm(nd["vs_slim"][m]["matched_delta"][name], 100, "{:+.2f}") for m in others]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


COLORS = {"slim": "tab:blue", "pareco": "tab:red", "twostage": "tab:green",
          "independent": "black"}
STYLES = {"slim": "-", "pareco": "-", "twostage": "--"}  # twostage often overlays slim


def plot(results: dict[str, Any], path: Path) -> Path:
    """Figure-4-style plot: one panel per network, test accuracy vs MFLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(results["networks"].items())
    fig, axes = plt.subplots(1, max(1, len(nets)), figsize=(6.2 * max(1, len(nets)), 4.6),
                             squeeze=False)
    for ax, (network, nd) in zip(axes[0], nets):
        lo = min(p["mflops"] for d in nd["methods"].values() for f in d["fronts"].values()
                 for p in f)
        hi = max(nd["mflops_range"][1], *nd["budgets"].values())
        grid = np.linspace(lo, hi, 600)
        for method, d in nd["methods"].items():
            color = COLORS.get(method, None)
            if method == "independent":
                for i, (seed, front) in enumerate(d["fronts"].items()):
                    ax.scatter([p["mflops"] for p in front], [100 * p["test_acc"] for p in front],
                               marker="*", s=90, color=color, zorder=5,
                               label="independent" if i == 0 else None)
                continue
            curves = []
            for seed, front in d["fronts"].items():
                y = 100 * staircase(front, grid)
                curves.append(y)
                ax.step(grid, y, where="post", color=color, lw=0.8, alpha=0.45,
                        ls=STYLES.get(method, "-"))
                ax.plot([p["mflops"] for p in front], [100 * p["test_acc"] for p in front],
                        ".", color=color, ms=3, alpha=0.6)
            mean = np.nanmean(np.array(curves), axis=0)
            area = d["area"]
            label = f"{method} (area {_pm(area, 100)})"
            ax.step(grid, mean, where="post", color=color, lw=2.0, label=label,
                    ls=STYLES.get(method, "-"))
        ax.set_title(f"{network}: Fashion-MNIST test accuracy vs MFLOPs")
        ax.set_xlabel("MFLOPs (millions of MACs)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    p = results["protocol"]
    fig.suptitle(f"{p['epochs']} epochs, {p['train_images']} training images, |H| = "
                 f"{p['history_size']}, seeds {p['seeds']} — thin: each seed, thick: seed mean",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------- CLI
def _csv(kind):
    def parse(text: str):
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/methods.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", type=_csv(str), default=list(NETWORKS),
                   help=f"comma-separated, of {', '.join(NETWORKS)} (default both)")
    p.add_argument("--methods", type=_csv(str), default=list(METHODS),
                   help=f"comma-separated, of {', '.join(METHODS)} (default all)")
    p.add_argument("--seeds", type=_csv(int), help=f"comma-separated (default {DEFAULTS['seeds']})")
    p.add_argument("--epochs", type=int, help=f"epochs of every run (default {DEFAULTS['epochs']})")
    p.add_argument("--subset", type=int,
                   help=f"first N Fashion-MNIST training images (default {DEFAULTS['subset']})")
    p.add_argument("--val-size", type=int,
                   help=f"validation images carved from the subset (default {DEFAULTS['val_size']})")
    p.add_argument("--batch-size", type=int, help=f"default {DEFAULTS['batch_size']}")
    p.add_argument("--history-size", type=int,
                   help=f"|H| of PareCO and TwoStage's search (default {DEFAULTS['history_size']})")
    p.add_argument("--eval-batch", type=int,
                   help=f"held-out batch of the H evaluation (default {DEFAULTS['eval_batch']})")
    p.add_argument("--calib-images", type=int,
                   help=f"BN calibration images per front candidate (default {DEFAULTS['calib_images']})")
    p.add_argument("--val-images", type=int,
                   help=f"validation images selecting the front (default {DEFAULTS['val_images']})")
    p.add_argument("--max-configs", type=int, help=f"front size bound (default {DEFAULTS['max_configs']})")
    p.add_argument("--independent-widths", type=_csv(float),
                   help=f"uniform widths trained alone (default {DEFAULTS['independent_widths']})")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="recipe override passed to every run (repeatable)")
    p.add_argument("--data-dir", type=Path, help="folder holding Fashion-MNIST (default: found)")
    p.add_argument("--device", help="passed to every run (default: the CLI's auto)")
    p.add_argument("--threads", type=int, help="torch threads of every run (default: all cores)")
    p.add_argument("--runs-dir", type=Path,
                   help="where the runs are trained and reused (default runs/bench-methods, or "
                        "runs/bench-methods-quick with --quick)")
    p.add_argument("--out", type=Path, help="result JSON (default bench/results/methods-<host>-<date>.json;"
                                            " the plot is written next to it as .png)")
    p.add_argument("--quick", action="store_true",
                   help="tiny protocol for tests (1 seed, 1 epoch, 300 images, |H| 8, 16x16 images)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: report the finished runs found in --runs-dir")
    return p


def resolve(a: argparse.Namespace) -> argparse.Namespace:
    base = QUICK if a.quick else DEFAULTS
    for key, value in base.items():
        if key == "set":
            continue
        if getattr(a, key) is None:
            setattr(a, key, _csv(int if key == "seeds" else float)(value)
                    if key in ("seeds", "independent_widths") else value)
    if a.set is None:
        a.set = list(base.get("set", []))
    bad = [n for n in a.networks if n not in NETWORKS]
    if bad:
        raise BenchError(f"--networks: unknown {bad}; choose from {', '.join(NETWORKS)}")
    bad = [m for m in a.methods if m not in METHODS]
    if bad:
        raise BenchError(f"--methods: unknown {bad}; choose from {', '.join(METHODS)}")
    if not a.seeds:
        raise BenchError("--seeds: at least one seed")
    for key in ("epochs", "subset", "val_size", "batch_size", "history_size", "eval_batch",
                "calib_images", "val_images", "max_configs"):
        if getattr(a, key) < 1:
            raise BenchError(f"--{key.replace('_', '-')}: must be positive")
    if a.val_size * 2 > a.subset:
        raise BenchError("--val-size must leave at least half of --subset for training")
    if a.runs_dir is None:
        a.runs_dir = REPO / "runs" / ("bench-methods-quick" if a.quick else "bench-methods")
    if a.out is None:
        a.out = default_result_path("methods" + ("-quick" if a.quick else ""))
    # the runs execute in the repository root: relative paths are the caller's
    a.runs_dir, a.out = a.runs_dir.absolute(), a.out.absolute()
    if a.data_dir is not None:
        a.data_dir = a.data_dir.absolute()
    return a


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        a = resolve(a)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shared = protocol_args(a)
    expected = {m: (len(a.independent_widths) if m == "independent" else 1) for m in METHODS}
    t0 = time.perf_counter()
    records, failed = [], []
    # seed-major order: a partial protocol already holds complete comparisons for the first seeds
    order = [(s, n, m) for s in a.seeds for n in a.networks for m in a.methods]
    try:
        for seed, network, method in order:
            out = run_dir(a.runs_dir, network, method, seed)
            if a.report_only:
                files = weight_files(out, method)
                rec = {"network": network, "method": method, "seed": seed, "out": str(out),
                       "status": "reused" if len(files) >= expected[method] else "missing",
                       "files": [str(f) for f in files]}
            else:
                rec = run_one(network, method, seed, a.runs_dir, shared, expected[method])
            records.append(rec)
            if rec["status"] in ("failed", "missing"):
                failed.append(rec)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command again to continue",
              file=sys.stderr)
        return 130
    session_s = time.perf_counter() - t0

    runs: dict[str, dict[str, dict[int, dict]]] = {}
    for rec in records:
        if rec["status"] in ("reused", "trained"):
            doc = read_run(rec["files"])
            rec["times"] = doc["times"]
            runs.setdefault(rec["network"], {}).setdefault(rec["method"], {})[rec["seed"]] = doc
    first = next((r for n in runs.values() for m in n.values() for r in m.values()), None)
    protocol = {k: getattr(a, k) for k in ("networks", "methods", "seeds", "epochs", "subset",
                                           "val_size", "batch_size", "history_size", "eval_batch",
                                           "calib_images", "val_images", "max_configs",
                                           "independent_widths", "set", "quick")}
    protocol.update(train_images=first and first["train_images"], device=first and first["device"],
                    threads=first and first["threads"], cli_flags=shared,
                    data_dir=None if a.data_dir is None else str(a.data_dir))
    results = {
        "benchmark": "methods",
        "environment": environment(),
        "protocol": protocol,
        "complete": not failed,
        "session_s": round(session_s, 1),
        "runs": records,
        "networks": analyze(runs, a.methods),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    png = a.out.with_suffix(".png")
    if results["networks"]:
        plot(results, png)
        results["plot"] = str(png)
    a.out.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")

    print()
    print(f"## Methods benchmark ({'quick' if a.quick else 'protocol'}: {a.epochs} epochs, "
          f"{protocol['train_images']} training images, |H| {a.history_size}, seeds {a.seeds})")
    print()
    print("command: " + results["environment"]["command"])
    print()
    print(markdown(results))
    summary = _summary_lines(results)
    if summary:
        print("\n".join(summary))
    if failed:
        print(format_table(["network", "method", "seed", "status"],
                           [[r["network"], r["method"], r["seed"], r["status"]] for r in failed],
                           title="\nIncomplete runs:"))
    print(f"\nwrote {a.out}" + (f" and {png}" if results.get("plot") else ""))
    return 1 if failed else 0


def _summary_lines(results: dict[str, Any]) -> list[str]:
    """The issue's targets, measured: PareCO area >= Slim's, PareCO training <= 1.2 x Slim's."""
    lines = []
    for network, nd in results["networks"].items():
        vs = nd["vs_slim"].get("pareco")
        if not vs:
            continue
        d, r = vs["area_delta"], vs["time_ratio_training_s"]
        if d["mean"] is not None:
            verdict = "PASS" if d["mean"] >= 0 else "MISS"
            lines.append(f"{network}: area PareCO − Slim = {100 * d['mean']:+.2f} pp "
                         f"(per seed {[round(100 * v, 2) for v in d['values']]}) → {verdict} "
                         f"(target ≥ 0)")
        if r["mean"] is not None:
            verdict = "PASS" if r["mean"] <= 1.2 else "MISS"
            lines.append(f"{network}: training time PareCO / Slim = {r['mean']:.3f} "
                         f"(per seed {[round(v, 3) for v in r['values']]}) → {verdict} "
                         f"(target ≤ 1.2)")
        pd = nd["methods"]["pareco"]
        for seed, sd in (pd.get("search") or {}).items():
            train_s = pd["times"]["train_s"]["per_seed"][seed]
            over = sd.get("h_eval_s", 0.0) + sd.get("search_s", 0.0)
            lines.append(f"{network} seed {seed}: PareCO's search inside its {train_s:.0f} s of "
                         f"training: H re-evaluation {sd.get('h_eval_s', 0):.1f} s "
                         f"({sd.get('h_eval_forwards', 0)} forwards), proposals "
                         f"{sd.get('search_s', 0):.1f} s (GP fits {sd.get('gp_fit_s', 0):.1f} s) "
                         f"= {100 * over / train_s:.0f}% of it; |H| = {sd.get('history_size')}")
    return lines


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o)}")


if __name__ == "__main__":
    sys.exit(main())
