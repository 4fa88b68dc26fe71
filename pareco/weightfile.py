"""The weight file: the one artifact that crosses from training to deployment (DESIGN §7).

``model.safetensors`` holds the shared weights (``param/<name>``), the batch-norm statistics of
every front configuration and every other calibrated candidate (``bn/<config id>/<stats key>/
mean|var``) and, under the metadata key ``pareco``, one JSON document::

    {"format": "pareco-slimmable", "version": 2,
     "arch": {"name": "resnet20", "kwargs": {...}},
     "width_space": {"dim": 6, "lower": 0.316, "divisor": 1, "groups": [{"name", "channels"}]},
     "preprocessing": {"image_size": 28, "channels": 1, "mean": [...], "std": [...]},
     "classes": [...],
     "front": [{"id", "alpha", "channels", "macs", "mflops", "params", "val_acc", "test_acc"}],
     "candidates": [{"id", "alpha", ..., "val_acc", "test_acc": null}],
     "training": {...}, "software": {"pareco": ..., "torch": ...}}

``mflops`` is millions of MACs at ``preprocessing.image_size``; accuracies are fractions.
``front`` is the (MFLOPs, validation accuracy) front (ids ``c00, c01, ...``); ``candidates`` are
the other configurations the front was chosen from (ids ``k00, k01, ...``), with their BN
statistics and validation accuracy (the test set is evaluated for the front only), so a
deployment host can build its own front, e.g. on measured latency, without training data. Both
lists are sorted by MACs. Version 1 files (no ``candidates``) still load, with no candidates.
:func:`load_zoo_model` rebuilds the network and checks every field against it, raising
:class:`WeightFileError` with a precise message on anything missing, inconsistent or corrupt.
No pickle is involved anywhere.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

import pareco
from pareco import models
from pareco.atomic import atomic_write
from pareco.models.base import SlimmableNet
from pareco.slim import BNStats
from pareco.width import WidthSpace

FORMAT = "pareco-slimmable"
VERSION = 2
READABLE_VERSIONS = (1, 2)
METADATA_KEY = "pareco"


class WeightFileError(ValueError):
    """A weight file is missing, corrupt, or inconsistent with the network it describes."""


@dataclass(frozen=True)
class FrontConfig:
    """One configuration of the learned front: widths, exact cost and measured accuracy."""

    id: str
    alpha: tuple[float, ...]
    channels: tuple[int, ...]
    macs: int
    params: int
    val_acc: float | None = None
    test_acc: float | None = None

    @property
    def mflops(self) -> float:
        """Millions of multiply-accumulates (the paper's "MFLOPs")."""
        return self.macs / 1e6

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["alpha"], d["channels"] = list(self.alpha), list(self.channels)
        d["mflops"] = self.mflops
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FrontConfig":
        return cls(
            id=str(d["id"]), alpha=tuple(float(a) for a in d["alpha"]),
            channels=tuple(int(c) for c in d["channels"]), macs=int(d["macs"]),
            params=int(d["params"]),
            val_acc=None if d.get("val_acc") is None else float(d["val_acc"]),
            test_acc=None if d.get("test_acc") is None else float(d["test_acc"]),
        )

    @property
    def accuracy(self) -> float:
        """The accuracy used to rank configurations: validation, else test, else 0."""
        for acc in (self.val_acc, self.test_acc):
            if acc is not None:
                return acc
        return 0.0


@dataclass(frozen=True)
class Preprocessing:
    """How to turn an image into the network's input: resize, channels, normalization."""

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class ZooModel:
    """A loaded weight file: the slimmable network, its front, the other calibrated candidates
    and the BN statistics of every one of them (keyed by config id)."""

    net: SlimmableNet
    front: list[FrontConfig]
    bn_stats: dict[str, BNStats]
    preprocessing: Preprocessing
    classes: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    candidates: list[FrontConfig] = field(default_factory=list)

    @property
    def configs(self) -> list[FrontConfig]:
        """The front and the candidates, sorted by MACs (ties: front first)."""
        return sorted(self.front + self.candidates, key=lambda c: c.macs)

    def config(self, config_id: str) -> FrontConfig:
        for c in self.front + self.candidates:
            if c.id == config_id:
                return c
        raise KeyError(f"no configuration {config_id!r}; the front has {[c.id for c in self.front]}"
                       f", the candidates {[c.id for c in self.candidates]}")

    def best_within(self, mflops: float | None = None) -> FrontConfig:
        """The most accurate configuration whose MFLOPs are <= ``mflops`` (None: no limit)."""
        fits = [c for c in self.front if mflops is None or c.mflops <= mflops]
        if not fits:
            raise ValueError(
                f"no configuration fits {mflops} MFLOPs; the smallest needs "
                f"{self.front[0].mflops:.4f} MFLOPs"
            )
        return max(fits, key=lambda c: (c.accuracy, -c.macs))

    def extract(self, config_id: str) -> torch.nn.Module:
        """The dense eval-mode subnet of one configuration (front or candidate), with its BN
        statistics."""
        return self.net.extract(self.config(config_id).alpha, self.bn_stats[config_id])


# ------------------------------------------------------------------------------------ saving
def front_config(net: SlimmableNet, config_id: str, alpha, val_acc: float | None = None,
                 test_acc: float | None = None) -> FrontConfig:
    """A :class:`FrontConfig` for ``alpha`` with its exact cost computed from ``net``."""
    a = net.width_space.validate(alpha)
    return FrontConfig(config_id, a, net.width_space.channels(a), net.macs(a), net.params(a),
                       val_acc, test_acc)


def save_zoo_model(path: str | os.PathLike, net: SlimmableNet, front: list[FrontConfig],
                   bn_stats: dict[str, BNStats], *, preprocessing: Preprocessing,
                   classes: list[str] | tuple[str, ...], training: dict[str, Any] | None = None,
                   candidates: list[FrontConfig] | tuple[FrontConfig, ...] = ()) -> None:
    """Write the weight file atomically (temp file in the same folder, then rename).

    ``bn_stats`` must hold every config of ``front`` and ``candidates`` (the calibrated
    configurations off the front; ids unique across both)."""
    front = sorted(front, key=lambda c: (c.macs, c.id))
    candidates = sorted(candidates, key=lambda c: (c.macs, c.id))
    doc = {
        "format": FORMAT, "version": VERSION,
        "arch": {"name": net.arch_name, "kwargs": net.build_kwargs},
        "width_space": net.width_space.to_dict(),
        "preprocessing": asdict(preprocessing) | {"mean": list(preprocessing.mean),
                                                   "std": list(preprocessing.std)},
        "classes": list(classes),
        "front": [c.to_dict() for c in front],
        "candidates": [c.to_dict() for c in candidates],
        "training": training or {},
        "software": {"pareco": pareco.__version__, "torch": torch.__version__},
    }
    tensors: dict[str, Tensor] = {
        f"param/{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()
    }
    for c in front + candidates:
        if c.id not in bn_stats:
            raise ValueError(f"no BN statistics for configuration {c.id!r}")
        for key, (mean, var) in bn_stats[c.id].items():
            tensors[f"bn/{c.id}/{key}/mean"] = mean.detach().cpu().float().contiguous()
            tensors[f"bn/{c.id}/{key}/var"] = var.detach().cpu().float().contiguous()
    _validate(net, doc, tensors)  # never write a file that would not load
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(doc)}))


# ----------------------------------------------------------------------------------- loading
def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON document of a weight file, without loading tensors or building the network."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: no such weight file")
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len <= 0 or header_len > min(path.stat().st_size - 8, 100_000_000):
                raise WeightFileError(f"{path}: not a safetensors file (bad header length)")
            header = json.loads(f.read(header_len))
        raw = header.get("__metadata__", {}).get(METADATA_KEY)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise WeightFileError(f"{path}: not a safetensors file ({e})") from None
    if raw is None:
        raise WeightFileError(f"{path}: safetensors file without the {METADATA_KEY!r} metadata")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise WeightFileError(f"{path}: metadata is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise WeightFileError(f"{path}: format is not {FORMAT!r}")
    if doc.get("version") not in READABLE_VERSIONS:
        raise WeightFileError(f"{path}: format version {doc.get('version')!r}, this code reads "
                              f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    return doc


def load_zoo_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> ZooModel:
    """Load and validate a weight file; the network is returned in eval mode."""
    path = Path(path)
    doc = read_metadata(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightFileError(f"{path}: corrupt or truncated tensors ({e})") from None
    try:
        arch = doc["arch"]
        net = models.build(arch["name"], **arch["kwargs"])
    except (KeyError, TypeError, ValueError) as e:
        raise WeightFileError(f"{path}: cannot rebuild the architecture: {e}") from None
    try:
        _validate(net, doc, tensors)
    except WeightFileError as e:
        raise WeightFileError(f"{path}: {e}") from None
    net.load_state_dict({k[len("param/"):]: v for k, v in tensors.items() if k.startswith("param/")})
    net.to(device).eval()
    front = [FrontConfig.from_dict(c) for c in doc["front"]]
    candidates = [FrontConfig.from_dict(c) for c in doc.get("candidates", [])]
    bn_stats = {
        c.id: {key: (tensors[f"bn/{c.id}/{key}/mean"], tensors[f"bn/{c.id}/{key}/var"])
               for key in net.bn_layers()}
        for c in front + candidates
    }
    p = doc["preprocessing"]
    pre = Preprocessing(int(p["image_size"]), int(p["channels"]), tuple(map(float, p["mean"])),
                        tuple(map(float, p["std"])))
    return ZooModel(net, front, bn_stats, pre, tuple(doc["classes"]), doc, candidates)


def _validate(net: SlimmableNet, doc: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Check the document and tensors against the rebuilt network; raise WeightFileError."""
    def fail(msg: str) -> None:
        raise WeightFileError(msg)

    for key in ("arch", "width_space", "preprocessing", "classes", "front"):
        if key not in doc:
            fail(f"metadata lacks {key!r}")
    try:
        space = WidthSpace.from_dict(doc["width_space"])
    except (KeyError, TypeError, ValueError) as e:
        fail(f"bad width_space: {e}")
    if space != net.width_space:
        fail("width_space does not match the architecture it names")
    state = net.state_dict()
    for k, v in state.items():
        t = tensors.get(f"param/{k}")
        if t is None:
            fail(f"missing weight tensor param/{k}")
        if tuple(t.shape) != tuple(v.shape):
            fail(f"param/{k} has shape {tuple(t.shape)}, the architecture needs {tuple(v.shape)}")
        if not torch.isfinite(t).all():
            fail(f"param/{k} holds NaN or infinite values")
    extra = [k for k in tensors if k.startswith("param/") and k[6:] not in state]
    if extra:
        fail(f"unexpected weight tensors {extra[:3]}")
    pre = doc["preprocessing"]
    try:
        if int(pre["channels"]) != net.in_channels or int(pre["image_size"]) != net.image_size:
            fail("preprocessing channels/image_size disagree with the architecture")
        if not len(pre["mean"]) == len(pre["std"]) == net.in_channels or min(pre["std"]) <= 0:
            fail("preprocessing mean/std must have one entry per channel and std > 0")
    except (KeyError, TypeError) as e:
        fail(f"bad preprocessing: {e}")
    if len(doc["classes"]) != net.num_classes:
        fail(f"{len(doc['classes'])} class names for a {net.num_classes}-class network")
    front = doc["front"]
    if not isinstance(front, list) or not front:
        fail("the front is empty")
    candidates = doc.get("candidates", [])
    if not isinstance(candidates, list):
        fail("candidates must be a list of configurations")
    ids: set[str] = set()
    for name, entries in (("front", front), ("candidates", candidates)):
        prev_macs = -1
        for raw in entries:
            cid = raw.get("id") if isinstance(raw, dict) else None
            if cid in ids:
                fail(f"duplicate configuration id {cid!r}")
            c = _validate_config(net, raw, tensors, name)
            ids.add(c.id)
            if c.macs < prev_macs:
                fail(f"{name} is not sorted by MFLOPs")
            prev_macs = c.macs


def _validate_config(net: SlimmableNet, raw: Any, tensors: dict[str, Tensor],
                     where: str) -> FrontConfig:
    """One entry of ``front`` or ``candidates`` (``where``): cost, accuracy, BN tensors."""
    def fail(msg: str) -> None:
        raise WeightFileError(msg)

    try:
        c = FrontConfig.from_dict(raw)
        alpha = net.width_space.validate(c.alpha)
    except (KeyError, TypeError, ValueError) as e:
        fail(f"bad {where} entry {raw.get('id') if isinstance(raw, dict) else raw!r}: {e}")
    if c.channels != net.width_space.channels(alpha):
        fail(f"config {c.id}: channels {c.channels} do not follow from its alpha")
    if c.macs != net.macs(alpha) or not math.isclose(float(raw.get("mflops", c.mflops)), c.mflops):
        fail(f"config {c.id}: claims {c.macs} MACs, the network computes {net.macs(alpha)}")
    if c.params != net.params(alpha):
        fail(f"config {c.id}: claims {c.params} params, the network has {net.params(alpha)}")
    for acc in (c.val_acc, c.test_acc):
        if acc is not None and not 0.0 <= acc <= 1.0:
            fail(f"config {c.id}: accuracy {acc} is not a fraction in [0, 1]")
    widths = net.subnet(alpha)
    for key, layer in net.bn_layers().items():
        n = widths.width(layer.in_group, layer.num_features)
        for part in ("mean", "var"):
            t = tensors.get(f"bn/{c.id}/{key}/{part}")
            if t is None:
                fail(f"config {c.id}: missing BN statistics bn/{c.id}/{key}/{part}")
            if tuple(t.shape) != (n,):
                fail(f"config {c.id}: bn/{c.id}/{key}/{part} has shape {tuple(t.shape)}, expected ({n},)")
            if not torch.isfinite(t).all() or (part == "var" and (t < 0).any()):
                fail(f"config {c.id}: bn/{c.id}/{key}/{part} holds invalid values")
    return c
