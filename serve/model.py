"""What the server needs to know about a model, without torch: front, classes, preprocessing.

:class:`ServedModel` is built from the weight file's ``pareco`` metadata document (DESIGN §7) once
that document has been validated (by :func:`pareco.weightfile.load_zoo_model`, or earlier: the ONNX
cache stores it next to the graphs it verified, keyed by the weight file's sha256). These types
mirror ``pareco.weightfile.FrontConfig`` / ``Preprocessing``, which live in a module that imports
torch; the serving path on a cache hit must not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preprocessing:
    """Input size ``image_size`` (pixels, square), ``channels`` (1 or 3), per-channel mean/std
    of the [0, 1]-scaled pixels."""

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, S, S)`` of one image."""
        return (self.channels, self.image_size, self.image_size)


@dataclass(frozen=True)
class ServedConfig:
    """One calibrated configuration: ``macs`` (multiply-accumulates per image), accuracies in
    [0, 1]; ``on_front``: on the weight file's (MFLOPs, accuracy) front (else one of its other
    ``candidates``, with a validation accuracy only)."""

    id: str
    alpha: tuple[float, ...]
    channels: tuple[int, ...]
    macs: int
    params: int
    val_acc: float | None = None
    test_acc: float | None = None
    on_front: bool = True

    @property
    def mflops(self) -> float:
        """Millions of multiply-accumulates (the project's "MFLOPs")."""
        return self.macs / 1e6

    @property
    def accuracy(self) -> float:
        """Ranking accuracy for selection: validation, else test, else 0."""
        for acc in (self.val_acc, self.test_acc):
            if acc is not None:
                return acc
        return 0.0

    @property
    def expected_accuracy(self) -> float | None:
        """Reported accuracy: test, else validation."""
        return self.test_acc if self.test_acc is not None else self.val_acc


@dataclass(frozen=True)
class ServedModel:
    """A validated weight file's serving view: its ``front`` and its other calibrated
    ``candidates`` (none in a version-1 weight file), each sorted by MACs ascending."""

    arch: str
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    front: tuple[ServedConfig, ...]
    candidates: tuple[ServedConfig, ...] = ()

    @property
    def configs(self) -> tuple[ServedConfig, ...]:
        """The front and the candidates, sorted by MACs."""
        return tuple(sorted(self.front + self.candidates, key=lambda c: (c.macs, c.id)))

    @classmethod
    def from_metadata(cls, doc: dict[str, Any]) -> "ServedModel":
        """From the (already validated) ``pareco`` metadata document of a weight file."""
        p = doc["preprocessing"]
        pre = Preprocessing(int(p["image_size"]), int(p["channels"]),
                            tuple(float(m) for m in p["mean"]), tuple(float(s) for s in p["std"]))
        front = sorted((_config(c, True) for c in doc["front"]), key=lambda c: (c.macs, c.id))
        others = sorted((_config(c, False) for c in doc.get("candidates", [])),
                        key=lambda c: (c.macs, c.id))
        return cls(str(doc["arch"]["name"]), tuple(str(c) for c in doc["classes"]), pre,
                   tuple(front), tuple(others))


def _config(c: dict[str, Any], on_front: bool) -> ServedConfig:
    return ServedConfig(
        id=str(c["id"]), alpha=tuple(float(a) for a in c["alpha"]),
        channels=tuple(int(n) for n in c["channels"]), macs=int(c["macs"]),
        params=int(c["params"]),
        val_acc=None if c.get("val_acc") is None else float(c["val_acc"]),
        test_acc=None if c.get("test_acc") is None else float(c["test_acc"]), on_front=on_front)
