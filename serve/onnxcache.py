"""A cache of verified ONNX graphs, one entry per weight file, so later starts need no torch.

Layout: ``<root>/v2/<weights sha256>/`` with ``entry.json`` and one ``<config id>.onnx`` per
calibrated configuration (the front and the weight file's other candidates). ``entry.json``::

    {"format": "pareco-serve-onnx-cache", "version": 2, "weights_sha256": ..., "pareco": ...,
     "software": {"torch", "onnx", "onnxscript", "onnxruntime"},    # what built and checked it
     "metadata": {...},                                             # the validated weight-file doc
     "probe": {"seed": 0, "shape": [2, C, S, S]},
     "configs": {id: {"file", "sha256", "reference_logits": [[...], [...]]}}}

An entry is written (atomically: temp folder + rename) only after ONNX Runtime reproduced the
PyTorch subnet on the probe input within :data:`TOLERANCE`; ``reference_logits`` are PyTorch's.
Every load re-verifies it without torch: each file's sha256, and ONNX Runtime's logits on the
probe against the stored reference. So the key is (weight sha256, cache format, pareco version);
the exporter's versions are recorded, not keyed: a graph that still verifies is still right.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pareco

FORMAT, VERSION = "pareco-serve-onnx-cache", 2
TOLERANCE = 1e-4
"""Max logit difference, ONNX Runtime vs PyTorch (and vs the stored reference), relative to the
logits' scale (:func:`scaled_difference`): float32 rounding grows with the logits' magnitude,
which on the noise probe can reach tens for a barely trained network."""


def scaled_difference(out: np.ndarray, ref: np.ndarray) -> float:
    """``max |out - ref| / max(1, max |ref|)``: an absolute difference for logits up to 1."""
    ref = np.asarray(ref)
    return float(np.abs(out - ref).max() / max(1.0, float(np.abs(ref).max())))
ENTRY = "entry.json"


class CacheError(RuntimeError):
    """A cache entry that is missing a file, altered, or no longer reproduces its reference."""


def default_root() -> Path:
    """``$PARECO_CACHE``, else ``$XDG_CACHE_HOME/pareco``, else ``~/.cache/pareco``."""
    if os.environ.get("PARECO_CACHE"):
        return Path(os.environ["PARECO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pareco"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def probe_input(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """The fixed float32 ``(2, C, S, S)`` input on which cached graphs are verified."""
    return np.random.default_rng(seed).standard_normal((2, *shape), dtype=np.float32)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Entry:
    """A cache entry read from disk (not yet verified: see :meth:`load_verified`)."""

    folder: Path
    doc: dict[str, Any]

    @property
    def metadata(self) -> dict[str, Any]:
        """The weight file's validated ``pareco`` metadata document."""
        return self.doc["metadata"]

    def load_verified(self, run: Callable[[str, bytes, np.ndarray], np.ndarray]) -> dict[str, bytes]:
        """``{config id: ONNX bytes}``, each checked: its sha256, and ``run(id, bytes, probe)``
        (ONNX Runtime's logits) against the stored reference within :data:`TOLERANCE`.
        Raises :class:`CacheError`."""
        probe = probe_input(tuple(self.doc["probe"]["shape"][1:]), self.doc["probe"]["seed"])
        out = {}
        for cid, c in self.doc["configs"].items():
            path = self.folder / c["file"]
            try:
                data = path.read_bytes()
            except OSError as e:
                raise CacheError(f"{path}: {e}") from None
            if hashlib.sha256(data).hexdigest() != c["sha256"]:
                raise CacheError(f"{path}: sha256 differs from {ENTRY}")
            diff = scaled_difference(run(cid, data, probe), c["reference_logits"])
            if not diff <= TOLERANCE:
                raise CacheError(f"{path}: ONNX Runtime differs from the reference by {diff:.3g}")
            out[cid] = data
        return out


def entry_dir(root: Path, weights_sha256: str) -> Path:
    return root / f"v{VERSION}" / weights_sha256


def lookup(root: Path, weights_sha256: str) -> Entry | None:
    """The entry for this weight file if one exists for this format and pareco version."""
    folder = entry_dir(root, weights_sha256)
    try:
        doc = json.loads((folder / ENTRY).read_text())
    except (OSError, ValueError):
        return None
    if (doc.get("format"), doc.get("version"), doc.get("weights_sha256"), doc.get("pareco")) != (
            FORMAT, VERSION, weights_sha256, pareco.__version__):
        return None
    return Entry(folder, doc)


def store(root: Path, weights_sha256: str, metadata: dict[str, Any],
          onnx: Mapping[str, bytes], reference: Mapping[str, np.ndarray],
          shape: tuple[int, int, int]) -> Path:
    """Write an entry atomically (a concurrent writer of the same entry simply wins); returns
    its folder. ``reference``: PyTorch logits on :func:`probe_input` per config."""
    final = entry_dir(root, weights_sha256)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; other users (a container's) read the cache
        configs = {}
        for cid, data in onnx.items():
            (tmp / f"{cid}.onnx").write_bytes(data)
            configs[cid] = {"file": f"{cid}.onnx", "sha256": hashlib.sha256(data).hexdigest(),
                            "reference_logits": np.asarray(reference[cid]).tolist()}
        doc = {"format": FORMAT, "version": VERSION, "weights_sha256": weights_sha256,
               "pareco": pareco.__version__,
               "software": {d: _version(d) for d in ("torch", "onnx", "onnxscript", "onnxruntime")},
               "metadata": metadata, "probe": {"seed": 0, "shape": [2, *shape]},
               "configs": configs}
        (tmp / ENTRY).write_text(json.dumps(doc))
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
