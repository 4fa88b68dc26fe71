"""``manifest.json``: what was exported, from what, with which checks and software.

Schema (``format: "pareco-export"``, ``version: 1``)::

    {"format", "version", "source": {"path", "sha256", "arch"},
     "software": {"pareco", "torch", "onnx", "onnxruntime", "onnxscript"},
     "input": {"name", "dtype", "layout": "NCHW", "shape": ["batch" | B, C, H, W], "scale": "1/255",
               "mean", "std"}, "output": {"name", "classes"},
     "inputs_for_checks": "<where the parity images came from>",
     "ort": null | {"target_platform": "arm"|"amd64", "byte_reproducible"},
     "files": [{"path", "kind": "onnx"|"ort", "precision": "fp32"|"int8", "sha256", "bytes",
                "opset", "ir_version", "batch": "dynamic" | B,
                "config": {"id", "alpha", "channels", "macs", "mflops", "params",
                           "val_acc", "test_acc"},
                "params": {"before_bn_folding", "after_bn_folding"},
                "onnx_macs", "onnx_params", "parity": {...}, "accuracy": {...},
                "quantization": {...} (int8), "target_platform", "mobile": {...} (ort)}]}

``path`` is relative to the manifest's folder. ``config.params`` is the trained subnet's count
(BN affine parameters included) = ``params.before_bn_folding``; ``onnx_params`` =
``params.after_bn_folding`` is what the graph holds. ``parity.max_abs_diff`` of an fp32 file is
the max abs logit difference ONNX Runtime vs PyTorch per batch size (1 and 8, or the fixed one);
of an int8 file, its top-1 agreement with the fp32 model on the test images and its max abs
logit difference from it; of an ``.ort`` file, the difference from its ``.onnx`` source.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import onnxscript
import torch

import pareco

FORMAT = "pareco-export"
VERSION = 1
FILENAME = "manifest.json"


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def software() -> dict[str, str]:
    """Versions of the packages that produced and checked the files."""
    return {"pareco": pareco.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "onnxscript": onnxscript.__version__}


def file_entry(folder: Path, name: str, **fields: Any) -> dict[str, Any]:
    """The manifest entry of ``folder / name``: its path, sha256 and size, then ``fields``."""
    path = folder / name
    return {"path": name, "sha256": sha256(path), "bytes": path.stat().st_size, **fields}


def write(folder: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as ``folder / manifest.json`` and return its path."""
    path = folder / FILENAME
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION, **doc}, indent=2) + "\n")
    return path
