"""Refine finished methods cells with ``python -m pareco.refine``, into a cells folder of their own.

    python bench/refine_cells.py bench/results/cells-screen-proposals-k256:pareco \\
        --network resnet20_half --seeds 0,1,2,3 --configs 64 --parallel 2 \\
        --cells-dir bench/results/cells-refine-k256 --runs-dir runs/refine-k256 --commit

For each seed, the source cell (``<cells>/<network>/<method>-seed<s>.json`` of ``bench/methods.py``)
names the run folder its weight file is in (its ``--out``); that file must still be on this
machine. The refined weight file goes to ``<runs-dir>/<network>/<method>/seed<s>/`` through the
real CLI (one ``--threads`` each, ``--parallel`` at a time); the new cell is the source cell with
the refined front (``run``), the refine statistics, command and times, so
``bench/methods_compare.py`` pairs it with Slim like any other cell. A cell already in
``--cells-dir`` is kept; ``--commit`` commits each new one at once (``bench/methods.py``'s rule).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, load_average  # noqa: E402
from bench.methods import cell_file, commit_cell  # noqa: E402
from bench.methods_analysis import read_run  # noqa: E402
from pareco.cliargs import positive_int  # noqa: E402
from pareco.weightfile import read_metadata  # noqa: E402


class RefineError(RuntimeError):
    """A source cell that cannot be refined here."""


def source_weights(cell: dict[str, Any]) -> Path:
    """The weight file of a finished cell: ``model.safetensors`` in its command's ``--out``."""
    argv = shlex.split(cell.get("command") or "")
    if "--out" not in argv:
        raise RefineError(f"cell {cell.get('network')} {cell.get('method')} seed "
                          f"{cell.get('seed')} records no training command with --out")
    weights = Path(argv[argv.index("--out") + 1]) / "model.safetensors"
    if not weights.is_file():
        raise RefineError(f"{weights} (the cell's weight file) is not on this machine")
    return weights


def refine_cell(source: Path, out_cells: Path, runs: Path, network: str, method: str,
                seed: int, configs: int, threads: int, commit: bool,
                data_dir: Path | None = None) -> dict[str, Any]:
    """One cell: reused if ``out_cells`` has it, else refined through the CLI and written."""
    target = cell_file(out_cells, network, method, seed)
    if target.is_file():
        return {**json.loads(target.read_text()), "status": "reused"}
    cell = json.loads(cell_file(source, network, method, seed).read_text())
    weights = source_weights(cell)
    out = runs / network / method / f"seed{seed}" / "model.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pareco.refine", "--weights", str(weights), "--out", str(out),
           "--configs", str(configs), "--threads", str(threads), "--quiet", "--no-download",
           *(["--data-dir", str(data_dir)] if data_dir else [])]
    load0, t0 = load_average(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RefineError(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    print(f"[refine] {network} {method} seed {seed}: {proc.stdout.strip()}", flush=True)
    doc = {**cell, "status": "trained", "source_cell": str(cell_file(source, network, method, seed)),
           "refine_command": shlex.join(cmd), "refine_process_s": round(time.perf_counter() - t0, 2),
           "refine_load_before": load0, "refine_load_after": load_average(),
           "refine": read_metadata(out)["training"]["refine"], "run": read_run([str(out)])}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(doc, indent=1) + "\n")
    if commit:
        commit_cell(target, f"bench refine: {network} {method} seed {seed} (+{configs} configs)")
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", metavar="CELLS:METHOD", help="finished cells to refine")
    p.add_argument("--network", required=True)
    p.add_argument("--seeds", required=True, type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--configs", type=positive_int, default=64)
    p.add_argument("--cells-dir", type=Path, required=True)
    p.add_argument("--runs-dir", type=Path, required=True)
    p.add_argument("--parallel", type=positive_int, default=1)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--data-dir", type=Path, help="folder holding the dataset (searched first)")
    p.add_argument("--commit", action="store_true")
    a = p.parse_args(argv)
    cells, _, method = a.source.rpartition(":")
    if not cells or method not in ("slim", "pareco", "twostage"):
        p.error(f"expected CELLS_FOLDER:METHOD (slim, pareco or twostage), got {a.source!r}")
    with ThreadPoolExecutor(a.parallel) as pool:
        jobs = [pool.submit(refine_cell, Path(cells), a.cells_dir, a.runs_dir, a.network, method,
                            s, a.configs, a.threads, a.commit, a.data_dir) for s in a.seeds]
        try:
            for job in jobs:
                job.result()
        except (RefineError, OSError) as e:
            print(f"refine_cells.py: error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
