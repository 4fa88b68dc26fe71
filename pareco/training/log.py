"""Training output: a JSON-lines event log, tqdm progress bars and one summary line per epoch.

``train_log.jsonl`` gets one JSON object per line, each with an ``event`` (``start``, ``resume``,
``step``, ``refresh``, ``epoch``, ``search``, ``front``, ``done``) and a wall-clock ``time``
(seconds since the epoch). On resume the log is truncated back to its length at the checkpoint,
so it never holds steps that were trained twice.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

LOG_FILE = "train_log.jsonl"


class RunLog:
    """Appends events to ``path``; ``console`` lines go to stdout unless ``quiet``."""

    def __init__(self, path: Path, *, quiet: bool = False, progress: bool | None = None,
                 stream: TextIO | None = None) -> None:
        self.path = path
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.progress = (not quiet and sys.stderr.isatty()) if progress is None else progress
        self._f = open(path, "a", encoding="utf-8")

    def size(self) -> int:
        """Current length of the log in bytes (stored in checkpoints)."""
        self._f.flush()
        return self._f.tell()

    def truncate(self, size: int) -> None:
        """Cut the log back to ``size`` bytes (resume: drop events after the checkpoint)."""
        self._f.flush()
        if self._f.tell() > size:
            self._f.truncate(size)
            self._f.seek(size)

    def event(self, event: str, **fields: Any) -> None:
        record = _finite({"event": event, "time": round(time.time(), 3), **fields})
        self._f.write(json.dumps(record, default=_json_default, allow_nan=False) + "\n")
        self._f.flush()

    def console(self, line: str) -> None:
        if self.quiet:
            return
        if self.progress:
            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def bar(self, total: int, initial: int, desc: str) -> tqdm:
        """A progress bar (disabled when not on a terminal, or when quiet)."""
        return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                    disable=not self.progress, leave=False, file=sys.stderr)

    def close(self) -> None:
        self._f.close()


def _finite(value: Any) -> Any:
    """``value`` with tensors/arrays as lists and non-finite floats as ``None`` (valid JSON)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
