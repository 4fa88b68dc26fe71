"""Shared helpers of the benchmark scripts: environment capture, percentiles, result paths.

    from bench.common import environment, summarize, default_result_path
    env = environment(threads={"onnxruntime_intra_op": 1})
    summarize([0.31, 0.29, 0.35])   # {"n": 3, "p50": 0.31, "p90": ..., "mean": ..., "min": ..., "max": ...}

Every result file records where and how it was measured: CPU model, core counts (all and usable),
load average, thread settings, library versions, the git commit and the exact command line.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

PACKAGES = ("torch", "torchvision", "numpy", "onnx", "onnxscript", "onnxruntime", "fastapi",
            "starlette", "uvicorn", "httpx", "python-multipart", "pillow", "safetensors",
            "botorch", "gpytorch", "pareco-zoo")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS",
              "ORT_NUM_THREADS")


def cpu_model() -> str:
    """The ``model name`` of the first CPU in /proc/cpuinfo (else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    """CPUs this process may run on (affinity), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 2)
    except (OSError, ValueError, IndexError):
        pass
    return None


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state() -> dict[str, Any]:
    """The commit of the working tree and whether it has uncommitted changes."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    status = git("status", "--porcelain")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def command_line() -> str:
    """The exact command that ran this process (interpreter included), shell-quoted."""
    return shlex.join([sys.executable, *sys.argv])


def environment(threads: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Where and how a benchmark ran. ``threads``: the benchmark's own thread settings."""
    import torch

    return {
        "host": socket.gethostname(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "load_average_1_5_15": load_average(),
        "mem_total_gib": mem_total_gib(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "thread_env": {k: os.environ.get(k) for k in THREAD_ENV},
        "threads": dict(threads or {}),
        "versions": versions(),
        "git": git_state(),
        "command": command_line(),
        "cwd": os.getcwd(),
    }


def summarize(values_ms: Iterable[float]) -> dict[str, float]:
    """``n``, ``p50``, ``p90``, ``mean``, ``min``, ``max`` of a sample (empty: ``n`` = 0 only)."""
    a = np.asarray(list(values_ms), dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    p50, p90 = np.percentile(a, [50, 90])
    return {"n": int(a.size), "p50": float(p50), "p90": float(p90), "mean": float(a.mean()),
            "min": float(a.min()), "max": float(a.max())}


def default_result_path(name: str) -> Path:
    """``bench/results/<name>-<host>-<YYYY-MM-DD>.json``."""
    host = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in socket.gethostname())
    return RESULTS / f"{name}-{host or 'host'}-{_dt.date.today().isoformat()}.json"


def format_table(headers: list[str], rows: list[list[Any]], *, title: str | None = None) -> str:
    """A plain-text table: numbers right-aligned, text left-aligned."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
               for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [title] if title else []
    out += [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)
