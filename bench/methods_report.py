"""Reports of the methods benchmark: markdown tables, the Figure-4-style plot and the verdicts
on the issue's targets (areas PareCO vs Slim, time ratios). Pure functions of the results JSON
written by ``bench/methods.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.methods_analysis import staircase

def _pm(d: dict | None, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    if not d or d.get("mean") is None:
        return "-"
    text = fmt.format(scale * d["mean"])
    if d["n"] > 1:
        text += " ± " + fmt.format(scale * d["std"])
    return text


def _seconds(mdoc: dict, key: str) -> str:
    """Mean ± sd seconds of ``key``, per device where the seeds ran on more than one."""
    groups = mdoc.get("times_by_device", {}).get(key)
    if not groups or len(groups) == 1:
        return _pm(mdoc["times"][key], 1, "{:.0f}")
    return "; ".join(f"{dev}: {_pm(g, 1, '{:.0f}')}" for dev, g in groups.items())


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
                f"{_seconds(d, 'train_s')} | {_seconds(d, 'search_s')} | {_seconds(d, 'front_s')} | "
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


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The targets, measured: PareCO's area above Slim's with the paired mean above the paired
    spread (sample std over seeds), and PareCO's training time <= 1.25 x Slim's."""
    lines = []
    for network, nd in results["networks"].items():
        vs = nd["vs_slim"].get("pareco")
        if not vs:
            continue
        d, r = vs["area_delta"], vs["time_ratio_training_s"]
        if d["mean"] is not None:
            verdict = "PASS" if d["mean"] > max(0.0, d["std"]) else "MISS"
            lines.append(f"{network}: area PareCO − Slim = {100 * d['mean']:+.2f} ± "
                         f"{100 * d['std']:.2f} pp (per seed "
                         f"{[round(100 * v, 2) for v in d['values']]}) → {verdict} "
                         f"(target: mean > 0 and > the paired spread)")
        if r["mean"] is not None:
            verdict = "PASS" if r["mean"] <= 1.25 else "MISS"
            lines.append(f"{network}: training time PareCO / Slim = {r['mean']:.3f} "
                         f"(seeds {vs.get('time_ratio_seeds')} on Slim's device: "
                         f"{[round(v, 3) for v in r['values']]}) → {verdict} "
                         f"(target ≤ 1.25)")
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


