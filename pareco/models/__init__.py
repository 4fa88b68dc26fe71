"""The model zoo's slimmable architectures, built by name.

    >>> net = build("resnet20", num_classes=10, in_channels=1, image_size=28)
    >>> net.width_space.dim
    6
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from pareco.models.base import SlimmableNet
from pareco.models.mobilenet_v2 import MobileNetV2
from pareco.models.mobilenet_v3 import MobileNetV3Large
from pareco.models.resnet_cifar import ResNetCifar

_REGISTRY: dict[str, Callable[..., SlimmableNet]] = {
    **{f"resnet{d}": partial(ResNetCifar, depth=d) for d in (20, 32, 44, 56)},
    **{f"resnet20_{k}x": partial(ResNetCifar, depth=20, width_factor=float(k)) for k in (2, 3, 4, 5)},
    "mobilenet_v2": MobileNetV2,
    "mobilenet_v3_large": MobileNetV3Large,
}


def register(name: str, factory: Callable[..., SlimmableNet]) -> None:
    """Add an architecture to :func:`build` (``factory(**kwargs) -> SlimmableNet``)."""
    _REGISTRY[name] = factory


def available() -> list[str]:
    """Names accepted by :func:`build`."""
    return sorted(_REGISTRY)


def build(name: str, *, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
          **kwargs: Any) -> SlimmableNet:
    """Build the slimmable network ``name`` for ``in_channels`` x ``image_size``^2 inputs."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}")
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels),
                       ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    build_kwargs = {"num_classes": num_classes, "in_channels": in_channels,
                    "image_size": image_size, **kwargs}
    net = _REGISTRY[name](**build_kwargs)
    net.arch_name, net.build_kwargs = name, build_kwargs  # build(arch_name, **build_kwargs) rebuilds
    return net


__all__ = ["SlimmableNet", "available", "build", "register"]
