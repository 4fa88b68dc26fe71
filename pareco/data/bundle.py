"""The splits and metadata of one dataset, as returned by :func:`pareco.data.load_data`."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset


@dataclass(frozen=True)
class DataBundle:
    """Four splits of one dataset plus what a model and a deployment need to know about it.

    Every split yields ``(image, label)`` with ``image`` a float32 tensor ``C x H x W``, normalized
    with ``mean``/``std`` (per channel, on the 0..1 pixel scale), and ``label`` an ``int`` in
    ``[0, num_classes)``.

    - ``train``: the training split minus ``val``, with augmentation.
    - ``calib``: the same images as ``train`` in the same order, without augmentation (BN and int8
      calibration).
    - ``val``: a fixed-seed split carved from the training set, without augmentation (H evaluation,
      front selection).
    - ``test``: the official test split, without augmentation (reporting only).
    """

    train: Dataset
    calib: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
