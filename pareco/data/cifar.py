"""CIFAR-10 and CIFAR-100 in torchvision's on-disk layout (the official python pickles).

``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``;
``cifar-100-python/``: ``train``, ``test``, ``meta``. Each batch is a pickled dict with ``data``
(``N x 3072`` uint8, channel-major 3 x 32 x 32) and ``labels`` (CIFAR-10) or ``fine_labels``
(CIFAR-100). The batches are read directly (no md5 check), so any file in this format loads.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pareco.data.errors import DataError
from pareco.data.small import RawImages, SmallSpec


@dataclass(frozen=True)
class CifarFormat:
    """File names and pickle keys of one CIFAR variant."""

    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    names_key: str
    labels_key: str


FORMATS = {
    "cifar10": CifarFormat("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                           "test_batch", "batches.meta", "label_names", "labels"),
    "cifar100": CifarFormat("cifar-100-python", ("train",), "test", "meta", "fine_label_names",
                            "fine_labels"),
}

SPECS = {
    "cifar10": SmallSpec("CIFAR-10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4),
    "cifar100": SmallSpec("CIFAR-100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 4),
}


def find(variant: str, folder: Path) -> Path | None:
    """The CIFAR folder of ``variant`` in (or equal to) ``folder``, or ``None`` if absent.

    Raises :class:`DataError` if the folder exists but misses files.
    """
    fmt = FORMATS[variant]
    for base in (folder / fmt.folder, folder):
        if base.name != fmt.folder or not base.is_dir():
            continue
        missing = [n for n in (*fmt.train, fmt.test, fmt.meta) if not (base / n).is_file()]
        if missing:
            raise DataError(f"{SPECS[variant].title} in {base} is incomplete: "
                            f"{', '.join(missing)} missing; restore the files or point data_dir "
                            f"elsewhere")
        return base
    return None


def download(variant: str, cache: Path) -> None:
    """Download and extract ``variant`` into ``cache`` through torchvision."""
    from torchvision.datasets import CIFAR10, CIFAR100

    (CIFAR10 if variant == "cifar10" else CIFAR100)(root=str(cache), train=True, download=True)


def read(variant: str, base: Path) -> RawImages:
    """Read all batches of ``variant`` from the folder returned by :func:`find`."""
    fmt = FORMATS[variant]
    meta = _unpickle(base / fmt.meta)
    names = meta.get(fmt.names_key)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{base / fmt.meta} has no list of class names under "
                        f"{fmt.names_key!r}; the file is corrupt")
    train = [_read_batch(base / n, fmt.labels_key, len(names)) for n in fmt.train]
    test = _read_batch(base / fmt.test, fmt.labels_key, len(names))
    return RawImages(torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]),
                     *test, class_names=tuple(names))


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as e:  # any unpickling failure means a corrupt or foreign file
        raise DataError(f"cannot read {path} ({type(e).__name__}: {e}); the file is corrupt or "
                        f"not a CIFAR batch, delete it and download the dataset again") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a CIFAR batch dict; the file is corrupt")
    return obj


def _read_batch(path: Path, labels_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _unpickle(path)
    data, labels = batch.get("data"), batch.get(labels_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32 or labels is None or len(labels) != len(data):
        raise DataError(f"{path} is not a CIFAR batch (expected 'data': N x 3072 uint8 and "
                        f"{labels_key!r}: N labels); the file is corrupt")
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if len(labels_t) and not 0 <= int(labels_t.min()) <= int(labels_t.max()) < num_classes:
        raise DataError(f"{path} holds labels outside 0..{num_classes - 1}; the file is corrupt")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), labels_t
