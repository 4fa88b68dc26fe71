"""Reports of a built zoo model, all derived from its weight file (so they never disagree with it).

    write_reports("zoo/resnet20-fashionmnist", "zoo/resnet20-fashionmnist/model.safetensors",
                  history=H, history_ce=ce, log=records)

writes into the output folder:

- ``front.json``: the front (ids, α, channels, MFLOPs, params, val/test accuracy, exactly as in
  the weight file), the model's identity and preprocessing, a summary and the training record;
- ``front.png``: test accuracy vs MFLOPs of the front (and, given ``history``, the explored
  configurations H in (MFLOPs, cross-entropy) in a second panel);
- ``widths.png``: the per-group width multipliers of the front configurations (the paper's
  Figure 6): a heatmap over groups × configs and one line per a few configs;
- ``README.md``: the model card (:mod:`pareco.card`);

and updates the zoo index (default ``<out_dir>/../index.json``): a JSON list of built models,
one entry per name (the output folder's name), replaced atomically.

MFLOPs are millions of multiply-accumulates per image; accuracies in the files are fractions,
shown as percentages in the card and plots.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pareco.atomic import atomic_write_bytes
from pareco.card import model_card
from pareco.pareto import area_under_front, nondominated
from pareco.weightfile import ZooModel, load_zoo_model


# -------------------------------------------------------------------------------- summary
def _dataset(training: dict[str, Any]) -> str:
    recipe = training.get("recipe") if isinstance(training.get("recipe"), dict) else {}
    for d in (training.get("dataset"), recipe.get("dataset"), recipe.get("data")):
        if isinstance(d, dict):
            d = d.get("name")
        if isinstance(d, str) and d:
            return d
    return "unknown"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def summarize(out_dir: Path, zoo_path: Path, zoo: ZooModel, history: Tensor | None,
              log: list[dict] | None) -> dict[str, Any]:
    """The ``front.json`` document of a loaded weight file."""
    doc, front, net = zoo.meta, zoo.front, zoo.net
    training = doc.get("training") or {}
    mflops = [c.mflops for c in front]
    tests = [c.test_acc for c in front if c.test_acc is not None]
    vals = [c.val_acc for c in front if c.val_acc is not None]
    auc = None
    if len(tests) == len(front) and mflops[-1] > mflops[0]:
        auc = area_under_front(mflops, [c.test_acc for c in front], mflops[0], mflops[-1])
    return {
        "name": out_dir.resolve().name,
        "weights": {"file": os.path.relpath(zoo_path.resolve(), out_dir.resolve()),
                    "bytes": zoo_path.stat().st_size, "sha256": _sha256(zoo_path)},
        "arch": doc["arch"],
        "dataset": _dataset(training),
        "method": training.get("method", "unknown"),
        "preprocessing": doc["preprocessing"],
        "classes": doc["classes"],
        "width_space": doc["width_space"],
        "full_model": {"mflops": net.macs() / 1e6, "params": net.params()},
        "front": doc["front"],
        "summary": {
            "front_size": len(front),
            "candidates": len(zoo.candidates),
            "searched_configs": sum(1 for c in front if not is_uniform(c.alpha)),
            "smallest_mflops": mflops[0], "largest_mflops": mflops[-1],
            "best_test_acc": max(tests) if tests else None,
            "best_val_acc": max(vals) if vals else None,
            "test_acc_of_largest": front[-1].test_acc,
            "area_under_front_test": auc,
            "history_size": None if history is None else int(history.shape[0]),
            "log_records": None if log is None else len(log),
        },
        "training": training,
        "last_log_record": log[-1] if log else None,
        "software": doc.get("software", {}),
    }


def is_uniform(alpha: Any) -> bool:
    """Whether ``alpha`` is a uniform width (one multiplier for every group), i.e. not a
    per-layer configuration found by a search."""
    return max(alpha) - min(alpha) < 1e-9


# ---------------------------------------------------------------------------------- files
def _json_bytes(obj: Any) -> bytes:
    """Strict JSON (non-finite floats become null), indented."""
    return (json.dumps(_finite(obj), indent=2, allow_nan=False, default=_json_default) + "\n").encode()


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, (Tensor, np.generic, np.ndarray)):
        return _finite(o.tolist())
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (POSIX); a no-op where unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_index(index: Path) -> list[dict[str, Any]]:
    """The entries of the zoo index (``[]`` if absent); ``ValueError`` if it is not a JSON list."""
    if not index.exists():
        return []
    try:
        entries = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{index} is not valid JSON ({e}); fix or delete it") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{index} is not a JSON list of model entries; fix or delete it")
    return entries


def update_index(index: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Insert ``entry`` into the JSON list at ``index``, replacing one with the same name.

    Read-modify-write under a folder lock, written atomically; entries sorted by name.
    Raises ``ValueError`` if an existing index is not a JSON list (it is never clobbered).
    """
    index.parent.mkdir(parents=True, exist_ok=True)
    with _locked(index.parent):
        entries = read_index(index)
        entries = [e for e in entries if e.get("name") != entry["name"]] + [entry]
        entries.sort(key=lambda e: str(e.get("name")))
        atomic_write_bytes(index, _json_bytes(entries))
    return entries


def index_entry(summary: dict[str, Any], zoo_path: Path, out_dir: Path, index: Path) -> dict[str, Any]:
    base = index.parent.resolve()
    s = summary["summary"]
    return {
        "name": summary["name"],
        "path": os.path.relpath(zoo_path.resolve(), base),
        "card": os.path.relpath((out_dir / "README.md").resolve(), base),
        "arch": summary["arch"]["name"],
        "dataset": summary["dataset"],
        "method": summary["method"],
        "full_mflops": summary["full_model"]["mflops"],
        "smallest_mflops": s["smallest_mflops"],
        "best_test_acc": s["best_test_acc"],
        "front_size": s["front_size"],
    }


# ---------------------------------------------------------------------------------- plots
def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_front(summary: dict[str, Any], history_mflops: np.ndarray | None,
               history_ce: np.ndarray | None) -> bytes:
    """``front.png``: test (and val) accuracy vs MFLOPs; H in a second panel when given."""
    front = summary["front"]
    m = np.array([c["mflops"] for c in front])
    full = summary["full_model"]["mflops"]
    fig = _figure(11 if history_mflops is not None else 6.5, 4.6)
    axes = fig.subplots(1, 2 if history_mflops is not None else 1, squeeze=False)[0]
    ax = axes[0]
    test = [c.get("test_acc") for c in front]
    val = [c.get("val_acc") for c in front]
    if all(v is not None for v in test):
        t = 100 * np.array(test, dtype=float)
        ax.step(m, t, where="post", color="C0", lw=1.5, alpha=0.6,
                label="test accuracy served within a budget")
        ax.plot(m, t, "o", color="C0", label="test accuracy of each front config")
        for c, x, y in zip(front, m, t):
            ax.annotate(c["id"], (x, y), textcoords="offset points", xytext=(3, -11), fontsize=7)
    if all(v is not None for v in val):
        ax.plot(m, 100 * np.array(val, dtype=float), "s--", ms=4, color="C1", alpha=0.8,
                label="validation accuracy (selection)")
    ax.axvline(full, color="gray", ls=":", lw=1)
    ax.annotate(f"full width: {full:.3g} MFLOPs ", (full, 0.98), xycoords=("data", "axes fraction"),
                ha="right", va="top", fontsize=7, color="gray")
    ax.set_xlim(0, full * 1.05)
    ax.set_xlabel("MFLOPs (millions of multiply-accumulates per image)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{summary['name']}: {summary['method']} on {summary['dataset']}\n"
                 f"{len(front)} configurations; the y axis is zoomed to the data", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    if history_mflops is not None:
        _plot_history(axes[1], history_mflops, history_ce, m, full)
    return _png(fig)


def _plot_history(ax: Any, hm: np.ndarray, hce: np.ndarray | None, front_m: np.ndarray,
                  full: float) -> None:
    if hce is not None:
        ok = np.isfinite(hce)
        ax.scatter(hm[ok], hce[ok], s=6, alpha=0.25, color="C2", lw=0,
                   label=f"explored configurations H ({len(hm)})")
        nd = nondominated(np.stack([hm[ok], hce[ok]], axis=1), maximize=[False, False])
        nd = nd[np.argsort(hm[ok][nd])]
        ax.plot(hm[ok][nd], hce[ok][nd], ".-", color="C3", lw=1, ms=4,
                label=f"non-dominated in H ({len(nd)})")
        ax.set_ylabel("cross-entropy on a held-out batch (nats)")
        ax.set_title("Explored configurations (latest cross-entropy)", fontsize=9)
    else:
        ax.hist(hm, bins=40, color="C2", alpha=0.5, label=f"explored configurations H ({len(hm)})")
        ax.set_ylabel("configurations per bin")
        ax.set_title("Explored configurations (MFLOPs histogram)", fontsize=9)
    for i, x in enumerate(front_m):
        ax.axvline(x, color="C0", alpha=0.25, lw=0.8, label="front configurations" if i == 0 else None)
    ax.set_xlim(0, full * 1.05)
    ax.set_xlabel("MFLOPs (millions of multiply-accumulates per image)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_widths(summary: dict[str, Any], max_lines: int = 5) -> bytes:
    """``widths.png``: α per group (rows) and front config (columns), plus lines for a few configs."""
    front = summary["front"]
    groups = [g["name"] for g in summary["width_space"]["groups"]]
    lower = float(summary["width_space"]["lower"])
    a = np.array([c["alpha"] for c in front], dtype=float).T  # groups x configs
    d, k = a.shape
    fig = _figure(max(6.5, 1.0 + 0.55 * max(k, d)), 2.5 + 0.32 * d + 3.2)
    top, bottom = fig.subplots(2, 1, height_ratios=[0.6 + 0.3 * d, 3.2])
    im = top.imshow(a, aspect="auto", cmap="viridis", vmin=lower, vmax=1.0)
    top.set_yticks(range(d), groups, fontsize=7)
    top.set_xticks(range(k), [f"{c['id']}\n{c['mflops']:.3g}" for c in front], fontsize=7)
    top.set_xlabel("front configuration (id / MFLOPs)", fontsize=8)
    top.set_title("Width multiplier α per channel group", fontsize=9)
    if d * k <= 400:
        for g in range(d):
            for j in range(k):
                top.text(j, g, f"{a[g, j]:.2f}", ha="center", va="center", fontsize=6,
                         color="white" if a[g, j] < lower + 0.6 * (1 - lower) else "black")
    fig.colorbar(im, ax=top, label="α", fraction=0.04)
    picks = sorted({round(x) for x in np.linspace(0, k - 1, min(k, max_lines))})
    for j in picks:
        bottom.plot(range(d), a[:, j], "o-", ms=4, label=f"{front[j]['id']} ({front[j]['mflops']:.3g} MFLOPs)")
    bottom.set_xticks(range(d), groups, rotation=45 if d > 4 else 0, ha="right" if d > 4 else "center",
                      fontsize=7)
    bottom.set_ylim(lower - 0.05, 1.05)
    bottom.axhline(lower, color="gray", ls=":", lw=1)
    bottom.set_ylabel("width multiplier α")
    bottom.set_xlabel("channel group")
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="config",
                  title_fontsize=7)
    return _png(fig)


# ----------------------------------------------------------------------------------- entry
def write_reports(out_dir: str | os.PathLike, zoo_path: str | os.PathLike, *,
                  history: Tensor | None = None, history_ce: Tensor | None = None,
                  log: list[dict] | None = None, zoo_index: str | os.PathLike | None = None) -> None:
    """Write front.json, front.png, widths.png and README.md into ``out_dir``; update the index.

    ``history``: ``(n, d)`` width multipliers explored during training (H), drawn as faint points;
    ``history_ce``: their latest cross-entropies (nats), same length; ``log``: the training log
    records (JSON-lines dicts); ``zoo_index``: the index file (default ``out_dir/../index.json``).
    Everything else is read from the weight file, which is loaded and validated first.
    """
    out_dir, zoo_path = Path(out_dir), Path(zoo_path)
    index = Path(zoo_index) if zoo_index is not None else out_dir.resolve().parent / "index.json"
    read_index(index)  # fail before any work on a corrupt index (it is never clobbered)
    out_dir.mkdir(parents=True, exist_ok=True)
    zoo = load_zoo_model(zoo_path)
    hm = hce = None
    if history is not None:
        h = torch.as_tensor(history, dtype=torch.float64).cpu()
        if h.dim() != 2 or h.shape[1] != zoo.net.width_space.dim:
            raise ValueError(f"history must be (n, {zoo.net.width_space.dim}), got {tuple(h.shape)}")
        h = h.clamp(zoo.net.width_space.lower, 1.0)
        hm = (zoo.net.macs_batch(h) / 1e6).numpy()
        if history_ce is not None:
            hce = torch.as_tensor(history_ce, dtype=torch.float64).cpu().reshape(-1).numpy()
            if hce.shape[0] != hm.shape[0]:
                raise ValueError(f"history_ce has {hce.shape[0]} entries for {hm.shape[0]} configs")
    summary = summarize(out_dir, zoo_path, zoo, None if history is None else h, log)
    atomic_write_bytes(out_dir / "front.json", _json_bytes(summary))
    atomic_write_bytes(out_dir / "front.png", plot_front(summary, hm, hce))
    atomic_write_bytes(out_dir / "widths.png", plot_widths(summary))
    card = model_card(summary | {"_weights_path": str(zoo_path.resolve())}, log, Path.cwd())
    atomic_write_bytes(out_dir / "README.md", card.encode())
    update_index(index, index_entry(summary, zoo_path, out_dir, index))


__all__ = ["write_reports", "summarize", "read_index", "update_index", "plot_front", "plot_widths", "model_card"]
