"""The Markdown model card of a built zoo model (``README.md`` in its output folder).

    text = model_card(summary, log, cwd=Path.cwd())

``summary`` is the dict that :func:`pareco.report.summarize` writes to ``front.json``, plus
``"_weights_path"`` (the weight file, shown relative to ``cwd`` in the usage snippets); ``log``
the training log records (JSON-lines dicts) or None. Accuracies in ``summary`` are fractions and
shown as percentages; MFLOPs are millions of multiply-accumulates per image.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

METHODS = {
    "pareco": "PareCO (Pareto-aware channel optimization): slimmable training whose per-group "
              "width multipliers are chosen by multi-objective Bayesian optimization on the "
              "(cross-entropy, MFLOPs) Pareto front (a GP on cross-entropy, exact FLOPs, "
              "Pareto-aware sampling); sandwich rule with in-place distillation.",
    "slim": "Slim (universally slimmable networks, US-Nets): one width multiplier for all layers, "
            "sampled uniformly; sandwich rule with in-place distillation. The front's per-group "
            "widths come from post-training calibration of uniform widths only.",
    "twostage": "Two-stage (OFA/BigNAS style): Slim training, then the same multi-objective "
                "Bayesian search run post hoc on the trained weights.",
    "independent": "Independent: each uniform width trained alone (reference points).",
}


def model_card(summary: dict[str, Any], log: list[dict] | None, cwd: Path) -> str:
    """The Markdown model card of one zoo model (see the module docstring for the inputs)."""
    wpath = _display_path(Path(summary["_weights_path"]), cwd)
    lines = (_overview(summary) + _model(summary) + _method(summary) + _training(summary)
             + _front(summary))
    if log:
        lines += ["## Training log", ""] + _log_table(log)
    lines += _usage(summary, wpath) + _software(summary) + _limitations(summary)
    return "\n".join(lines)


# ------------------------------------------------------------------------------- sections
def _overview(summary: dict[str, Any]) -> list[str]:
    s, full, arch = summary["summary"], summary["full_model"], summary["arch"]
    return [
        f"# {summary['name']}",
        "",
        f"A slimmable **{arch['name']}** trained on **{summary['dataset']}** with **{summary['method']}**: "
        f"one weight file that runs at {s['front_size']} width configurations, from "
        f"{s['smallest_mflops']:.3f} to {s['largest_mflops']:.3f} MFLOPs (the full network: "
        f"{full['mflops']:.3f} MFLOPs, {full['params']:,} parameters), reaching "
        f"{_pct(s['best_test_acc'])} top-1 test accuracy at best. Pick a configuration at run time "
        "by compute budget; no retraining, no second file.",
        "",
        "![accuracy vs MFLOPs](front.png)",
        "",
    ]


def _model(summary: dict[str, Any]) -> list[str]:
    ws, pre, arch = summary["width_space"], summary["preprocessing"], summary["arch"]
    classes, weights = summary["classes"], summary["weights"]
    n_candidates = summary["summary"].get("candidates") or 0
    candidates = (f"; also {n_candidates} other calibrated candidates (BN statistics and "
                  "validation accuracy), from which a serving host builds its latency front"
                  if n_candidates else "")
    return [
        "## Model",
        "",
        f"- Architecture: `{arch['name']}` with `{json.dumps(arch['kwargs'])}`.",
        f"- Width space: {ws['dim']} independent channel groups, multipliers α ∈ [{ws['lower']:g}, 1] "
        f"(channels = max(1, round(α·C)), divisor {ws.get('divisor', 1)}).",
        f"- Input: {pre['channels']}×{pre['image_size']}×{pre['image_size']} images, scaled to [0, 1] and "
        f"normalized with mean {pre['mean']} and std {pre['std']}.",
        f"- Output: logits over {len(classes)} classes: "
        + ", ".join(classes[:20]) + (", …" if len(classes) > 20 else "") + ".",
        f"- Weight file: `{weights['file']}` ({weights['bytes'] / 1e6:.2f} MB, "
        f"sha256 `{weights['sha256'][:16]}…`): shared weights, per-configuration BN "
        f"statistics and this front, in safetensors (no pickle){candidates}.",
        "",
    ]


def _method(summary: dict[str, Any]) -> list[str]:
    return [
        "## Method",
        "",
        METHODS.get(summary["method"], f"Training method `{summary['method']}`."),
        "",
        "After training, each candidate configuration (a grid of uniform widths, plus the "
        "non-dominated configurations explored by the search, for methods that search) gets its own batch-norm statistics from calibration images "
        "of the training set, is evaluated on a validation split carved from the training set, and "
        "the non-dominated set in (MFLOPs, validation accuracy) becomes the front. Test accuracy "
        "is measured only for the chosen configurations and never used to choose them.",
        "",
    ]


def _training(summary: dict[str, Any]) -> list[str]:
    s, tr = summary["summary"], summary["training"]
    lines = [
        "## Training",
        "",
        f"- Method: `{summary['method']}`; dataset: `{summary['dataset']}`; seed: "
        f"{tr.get('seed', 'not recorded')}; epochs: {tr.get('epochs', 'not recorded')}.",
        f"- Training wall time: {_duration(tr.get('wall_s'))}.",
    ]
    if s["history_size"] is not None:
        lines.append(f"- Explored configurations |H|: {s['history_size']}.")
    lines.append(f"- Front: {s['searched_configs']} of its {s['front_size']} configurations are "
                 "searched per-layer widths, the others uniform widths.")
    recipe = tr.get("recipe")
    if isinstance(recipe, dict) and recipe:
        lines += ["", "Recipe:", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in recipe.items()]
    return lines


def _front(summary: dict[str, Any]) -> list[str]:
    s, full, ws = summary["summary"], summary["full_model"], summary["width_space"]
    lines = ["", "## The front", "",
             "| id | MFLOPs | % of full | params | val acc | test acc | α per group |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for c in summary["front"]:
        lines.append(
            f"| {c['id']} | {c['mflops']:.3f} | {100 * c['mflops'] / full['mflops']:.1f}% | "
            f"{c['params']:,} | {_pct(c.get('val_acc'))} | {_pct(c.get('test_acc'))} | "
            + " ".join(f"{x:.2f}" for x in c["alpha"]) + " |")
    if s["area_under_front_test"] is not None:
        lines += ["", f"Area under the test-accuracy staircase over [{s['smallest_mflops']:.3f}, "
                      f"{s['largest_mflops']:.3f}] MFLOPs: {_pct(s['area_under_front_test'])} (mean "
                      "best accuracy over budgets in that range)."]
    return lines + ["", f"Groups: {', '.join(g['name'] for g in ws['groups'])}.", "",
                    "![width multipliers per group](widths.png)", ""]


def _usage(summary: dict[str, Any], wpath: str) -> list[str]:
    s = summary["summary"]
    budget = f"{s['largest_mflops'] / 2:.3g}"
    return [
        "## Use it", "",
        "Python:", "", "```python",
        "from pareco.weightfile import load_zoo_model",
        f'zoo = load_zoo_model("{wpath}")',
        f"cfg = zoo.best_within(mflops={budget})   # most accurate config within the budget",
        "dense = zoo.extract(cfg.id)                  # plain torch.nn.Module, eval mode",
        "logits = zoo.net(x, cfg.alpha, zoo.bn_stats[cfg.id])   # or run the slimmable net directly",
        "```", "",
        "Export dense ONNX subnets (one per configuration, with parity checks and a manifest):", "",
        "```sh", f"python -m export --weights {wpath} --all --out exported/{summary['name']}",
        "```", "",
        "Serve with runtime width switching:", "",
        "```sh", f"python -m serve --weights {wpath}",
        f"curl -F file=@image.png 'http://localhost:8000/predict?mflops={budget}'",
        "```", "",
    ]


def _software(summary: dict[str, Any]) -> list[str]:
    sw = summary["software"] or {}
    return ["## Software", ""] + ([f"- {k}: {v}" for k, v in sw.items()] or ["- not recorded"])


def _limitations(summary: dict[str, Any]) -> list[str]:
    pre = summary["preprocessing"]
    return [
        "",
        "## Limitations", "",
        f"- Accuracies are single-run numbers on {summary['dataset']} at "
        f"{pre['image_size']}×{pre['image_size']} input; no error bars. Validation accuracy was "
        "used to select the front, so it is optimistic; test accuracy is the number to quote.",
        "- MFLOPs are exact multiply-accumulates of the dense subnet, not latency: on a given "
        "device, fewer MFLOPs need not mean proportionally faster inference (measure it; the "
        "server does at start-up).",
        "- Only the configurations of the front carry BN statistics. Any other width vector "
        "needs its own BN calibration on training images before its outputs are meaningful.",
        "- Inputs must be preprocessed exactly as above (size, channels, mean/std); the model has "
        "not been evaluated on other resolutions or on images unlike its training distribution.",
        "",
    ]


# -------------------------------------------------------------------------------- helpers
def _display_path(weights: Path, cwd: Path) -> str:
    """``weights`` relative to ``cwd`` when it lies below it, else absolute."""
    try:
        rel = os.path.relpath(weights, cwd)
    except ValueError:  # another drive (Windows)
        return str(weights)
    return str(weights) if rel.startswith("..") else rel


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "not recorded"
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        return str(v)
    return "`" + json.dumps(v, default=str) + "`"


def _log_table(log: list[dict], rows: int = 15, cols: int = 8) -> list[str]:
    epochs = [r for r in log if isinstance(r, dict) and "epoch" in r] or list(log)
    keys: list[str] = []
    for r in epochs:
        keys += [k for k, v in r.items() if _scalar(v) and k not in keys]
    keys = keys[:cols]
    if not keys:
        return []
    shown = epochs[-rows:]
    out = [f"Last {len(shown)} of {len(log)} records of the training log:", "",
           "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in shown]
    return out + [""]


__all__ = ["model_card", "METHODS"]
