"""From a resolved recipe to finished output folders: runs, weight files, reports, summaries.

Sandwich methods (slim, pareco, twostage) produce one weight file ``<out>/model.safetensors``
and update the zoo index ``<out>/../index.json``. ``independent`` trains every width of
``independent.widths`` as its own run into ``<out>/w<width>/`` (weight file whose front is that
one uniform width, reports, log) and lists them in ``<out>/index.json``; a resumed independent
run skips the widths already finished.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pareco.atomic import atomic_write_bytes
from pareco.data import DataBundle
from pareco.report import write_reports
from pareco.training import distributed
from pareco.training.checkpoint import STATE_FILE
from pareco.training.log import LOG_FILE
from pareco.training.recipe import Recipe, RecipeError
from pareco.training.run import WEIGHT_FILE, Run, RunOptions
from pareco.weightfile import load_zoo_model

RUN_FILE = "run.json"


def write_run_file(out: Path, recipe: Recipe, opts: RunOptions) -> None:
    """``run.json``: the resolved settings of the run in ``out`` (what --resume continues)."""
    doc = {"recipe": recipe.to_dict(), "method": recipe.method, "seed": opts.seed,
           "subset": opts.subset}
    text = json.dumps(doc, indent=2) + "\n"
    atomic_write_bytes(out / RUN_FILE, text.encode())


def width_folder(out: Path, width: float) -> Path:
    return out / f"w{width:.3f}"


def train(recipe: Recipe, data: DataBundle, out: Path, opts: RunOptions) -> dict[str, Any]:
    """Run ``recipe`` into ``out`` (resuming if ``opts.resume``); returns a summary dict.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every process calls this: see
    :mod:`pareco.training.distributed`; rank 0 writes the files, the others return a summary
    without ``front``."""
    opts = distributed.setup_options(opts)
    try:
        if distributed.is_main() and (not opts.resume or not (out / RUN_FILE).is_file()):
            write_run_file(out, recipe, opts)
        t0 = time.perf_counter()
        if recipe.method == "independent":
            summary = _independent(recipe, data, out, opts)
        else:
            summary = _single(recipe, data, out, opts, alpha=None, index=None)
        summary["session_s"] = round(time.perf_counter() - t0, 1)
        distributed.barrier()
    finally:
        distributed.teardown()
    return summary


def _single(recipe: Recipe, data: DataBundle, out: Path, opts: RunOptions,
            alpha: tuple[float, ...] | None, index: Path | None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    run = Run(recipe, data, out, opts, alpha=alpha)
    training = run.execute()
    if not run.main:  # rank 0 writes the weight file and the reports; wait for it
        run.finish()
        distributed.barrier()
        return {"out": str(out), "training": training}
    candidates, ce = run.history
    history = candidates if len(candidates) and alpha is None else None
    write_reports(out, out / WEIGHT_FILE, history=history,
                  history_ce=ce if history is not None else None,
                  log=_epoch_records(out / LOG_FILE), zoo_index=index)
    run.finish()
    zoo = load_zoo_model(out / WEIGHT_FILE)
    _print_front(run, zoo, training)
    distributed.barrier()
    return {"out": str(out), "training": training,
            "front": [c.to_dict() for c in zoo.front]}


def _independent(recipe: Recipe, data: DataBundle, out: Path, opts: RunOptions) -> dict[str, Any]:
    from pareco.models import build

    probe = build(recipe.model.arch, num_classes=data.num_classes, in_channels=data.in_channels,
                  image_size=data.image_size, **recipe.model.kwargs)
    space = probe.width_space
    index = out / "index.json"
    runs = []
    for w in recipe.independent.widths:
        folder = width_folder(out, w)
        if w < space.lower:
            raise RecipeError(f"independent.widths: {w} is below {recipe.model.arch}'s smallest "
                              f"width {space.lower}")
        alpha = space.uniform(w)
        finished = (folder / WEIGHT_FILE).is_file() and not (folder / STATE_FILE).is_file()
        if opts.resume and finished:
            runs.append({"width": w, "out": str(folder), "skipped": "already finished"})
            continue
        resume = opts.resume and (folder / STATE_FILE).is_file()
        sub_opts = RunOptions(**{**opts.__dict__, "resume": resume})
        runs.append({"width": w, **_single(recipe, data, folder, sub_opts, alpha, index)})
    return {"out": str(out), "runs": runs}


def _epoch_records(path: Path) -> list[dict]:
    """The per-epoch records of a training log, flattened for the model card's table."""
    records = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("event") != "epoch":
            continue
        flat = {k: r[k] for k in ("epoch", "step", "loss", "loss_full", "lr", "epoch_s") if k in r}
        flat.update({f"val_{k}": v for k, v in (r.get("val_acc_batchstat") or {}).items()})
        records.append(flat)
    return records


def _print_front(run: Run, zoo, training: dict[str, Any]) -> None:
    log = run.log
    lines = [f"{'id':>4s} {'MFLOPs':>8s} {'val':>7s} {'test':>7s}  alpha"]
    for c in zoo.front:
        alpha = " ".join(f"{a:.2f}" for a in c.alpha)
        lines.append(f"{c.id:>4s} {c.mflops:8.3f} {_pct(c.val_acc):>7s} {_pct(c.test_acc):>7s}  {alpha}")
    timing = ", ".join(f"{k} {training[k]:.0f} s" for k in ("train_s", "search_s", "front_s")
                       if training.get(k))
    log.console(f"front of {len(zoo.front)} configs ({timing}; total {training['wall_s']:.0f} s):")
    for line in lines:
        log.console("  " + line)
    log.console(f"wrote {run.out / WEIGHT_FILE}")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"
