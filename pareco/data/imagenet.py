"""ImageNet (or any dataset) in ImageFolder layout: ``<dir>/train/<class>/*`` and
``<dir>/val/<class>/*``, decoded lazily with Pillow and transformed with torchvision.transforms.v2.

Class indices follow the sorted ``train`` class folder names; ``val`` may hold a subset of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, find_classes, make_dataset
from torchvision.transforms import v2

from pareco.data.bundle import DataBundle
from pareco.data.errors import DataError
from pareco.data.lighting import Lighting
from pareco.data.options import check_augment, check_image_size
from pareco.data.split import check_subset, split_indices, val_count

TITLE = "ImageNet"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NATIVE_SIZE = 224
RESIZE_RATIO = 256 / 224
"""Evaluation resizes the short side to ``image_size * RESIZE_RATIO``, then center-crops."""

AUGMENT_DEFAULTS: dict[str, Any] = {
    "crop_scale": (0.08, 1.0),  # RandomResizedCrop area fraction range
    "flip": True,               # random horizontal flip
    "color_jitter": 0.0,        # brightness/contrast/saturation jitter strength, 0 = off
    "lighting": 0.0,            # std of the PCA lighting noise, 0 = off (AlexNet: 0.1)
}


class FolderSamples(Dataset):
    """Items ``(transform(PIL RGB image), int label)`` from a list of ``(path, label)``."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable[[Any], Tensor]):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, label = self.samples[i]
        return self.transform(default_loader(path)), label

    @property
    def targets(self) -> Tensor:
        """The labels of the items, in item order (int64)."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.long)


def find(folder: Path) -> Path | None:
    """The ImageFolder root (holding ``train/`` and ``val/``) in ``folder`` or
    ``folder/imagenet``, or ``None``. Raises :class:`DataError` if ``train/`` lacks ``val/``."""
    for root in (folder, folder / "imagenet"):
        if (root / "train").is_dir():
            if not (root / "val").is_dir():
                raise DataError(f"{root} has train/ but no val/ folder; ImageNet needs both "
                                f"<dir>/train/<class>/* and <dir>/val/<class>/*")
            return root
    return None


def train_transform(size: int, options: Mapping[str, Any]) -> v2.Compose:
    """Random-resized crop, flip, optional color jitter and lighting noise, then normalize."""
    steps: list[Callable] = [v2.RandomResizedCrop(size, scale=options["crop_scale"])]
    if options["flip"]:
        steps.append(v2.RandomHorizontalFlip())
    if options["color_jitter"] > 0:
        j = options["color_jitter"]
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if options["lighting"] > 0:
        steps.append(Lighting(options["lighting"]))
    steps.append(v2.Normalize(MEAN, STD))
    return v2.Compose(steps)


def eval_transform(size: int) -> v2.Compose:
    """Resize the short side to ``round(size * 256 / 224)``, center-crop ``size``, normalize."""
    return v2.Compose([v2.Resize(round(size * RESIZE_RATIO)), v2.CenterCrop(size), v2.ToImage(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def build_bundle(root: Path, *, val_size: int | float | None, subset: int | None, seed: int,
                 image_size: int | None, augment: Mapping[str, Any] | None) -> DataBundle:
    """Scan ``root/train`` and ``root/val`` and wrap them into a :class:`DataBundle`.

    ``subset=N`` keeps the first N training images in sorted (class, file) order, so a small N
    covers only the first classes.
    """
    size = check_image_size(image_size, NATIVE_SIZE)
    options = check_augment(augment, AUGMENT_DEFAULTS, TITLE)
    classes, class_to_idx = _classes(root / "train")
    train_samples = _samples(root / "train", class_to_idx)
    val_classes = _classes(root / "val")[0]
    unknown = sorted(set(val_classes) - set(classes))
    if unknown:
        raise DataError(f"{root / 'val'} has class folders not in {root / 'train'}: "
                        f"{', '.join(unknown[:5])}; both splits must use the same class names")
    test_samples = _samples(root / "val", {c: class_to_idx[c] for c in val_classes})
    n = check_subset(subset, len(train_samples))
    train_idx, val_idx = split_indices(n, val_count(val_size, n), seed)
    fit = [train_samples[i] for i in train_idx.tolist()]
    evaluate = eval_transform(size)
    return DataBundle(
        train=FolderSamples(fit, train_transform(size, options)),
        calib=FolderSamples(fit, evaluate),
        val=FolderSamples([train_samples[i] for i in val_idx.tolist()], evaluate),
        test=FolderSamples(test_samples, evaluate),
        num_classes=len(classes), in_channels=3, image_size=size, mean=MEAN, std=STD,
        class_names=tuple(classes))


def _classes(folder: Path) -> tuple[list[str], dict[str, int]]:
    try:
        return find_classes(str(folder))
    except FileNotFoundError as e:
        raise DataError(f"{folder} holds no class folders; expected {folder}/<class>/<image>") \
            from e


def _samples(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    try:
        return make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:
        raise DataError(f"{folder}: {e}") from e
