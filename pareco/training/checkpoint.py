"""Atomic training-resume state: one safetensors file of tensors plus a JSON document.

The file ``train_state.safetensors`` holds tensors under prefixes (``model/``, ``opt/``,
``policy/``, ``rng/``...) and, in its metadata key ``state``, a JSON document (step, epoch, phase,
recipe, RNG states that are not tensors...). It is written to a temporary file in the same
folder, flushed to disk and renamed over the old one (``os.replace``), so a crash at any moment
leaves either the previous state or the new one, never a truncated file. No pickle is involved.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from pareco.atomic import atomic_write

STATE_FILE = "train_state.safetensors"
_META_KEY = "state"


class StateError(ValueError):
    """A resume state that is missing, corrupt or does not belong to this run."""


def save_state(path: Path, tensors: dict[str, Tensor], doc: dict[str, Any]) -> None:
    """Write tensors (copied to contiguous CPU storage) and ``doc`` atomically to ``path``."""
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, tmp, metadata={_META_KEY: json.dumps(doc)}))


def load_state(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a state written by :func:`save_state`; :class:`StateError` if unreadable."""
    if not path.is_file():
        raise StateError(f"no training state at {path}")
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        doc = json.loads(header["__metadata__"][_META_KEY])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise StateError(f"{path} is not a readable training state ({e})") from None
    return tensors, doc


# ---------------------------------------------------------------------------- optimizer state
def pack_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors ``opt/<param index>/<name>`` and a JSON document of everything else."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, Tensor):
                tensors[f"opt/{idx}/{name}"] = value
            else:
                scalars[f"{idx}/{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unpack_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], doc: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in doc["scalars"].items():
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": doc["param_groups"]})


# ---------------------------------------------------------------------------------- RNG state
def pack_rng() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The global RNG states of torch (CPU and CUDA), numpy and Python's ``random``."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, py_gauss = random.getstate()
    tensors["rng/python"] = torch.tensor(internal, dtype=torch.int64)
    doc = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
           "python": [version, py_gauss]}
    return tensors, doc


def unpack_rng(tensors: dict[str, Tensor], doc: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k[9:]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    kind, pos, has_gauss, gauss = doc["numpy"]
    np.random.set_state((kind, tensors["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_gauss = doc["python"]
    random.setstate((version, tuple(int(v) for v in tensors["rng/python"].tolist()), py_gauss))


def sub_state(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
