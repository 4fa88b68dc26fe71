"""AlexNet-style PCA lighting noise (Krizhevsky et al., 2012), as used for ImageNet training."""

from __future__ import annotations

import torch
from torch import Tensor, nn

IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
"""Eigenvalues of the RGB pixel covariance of ImageNet, pixels on the 0..1 scale."""

IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))
"""The matching eigenvectors, one per column."""


class Lighting(nn.Module):
    """Add ``eigvec @ (a * eigval)`` to every pixel, ``a ~ N(0, std^2)`` per image per component.

    Input: a float ``3 x H x W`` image on the 0..1 scale (before normalization). Uses torch's RNG.
    """

    def __init__(self, std: float):
        super().__init__()
        self.std = float(std)
        self.register_buffer("eigval", torch.tensor(IMAGENET_EIGVAL), persistent=False)
        self.register_buffer("eigvec", torch.tensor(IMAGENET_EIGVEC), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        if self.std == 0:
            return image
        alpha = torch.randn(3) * self.std
        rgb = self.eigvec @ (alpha * self.eigval)
        return image + rgb.view(3, 1, 1).to(image.dtype)

    def extra_repr(self) -> str:
        return f"std={self.std}"
