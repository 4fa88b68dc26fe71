"""In-memory image datasets held as one uint8 tensor, with cheap tensor augmentation.

Used for the small datasets (Fashion-MNIST, CIFAR): 60000 28x28 images are 47 MB as uint8. An item
costs a few tensor ops (pad, slice, flip, normalize), an order of magnitude less than a PIL
pipeline, which matters when the training loop shares 2 CPU cores with data loading. All
randomness comes from torch's RNG, so seeding torch (or DataLoader worker seeding) makes
augmentation reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset


@dataclass(frozen=True)
class CropFlip:
    """Random crop to the original size after zero-padding ``padding`` pixels on every side
    (``padding=0``: no crop), and a horizontal flip with probability 1/2 when ``flip``."""

    padding: int = 0
    flip: bool = True

    def __call__(self, image: Tensor) -> Tensor:
        """Augment one ``C x H x W`` image (any dtype); returns a new tensor of the same shape."""
        p = self.padding
        if p > 0:
            h, w = image.shape[-2:]
            top, left = torch.randint(0, 2 * p + 1, (2,)).tolist()
            image = F.pad(image, (p, p, p, p))[..., top:top + h, left:left + w]
        if self.flip and torch.randint(0, 2, ()).item():
            image = image.flip(-1)
        return image


class TensorImageDataset(Dataset):
    """Items ``(normalized float32 C x H x W image, int label)`` from a shared uint8 tensor.

    ``images`` is ``N x C x H x W`` uint8, ``labels`` ``N`` int64; ``indices`` selects (and orders)
    the items of this split, so several splits share one copy of the data.
    """

    def __init__(self, images: Tensor, labels: Tensor, indices: Tensor | None,
                 mean: Sequence[float], std: Sequence[float], augment: CropFlip | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be an N x C x H x W uint8 tensor, got "
                             f"{images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.images = images
        self.labels = labels.long()
        self.indices = torch.arange(len(images)) if indices is None else indices.long()
        self.augment = augment
        c = images.shape[1]
        self._shift = torch.tensor(mean, dtype=torch.float32).mul(255.0).view(c, 1, 1)
        self._scale = torch.tensor(std, dtype=torch.float32).mul(255.0).reciprocal().view(c, 1, 1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        j = int(self.indices[i])
        image = self.images[j]
        if self.augment is not None:
            image = self.augment(image)
        return (image.float() - self._shift) * self._scale, int(self.labels[j])

    @property
    def targets(self) -> Tensor:
        """The labels of this split's items, in item order (int64)."""
        return self.labels[self.indices]


def resize_images(images: Tensor, size: int) -> Tensor:
    """Resize ``N x C x H x W`` uint8 images to ``size x size`` (bilinear, antialiased)."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8)
    for start in range(0, len(images), 4096):  # bound the float32 working memory
        chunk = images[start:start + 4096].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
        out[start:start + 4096] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out
