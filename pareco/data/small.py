"""Bundles of the small in-memory datasets (Fashion-MNIST, CIFAR) from their raw uint8 tensors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pareco.data.bundle import DataBundle
from pareco.data.options import check_augment, check_image_size
from pareco.data.split import check_subset, split_indices, val_count
from pareco.data.tensor_dataset import CropFlip, TensorImageDataset, resize_images


@dataclass(frozen=True)
class RawImages:
    """A dataset's official splits as read from disk: ``N x C x H x W`` uint8 images and ``N``
    int64 labels in ``[0, len(class_names))``."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class SmallSpec:
    """Per-dataset constants: display name, normalization, native crop padding in pixels."""

    title: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int


def build_small_bundle(raw: RawImages, spec: SmallSpec, *, val_size: int | float | None,
                       subset: int | None, seed: int, image_size: int | None,
                       augment: Mapping[str, Any] | None) -> DataBundle:
    """Subset, split, resize and wrap ``raw`` into a :class:`DataBundle`.

    Augmentation options: ``crop_padding`` (pixels of zero padding before a random crop back to
    ``image_size``; default the dataset's, scaled to ``image_size``; 0 disables) and ``flip``
    (random horizontal flip, default True).
    """
    native = raw.train_images.shape[-1]
    size = check_image_size(image_size, native)
    options = check_augment(augment, {"crop_padding": round(spec.crop_padding * size / native),
                                      "flip": True}, spec.title)
    n = check_subset(subset, len(raw.train_images))
    train_images = resize_images(raw.train_images[:n], size)
    train_labels = raw.train_labels[:n]
    test_images = resize_images(raw.test_images, size)
    train_idx, val_idx = split_indices(n, val_count(val_size, n), seed)
    aug = CropFlip(options["crop_padding"], options["flip"])

    def split(images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor | None,
              crop_flip: CropFlip | None = None) -> TensorImageDataset:
        return TensorImageDataset(images, labels, idx, spec.mean, spec.std, crop_flip)

    return DataBundle(
        train=split(train_images, train_labels, train_idx, aug),
        calib=split(train_images, train_labels, train_idx),
        val=split(train_images, train_labels, val_idx),
        test=split(test_images, raw.test_labels, None),
        num_classes=len(raw.class_names), in_channels=int(train_images.shape[1]),
        image_size=size, mean=spec.mean, std=spec.std, class_names=raw.class_names)
