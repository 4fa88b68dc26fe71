"""``python -m pareco.train``: train a slimmable network and build its zoo entry.

    python -m pareco.train                                   # resnet20-fashionmnist, PareCO
    python -m pareco.train --recipe resnet20-cifar100 --method slim --out runs/r20-slim
    python -m pareco.train --out runs/r20-slim --resume      # continue an interrupted run
    python -m pareco.train --list-recipes

The output folder receives ``model.safetensors`` (shared weights, per-config BN statistics and the
front: see :mod:`pareco.weightfile`), the reports (``front.json``, ``front.png``, ``widths.png``,
``README.md``), ``train_log.jsonl`` and ``run.json`` (the resolved settings, read by --resume);
``train_state.safetensors`` exists while a run is unfinished. ``--method independent`` trains each
width of ``independent.widths`` alone into ``<out>/w<width>/model.safetensors`` (each a weight file
whose front is that one uniform width) and lists them in ``<out>/index.json``.

Exit status: 0 on success, 2 on bad input (one ``error:`` line on stderr), 1 when training fails
(e.g. the loss diverges), 143 / 130 when stopped by SIGTERM / Ctrl-C (during training the
state is saved at the step it stopped after; continue with --resume).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

from pareco.cliargs import nonnegative_int, positive_float, positive_int

DEFAULT_CHECKPOINT_SECONDS = 600.0


class UsageError(Exception):
    """Bad command-line input: reported as one ``error:`` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    from pareco.training.recipe import DEFAULT_RECIPE, METHODS

    p = _Parser(prog="python -m pareco.train", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="Recipes live in zoo/recipes/*.yaml; see zoo/recipes/README.md.")
    p.add_argument("--recipe", help=f"recipe name or path to a YAML file (default {DEFAULT_RECIPE})")
    p.add_argument("--method", choices=METHODS, help="training method (default: the recipe's)")
    p.add_argument("--epochs", type=positive_int,
                   help="epochs of the run (train.epochs; independent.epochs for --method independent)")
    p.add_argument("--out", type=Path,
                   help="output folder (default zoo/<recipe>, or zoo/<recipe>-<method> for a "
                        "method other than the recipe's)")
    p.add_argument("--seed", type=nonnegative_int, help="seed of init, data order and width choices (default 0)")
    p.add_argument("--data-dir", type=Path, help="folder holding the dataset (searched first)")
    p.add_argument("--no-download", action="store_true", help="never download the dataset")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--resume", action="store_true",
                   help="continue the unfinished run in the output folder with its saved settings")
    p.add_argument("--subset", type=positive_int, help="use only the first N training images")
    p.add_argument("--val-size", type=positive_int,
                   help="validation images carved from the training set (data.val_size)")
    p.add_argument("--batch-size", type=positive_int, help="training batch size (train.batch_size)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (train.lr)")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="training forward precision (train.precision; bf16: torch.autocast, "
                        "faster on CPUs with AVX512-BF16 but less accurate on the default "
                        "recipe, see bench/reports/methods.md)")
    p.add_argument("--history-size", type=positive_int, help="target |H| (pareco.history_size)")
    p.add_argument("--eval-batch", type=positive_int,
                   help="held-out batch of the H re-evaluation (pareco.eval_batch)")
    p.add_argument("--calib-images", type=positive_int,
                   help="BN calibration images per front candidate (front.calib_images)")
    p.add_argument("--max-configs", type=positive_int, help="front size bound (front.max_configs)")
    p.add_argument("--divisor", type=positive_int,
                   help="round every channel group to a multiple of N (model.divisor; default 1: "
                        "no rounding; 8 suits CPU runtimes' blocked kernels)")
    p.add_argument("--cost", choices=("macs", "latency"),
                   help="the search's cost objective (pareco.cost; latency needs --latency-table)")
    p.add_argument("--latency-table", metavar="PATH",
                   help="per-layer latency table from python -m pareco.profile "
                        "(pareco.latency_table; with --cost latency)")
    p.add_argument("--init", choices=("none", "torchvision"), help="initialization (model.init)")
    p.add_argument("--init-source",
                   help="torchvision weights: 'imagenet' or a state_dict path (model.init_source)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe key, e.g. --set train.warmup_epochs=1 (repeatable; "
                        "VALUE is parsed as YAML)")
    p.add_argument("--workers", type=nonnegative_int, help="DataLoader worker processes (data.workers)")
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: all cores)")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                   help="also write the resume state every N steps (default: every epoch and "
                        f"every {DEFAULT_CHECKPOINT_SECONDS:.0f} s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or console lines")
    p.add_argument("--list-recipes", action="store_true", help="list the zoo's recipes and exit")
    return p


# ------------------------------------------------------------------------------- resolution
def _overrides(args: argparse.Namespace, method: str) -> dict[str, Any]:
    import yaml

    from pareco.training.recipe import RecipeError

    updates: dict[str, Any] = {}
    for item in args.overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            updates[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise RecipeError(f"--set {key}: cannot parse {text!r}") from None
    flags = {
        "train.batch_size": args.batch_size, "train.lr": args.lr, "train.precision": args.precision,
        "pareco.history_size": args.history_size, "pareco.eval_batch": args.eval_batch,
        "front.calib_images": args.calib_images, "front.max_configs": args.max_configs,
        "model.init": args.init, "model.init_source": args.init_source,
        "model.divisor": args.divisor, "pareco.cost": args.cost,
        "pareco.latency_table": args.latency_table,
        "data.workers": args.workers, "data.val_size": args.val_size,
        ("independent.epochs" if method == "independent" else "train.epochs"): args.epochs,
    }
    updates.update({k: v for k, v in flags.items() if v is not None})
    return updates


def _fit_val_size(recipe, subset: int | None, explicit: bool):
    """With ``--subset``, a recipe's validation count that would leave less than half the images
    for training becomes 10% of the subset (an explicit --val-size is kept as given)."""
    val = recipe.data.val_size
    if subset is None or explicit or not isinstance(val, int) or val * 2 <= subset:
        return recipe
    return recipe.override({"data.val_size": max(1, subset // 10)})


def resolve(args: argparse.Namespace) -> tuple[Any, int, int | None, Path]:
    """The recipe (with overrides), seed, subset and output folder of this invocation.

    With --resume the settings saved in ``<out>/run.json`` are the defaults: flags given again
    must agree with them (the resume state checks that).
    """
    from pareco.training.recipe import DEFAULT_RECIPE, ZOO_DIR, from_dict, load_recipe

    recipe = load_recipe(args.recipe or DEFAULT_RECIPE) if args.recipe or not args.out else None
    out = args.out
    if out is None:
        method = args.method or recipe.method
        out = ZOO_DIR / (recipe.name if method == recipe.method else f"{recipe.name}-{method}")
    saved = _saved_run(out) if args.resume else None
    if recipe is None:
        if saved is not None:
            recipe = from_dict(saved["recipe"], source=str(out / "run.json"))
        else:
            recipe = load_recipe(DEFAULT_RECIPE)
    method = args.method or recipe.method
    recipe = recipe.override({"method": method, **_overrides(args, method)})
    saved = saved or {}
    subset = args.subset if args.subset is not None else saved.get("subset")
    if not saved:
        recipe = _fit_val_size(recipe, subset, args.val_size is not None)
    seed = args.seed if args.seed is not None else saved.get("seed", 0)
    return recipe, seed, subset, out


def _saved_run(out: Path) -> dict | None:
    path = out / "run.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} is unreadable ({e}); cannot resume") from None


def _device(text: str):
    import torch

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device: unknown device {text!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device: {text} does not exist ({torch.cuda.device_count()} GPUs)")
    elif device.type != "cpu":
        raise UsageError(f"--device: unsupported device type {device.type!r}; use cpu or cuda")
    return device


def _prepare_out(out: Path, resume: bool, method: str) -> None:
    from pareco.training.checkpoint import STATE_FILE

    if resume and not out.is_dir():
        raise UsageError(f"nothing to resume: {out} does not exist")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"output folder {out} is not writable ({e.strerror or e})") from None
    states = [out / STATE_FILE] if method != "independent" else list(out.glob(f"w*/{STATE_FILE}"))
    has_state = any(p.is_file() for p in states)
    if has_state and not resume:
        raise UsageError(f"{out} holds an unfinished run; continue it with --resume, or choose "
                         f"another --out (or delete the folder) to start over")
    # an independent run may stop between widths, before the next width wrote any state
    resumable = has_state or (method == "independent" and (out / "run.json").is_file())
    if resume and not resumable:
        finished = " (its run is finished)" if (out / "model.safetensors").is_file() else ""
        raise UsageError(f"nothing to resume in {out}: it holds no unfinished run{finished}")


def _list_recipes() -> int:
    from pareco.training.recipe import RECIPE_DIR, RecipeError, list_recipes, load_recipe

    names = list_recipes()
    if not names:
        print(f"no recipes in {RECIPE_DIR}")
        return 0
    print(f"{'recipe':28s} {'model':16s} {'dataset':14s} {'method':8s} epochs")
    for name in names:
        try:
            r = load_recipe(name)
        except RecipeError as e:
            print(f"{name:28s} INVALID: {e}")
            continue
        epochs = f"{r.train.epochs}" + (f" (independent {r.independent.epochs})"
                                         if r.independent.epochs else "")
        print(f"{name:28s} {r.model.arch:16s} {r.data.dataset:14s} {r.method:8s} {epochs}")
    return 0


# ------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (see the module doc)."""
    try:
        return _main(argv)
    except UsageError as e:
        return _fail(str(e), 2)
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_recipes:
        return _list_recipes()
    # gpytorch (via botorch) decorates functions with torch.jit.script, deprecated in torch 2.9+
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)

    import torch

    from pareco.data import DataError, load_data
    from pareco.training.checkpoint import StateError
    from pareco.training.loop import TrainingDiverged
    from pareco.training.recipe import RecipeError
    from pareco.training.run import RunError, RunOptions
    from pareco.training.stop import Stopped

    try:
        if args.data_dir is not None and not args.data_dir.is_dir():
            raise UsageError(f"--data-dir {args.data_dir} is not a folder")
        recipe, seed, subset, out = resolve(args)
        device = _device(args.device)
        _prepare_out(out, args.resume, recipe.method)
        if args.threads:
            torch.set_num_threads(args.threads)
        data = load_data(recipe.data.dataset, data_dir=args.data_dir,
                         download=not args.no_download, val_size=recipe.data.val_size,
                         subset=subset, seed=0, image_size=recipe.data.image_size,
                         augment=recipe.data.augment or None)
        opts = RunOptions(seed=seed, device=device, resume=args.resume,
                          checkpoint_steps=args.checkpoint_every,
                          checkpoint_seconds=DEFAULT_CHECKPOINT_SECONDS, quiet=args.quiet,
                          subset=subset)
        from pareco.training.pipeline import train

        train(recipe, data, out, opts)
    except (RecipeError, DataError, RunError, StateError) as e:
        return _fail(str(e), 2)
    except TrainingDiverged as e:
        return _fail(str(e), 1)
    except OSError as e:  # disk full, permissions changed mid-run, ...: the resume state is intact
        return _fail(f"{e}; fix the cause and continue with --resume", 1)
    except Stopped as e:  # SIGTERM / Ctrl-C during training: saved at a step boundary
        print(str(e), file=sys.stderr)
        return 128 + e.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
