"""Methods benchmark: PareCO vs Slim vs TwoStage (and independent models) on Fashion-MNIST.

    python bench/methods.py --protocol resolve --commit          # accumulates over sittings
    python bench/methods.py --protocol resolve --device cuda --threads 1 --parallel 18  # one GPU
    python bench/methods.py --protocol resolve --report-only     # report the committed cells
    python bench/methods.py                                      # the first (short) protocol
    python bench/methods.py --protocol quick --data-dir /tmp/fmnist --out /tmp/m.json  # smoke run

Every run goes through the real training CLI, ``--parallel`` at a time (default one)::

    python -m pareco.train --recipe <network>-fashionmnist --method <method> --seed <s>
        --out <runs-dir>/<network>/<method>/seed<s> --quiet --no-download <protocol flags>

with the SAME protocol flags (epochs, subset, validation size, |H|, held-out batch, calibration
images, front settings, ``--set`` overrides) for every method, network and seed, so the methods
differ only in how they choose the sandwich's middle widths. The networks are the recipes
``resnet20-fashionmnist`` (base width 16), ``resnet20_half-fashionmnist`` and
``resnet20_quarter-fashionmnist`` (``model.kwargs.width_factor`` 0.5 and 0.25: the less
over-parameterized variants where the paper finds PareCO's gains largest). ``independent``
trains each uniform width of ``--independent-widths`` alone for the same number of epochs
(reference points: a converged slimmable front lies within ~2 pp of them).

Protocols (:data:`PROTOCOLS`; any flag overrides its value):

- ``resolve`` -- the one that can resolve 0.5 pp: quarter- and half-width ResNet20, all 60000
  training images (10000 of them the validation split), 15 epochs, seeds 0-2, PareCO's |H| from
  the recipe's overhead cap (83 at 5850 steps), held-out batch 256, matched fronts: the same 24
  uniform widths for every method (plus H's non-dominated configs for the searched ones),
  selection on the whole validation split, no thinning (``max_configs`` 1000), so the area is
  computed on the complete front; test accuracy on the full test set.
- ``default`` -- the first protocol (3 epochs on 11000 images, 2 seeds): far too short to rank
  the methods (fronts 10-12 pp below independent models), kept so its results stay comparable.
- ``quick`` -- a tiny smoke protocol for the tests.

Accumulating: a cell is one (network, method, seed). When it finishes, its result (front, times,
search diagnostics, the protocol's arguments and the recipe they resolve to) is written to
``<cells-dir>/<network>/<method>-seed<s>.json`` (default ``bench/results/cells-<protocol>/``)
and, with ``--commit``, committed to git at once, so a protocol longer than a sitting continues
on the next one, on another machine, where it stopped: committed cells are reused, an
interrupted cell resumes from its run folder (``--resume``), a cell or run folder of other
arguments, or a cell of another recipe (a recipe default changed since), is an error. Cells run
seed-major, so a partial protocol already holds complete paired comparisons for its first seeds.

Reported per network and method (mean and spread over seeds), in the JSON (``--out``) and as
markdown on stdout (:mod:`bench.methods_report`, from :mod:`bench.methods_analysis`):

- the area under the front (:func:`pareco.pareto.area_under_front`: the mean over budgets in the
  common MFLOPs range of the best test accuracy within the budget), with the paired per-seed
  differences PareCO - Slim and TwoStage - Slim;
- accuracy at matched MFLOPs (like the paper's Table 1) at the MFLOPs of uniform widths;
- training wall-clock time from the weight file's ``training`` section (``train_s`` includes
  PareCO's H re-evaluations and proposals, given separately; ``search_s`` is TwoStage's post-hoc
  search; ``front_s`` the front construction), and the paired time ratios vs Slim;
- a Figure-4-style plot next to the JSON.

Cost on 2 CPU cores: a sandwich step of half-width ResNet20 costs ~0.45x a ResNet20 step
(~0.78 s on the project's VM); quarter-width ResNet20 measured 0.68-0.72 s per step with one
thread, two cells in parallel, so one ``resolve`` cell (5850 steps) takes ~70 min plus its front
and the whole protocol (24 cells) ~15 h: run it with ``--commit`` in the background,
one sitting after another, or on a GPU. On a machine shared with other CPU-heavy work pass
``--threads 1`` (two-thread runs next to other multi-threaded processes oversubscribe the cores).
On one H200 with 16 CPU cores (CUDA MPS on), 15 ``resolve`` cells ran at once in 410 s, each at
15-18 steps/s whether 15 or 4 were running: a cell is bound by its own process's kernel launches,
so give each one a core (``--threads 1 --parallel`` up to the core count).
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.common import REPO, default_result_path, environment, format_table, load_average
from bench.methods_analysis import analyze, read_run
from bench.methods_report import markdown, plot, summary_lines

NETWORKS = ("resnet20", "resnet20_half", "resnet20_quarter")
METHODS = ("slim", "pareco", "twostage", "independent")
WEIGHT_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
BENCH_FILE = "bench.json"

PROTOCOLS: dict[str, dict[str, Any]] = {
    # the first protocol (2026-11): far too short to rank the methods, kept for comparability
    "default": {"networks": "resnet20,resnet20_half", "epochs": 3, "seeds": "0,1",
                "subset": 12000, "val_size": 1000, "history_size": 60, "eval_batch": 64,
                "calib_images": 1000, "val_images": "1000", "max_configs": 12,
                "batch_size": 128, "independent_widths": "0.316,0.5,0.75,1.0", "set": []},
    # the protocol that can resolve 0.5 pp: the less over-parameterized networks, all training
    # images, 3 seeds, matched fronts (the same 24 uniform widths for every method, selection on
    # the whole validation split, no thinning before the area), |H| by the recipe's overhead cap
    "resolve": {"networks": "resnet20_quarter,resnet20_half", "epochs": 15, "seeds": "0,1,2",
                "subset": 60000, "val_size": 10000, "history_size": 1000, "eval_batch": 256,
                "calib_images": 1000, "val_images": "all", "max_configs": 1000,
                "batch_size": 128, "independent_widths": "0.316,0.5,0.75,1.0",
                "set": ["front.uniform_grid=24"]},
    "quick": {"networks": "resnet20_half", "epochs": 1, "seeds": "0", "subset": 200,
              "val_size": 40, "history_size": 6, "eval_batch": 32, "calib_images": 32,
              "val_images": "40", "max_configs": 6, "batch_size": 32,
              "independent_widths": "0.316,1.0",
              "set": ["data.image_size=16", "pareco.warmup_configs=4", "pareco.max_overhead=1",
                      "front.uniform_grid=4"]},
}
"""Named protocols: every flag of :func:`build_parser` that is not given comes from one."""


class BenchError(RuntimeError):
    """A protocol that cannot run (bad arguments, a run folder of another protocol)."""


# ------------------------------------------------------------------------------------ runs
def recipe_name(network: str) -> str:
    return f"{network}-fashionmnist"


def protocol_args(a: argparse.Namespace) -> list[str]:
    """The CLI flags every run shares (identical hyper-parameters across methods)."""
    val_images = "null" if a.val_images is None else str(a.val_images)
    args = ["--epochs", str(a.epochs), "--subset", str(a.subset), "--val-size", str(a.val_size),
            "--batch-size", str(a.batch_size), "--history-size", str(a.history_size),
            "--eval-batch", str(a.eval_batch), "--calib-images", str(a.calib_images),
            "--max-configs", str(a.max_configs), "--set", f"front.val_images={val_images}",
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


def cell_file(cells: Path, network: str, method: str, seed: int) -> Path:
    """Where the result of one (network, method, seed) cell is kept (and committed)."""
    return cells / network / f"{method}-seed{seed}.json"


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


def cell_argv(network: str, method: str, seed: int, runs: Path, shared: list[str]) -> list[str]:
    out = run_dir(runs, network, method, seed)
    return ["--recipe", recipe_name(network), "--method", method, "--seed", str(seed),
            "--out", str(out), "--quiet", "--no-download", *shared]


def portable(argv: list[str]) -> list[str]:
    """``argv`` without the machine-specific values (run folder, data folder, device, threads):
    what must match for a committed cell to count as a result of the same protocol."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in ("--out", "--data-dir", "--threads", "--device"):
            skip = True
            continue
        out.append(item)
    return out


def resolved_recipe(argv: list[str]) -> dict[str, Any]:
    """The recipe (file plus command-line overrides) that ``pareco.train argv`` trains, as JSON.

    A committed cell must match it as well as its arguments: a changed recipe default (a new
    ``pareco.proposals``, say) then retires the cells trained under the old one instead of
    reusing them silently."""
    from pareco.train import build_parser
    from pareco.train import resolve as resolve_train

    recipe = resolve_train(build_parser().parse_args(argv))[0]
    return json.loads(json.dumps(recipe.to_dict()))


def _recipe_diff(saved: dict[str, Any] | None, now: dict[str, Any]) -> str:
    """The dotted recipe keys whose values differ, e.g. ``pareco.proposals: null then, 64 now``;
    empty if none. A key added to the recipes since (absent then, null now) is no difference: a
    new option whose default keeps the old behaviour does not retire the committed cells."""
    if saved is None:
        return "the cell records no recipe"

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    a, b = flat(saved), flat(now)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return "; ".join(f"{k}: {json.dumps(a.get(k))} then, {json.dumps(b.get(k))} now" for k in keys)


def run_one(network: str, method: str, seed: int, runs: Path, shared: list[str],
            expected_files: int, cells: Path) -> dict[str, Any]:
    """One (network, method, seed) cell: its committed result if ``cells`` holds one for the
    same protocol, else trained (or resumed) through the CLI and its result written there."""
    argv = cell_argv(network, method, seed, runs, shared)
    info: dict[str, Any] = {"network": network, "method": method, "seed": seed}
    cell = cell_file(cells, network, method, seed)
    if cell.is_file():
        doc = json.loads(cell.read_text())
        if doc.get("protocol_argv") != portable(argv):
            raise BenchError(f"{cell} holds a result of other arguments:\n  "
                             f"{shlex.join(doc.get('protocol_argv') or [])}\nnow\n  "
                             f"{shlex.join(portable(argv))}\nuse another --cells-dir")
        recipe = resolved_recipe(argv)
        diff = _recipe_diff(doc.get("recipe"), recipe)
        if diff:
            raise BenchError(f"{cell} was trained with another recipe ({diff}); use another "
                             f"--cells-dir")
        return {**doc, "status": "reused"}
    out = run_dir(runs, network, method, seed)
    record = out / BENCH_FILE
    if record.is_file():
        saved = json.loads(record.read_text())["argv"]
        if saved != argv:
            raise BenchError(f"{out} was trained with other arguments:\n  {shlex.join(saved)}\n"
                             f"now\n  {shlex.join(argv)}\nuse another --runs-dir or delete it")
    elif out.exists() and any(out.iterdir()):
        raise BenchError(f"{out} holds files not made by this benchmark; use another --runs-dir")
    files = weight_files(out, method)
    if len(files) < expected_files:
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
        print(f"[methods]   {network} {method} seed {seed} done in {elapsed:.0f} s", flush=True)
    doc = {**info, "status": "trained", "protocol_argv": portable(argv),
           "recipe": resolved_recipe(argv), "run": read_run([str(f) for f in files])}
    cell.parent.mkdir(parents=True, exist_ok=True)
    cell.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    return doc


def commit_cell(path: Path, message: str, tries: int = 5, wait_s: float = 2.0) -> bool:
    """``git commit`` just ``path`` (other staged or modified files are left alone).

    Another git process holding the index (a commit made by hand meanwhile, another benchmark)
    is waited out: up to ``tries`` attempts ``wait_s`` apart. A commit that still fails is
    reported on stderr and returns False, never raises: the cell's result is on disk either
    way, and the cells still training must not be stopped by it.
    """
    rel = path.resolve().relative_to(REPO)
    for attempt in range(1, tries + 1):
        done = subprocess.run(["git", "-C", str(REPO), "add", "--", str(rel)],
                              capture_output=True, text=True)
        if done.returncode == 0:
            done = subprocess.run(["git", "-C", str(REPO), "commit", "-q", "-m", message, "--",
                                   str(rel)], capture_output=True, text=True)
        if done.returncode == 0:
            return True
        if attempt < tries:
            time.sleep(wait_s)
    print(f"[methods] could not commit {rel} ({done.stderr.strip()}); commit it by hand",
          file=sys.stderr, flush=True)
    return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: a training run gets SIGINT (it saves its resume state and exits 130) if the
    benchmark dies without cleaning up, instead of running on as an orphan."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


# ------------------------------------------------------------------------------------- CLI
def _csv(kind):
    def parse(text: str):
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
    return parse


def _val_images(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of images or 'all', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/methods.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="default",
                   help="named settings for every flag below that is not given (default: default)")
    p.add_argument("--networks", type=_csv(str), help=f"comma-separated, of {', '.join(NETWORKS)}")
    p.add_argument("--methods", type=_csv(str), default=list(METHODS),
                   help=f"comma-separated, of {', '.join(METHODS)} (default all)")
    p.add_argument("--seeds", type=_csv(int), help="comma-separated seeds")
    p.add_argument("--epochs", type=int, help="epochs of every run")
    p.add_argument("--subset", type=int, help="first N Fashion-MNIST training images")
    p.add_argument("--val-size", type=int, help="validation images carved from the subset")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--history-size", type=int, help="|H| of PareCO and TwoStage's search (before "
                                                    "the recipe's overhead cap)")
    p.add_argument("--eval-batch", type=int, help="held-out batch of the H evaluation")
    p.add_argument("--calib-images", type=int, help="BN calibration images per front candidate")
    p.add_argument("--val-images", type=_val_images, default=argparse.SUPPRESS,
                   help="validation images selecting the front, or 'all'")
    p.add_argument("--max-configs", type=int, help="front size bound")
    p.add_argument("--independent-widths", type=_csv(float), help="uniform widths trained alone")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="recipe override passed to every run (repeatable)")
    p.add_argument("--data-dir", type=Path, help="folder holding Fashion-MNIST (default: found)")
    p.add_argument("--device", help="passed to every run (default: the CLI's auto)")
    p.add_argument("--threads", type=int, help="torch threads of every run (default: all cores)")
    p.add_argument("--parallel", type=int, default=1,
                   help="cells trained at once (default 1; on one GPU with --device cuda, up to "
                        "the number of CPU cores)")
    p.add_argument("--runs-dir", type=Path,
                   help="where the runs are trained and resumed (default runs/bench-methods-<protocol>)")
    p.add_argument("--cells-dir", type=Path,
                   help="one result JSON per finished cell, reused on later invocations "
                        "(default bench/results/cells-<protocol>)")
    p.add_argument("--commit", action="store_true",
                   help="git-commit each cell's result file as soon as the cell finishes")
    p.add_argument("--out", type=Path, help="result JSON (default bench/results/methods-<host>-<date>.json;"
                                            " the plot is written next to it as .png)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: report the cells already in --cells-dir")
    return p


def resolve(a: argparse.Namespace) -> argparse.Namespace:
    base = PROTOCOLS[a.protocol]
    parse = {"networks": _csv(str), "seeds": _csv(int), "independent_widths": _csv(float),
             "val_images": _val_images}
    for key, value in base.items():
        if getattr(a, key, None) is None and not (key == "val_images" and hasattr(a, key)):
            setattr(a, key, parse[key](value) if key in parse else value)
    bad = [n for n in a.networks if n not in NETWORKS]
    if bad:
        raise BenchError(f"--networks: unknown {bad}; choose from {', '.join(NETWORKS)}")
    bad = [m for m in a.methods if m not in METHODS]
    if bad:
        raise BenchError(f"--methods: unknown {bad}; choose from {', '.join(METHODS)}")
    if not a.seeds:
        raise BenchError("--seeds: at least one seed")
    for key in ("epochs", "subset", "val_size", "batch_size", "history_size", "eval_batch",
                "calib_images", "max_configs", "parallel"):
        if getattr(a, key) < 1:
            raise BenchError(f"--{key.replace('_', '-')}: must be positive")
    if a.val_images is not None and a.val_images < 1:
        raise BenchError("--val-images: must be positive or 'all'")
    if a.val_size * 2 > a.subset:
        raise BenchError("--val-size must leave at least half of --subset for training")
    if a.runs_dir is None:
        a.runs_dir = REPO / "runs" / f"bench-methods-{a.protocol}"
    if a.cells_dir is None:
        a.cells_dir = REPO / "bench" / "results" / f"cells-{a.protocol}"
    if a.out is None:
        a.out = default_result_path("methods" + ("" if a.protocol == "default" else f"-{a.protocol}"))
    # the runs execute in the repository root: relative paths are the caller's
    a.runs_dir, a.cells_dir, a.out = a.runs_dir.absolute(), a.cells_dir.absolute(), a.out.absolute()
    if a.commit and not a.cells_dir.is_relative_to(REPO):
        raise BenchError("--commit needs --cells-dir inside the repository")
    if a.data_dir is not None:
        a.data_dir = a.data_dir.absolute()
    return a


def run_cells(a: argparse.Namespace, shared: list[str]) -> list[dict[str, Any]]:
    """Every cell in seed-major order (a partial protocol holds complete comparisons for its
    first seeds), ``a.parallel`` at a time; each finished cell's file is committed at once with
    ``--commit``."""
    expected = {m: (len(a.independent_widths) if m == "independent" else 1) for m in METHODS}
    order = [(s, n, m) for s in a.seeds for n in a.networks for m in a.methods]

    def one(cell: tuple[int, str, str]) -> dict[str, Any]:
        seed, network, method = cell
        path = cell_file(a.cells_dir, network, method, seed)
        if a.report_only:
            if not path.is_file():
                return {"network": network, "method": method, "seed": seed, "status": "missing"}
            return run_one(network, method, seed, a.runs_dir, shared, expected[method], a.cells_dir)
        rec = run_one(network, method, seed, a.runs_dir, shared, expected[method], a.cells_dir)
        if a.commit and rec["status"] == "trained":
            with _git_lock:
                commit_cell(path, f"bench {a.protocol}: {network} {method} seed {seed}")
        return rec

    with ThreadPoolExecutor(max_workers=a.parallel) as pool:
        return list(pool.map(one, order))


_git_lock = threading.Lock()


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        a = resolve(a)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shared = protocol_args(a)
    t0 = time.perf_counter()
    try:
        records = run_cells(a, shared)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; run the same command again to continue",
              file=sys.stderr)
        return 130
    session_s = time.perf_counter() - t0
    failed = [r for r in records if r["status"] in ("failed", "missing")]
    runs: dict[str, dict[str, dict[int, dict]]] = {}
    for rec in records:
        if rec["status"] in ("reused", "trained"):
            doc = rec.pop("run")
            rec["times"] = doc["times"]
            runs.setdefault(rec["network"], {}).setdefault(rec["method"], {})[rec["seed"]] = doc
    results = {
        "benchmark": "methods",
        "environment": environment(),
        "protocol": _protocol_doc(a, shared, runs),
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
    print(f"\n## Methods benchmark ({a.protocol}: {a.epochs} epochs, "
          f"{results['protocol']['train_images']} training images, |H| {a.history_size} before "
          f"the overhead cap, seeds {a.seeds})\n")
    print("command: " + results["environment"]["command"] + "\n")
    print(markdown(results))
    print("\n".join(summary_lines(results)))
    if failed:
        print(format_table(["network", "method", "seed", "status"],
                           [[r["network"], r["method"], r["seed"], r["status"]] for r in failed],
                           title="\nIncomplete cells:"))
    print(f"\nwrote {a.out}" + (f" and {png}" if results.get("plot") else ""))
    return 1 if failed else 0


def _protocol_doc(a: argparse.Namespace, shared: list[str], runs: dict) -> dict[str, Any]:
    first = next((r for n in runs.values() for m in n.values() for r in m.values()), None)
    doc = {k: getattr(a, k) for k in ("protocol", "networks", "methods", "seeds", "epochs",
                                      "subset", "val_size", "batch_size", "history_size",
                                      "eval_batch", "calib_images", "val_images", "max_configs",
                                      "independent_widths", "set", "parallel")}
    doc.update(quick=a.protocol == "quick", train_images=first and first["train_images"],
               device=first and first["device"], threads=first and first["threads"],
               cli_flags=shared, data_dir=None if a.data_dir is None else str(a.data_dir))
    return doc


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o)}")


if __name__ == "__main__":
    sys.exit(main())
