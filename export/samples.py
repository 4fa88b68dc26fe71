"""Images for parity, int8 calibration and accuracy: real ones from the dataset named in the
weight file, or deterministic random ones normalized like its preprocessing.

Arrays are float32 ``(N, C, H, W)`` normalized with the weight file's mean/std (a dataset
normalized differently is re-normalized), labels int64 ``(N,)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from pareco.data import DataBundle, DataError, load_data
from pareco.weightfile import Preprocessing


@dataclass(frozen=True)
class Samples:
    """Images with their labels (``None`` for random inputs) and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str


def random_samples(pre: Preprocessing, n: int, seed: int = 0) -> Samples:
    """``n`` uniform-random pixel images in [0, 1], normalized with ``pre``'s mean/std."""
    rng = np.random.default_rng(seed)
    pixels = rng.random((n, pre.channels, pre.image_size, pre.image_size), dtype=np.float32)
    mean = np.asarray(pre.mean, np.float32)[:, None, None]
    std = np.asarray(pre.std, np.float32)[:, None, None]
    return Samples(((pixels - mean) / std).astype(np.float32), None, f"random (seed {seed})")


def dataset_name(meta: dict) -> str | None:
    """The dataset recorded by training (``meta["training"]["dataset"]``), if any."""
    training = meta.get("training")
    name = training.get("dataset") if isinstance(training, dict) else None
    return name if isinstance(name, str) and name else None


def load_bundle(name: str, pre: Preprocessing, data_dir: str | os.PathLike | None) -> DataBundle:
    """The dataset ``name`` at the model's image size, found locally (never downloaded).

    Raises :class:`DataError` if it cannot be found or does not fit the model's input.
    """
    bundle = load_data(name, data_dir=data_dir, download=False, image_size=pre.image_size)
    if bundle.in_channels != pre.channels:
        raise DataError(f"dataset {name!r} has {bundle.in_channels} channels, the model takes {pre.channels}")
    return bundle


def take(bundle: DataBundle, name: str, split: str, n: int | None, pre: Preprocessing) -> Samples:
    """The first ``n`` (``None``: all) images of ``split`` (``"calib"`` or ``"test"``) of the
    dataset ``name`` loaded as ``bundle``."""
    data: Dataset = getattr(bundle, split)
    count = len(data) if n is None else min(n, len(data))
    if count == 0:
        raise DataError(f"the {split} split is empty")
    images = np.empty((count, pre.channels, pre.image_size, pre.image_size), np.float32)
    labels = np.empty(count, np.int64)
    for i in range(count):
        x, y = data[i]
        images[i], labels[i] = np.asarray(x, np.float32), int(y)
    b_mean, b_std = np.asarray(bundle.mean, np.float32), np.asarray(bundle.std, np.float32)
    p_mean, p_std = np.asarray(pre.mean, np.float32), np.asarray(pre.std, np.float32)
    if not (np.allclose(b_mean, p_mean) and np.allclose(b_std, p_std)):
        images = ((images * b_std[:, None, None] + b_mean[:, None, None]) - p_mean[:, None, None]) \
            / p_std[:, None, None]
    split_name = "training split (no augmentation)" if split == "calib" else f"{split} split"
    return Samples(images.astype(np.float32), labels, f"{name} {split_name}")

