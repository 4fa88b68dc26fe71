"""Import torchvision's MobileNet weights into the slimmable MobileNets (``--init torchvision``).

    bn_stats = load_torchvision_weights(net, "imagenet")           # torchvision's weights API
    bn_stats = load_torchvision_weights(net, "mobilenet_v2.pth")   # a local state_dict file
    bn_stats = load_torchvision_weights(net, tv_model.state_dict())
    net(x, None, bn_stats)   # == tv_model.eval()(x)

Names are mapped explicitly, layer by layer, from the model's structure (torchvision's
``features.{j+1}`` is our ``blocks.{j}``); every torchvision tensor must be used exactly once and
every shape must match. Our batch-norm layers keep no running statistics, so torchvision's are
returned as the full-width (``alpha = 1``) ``bn_stats`` mapping instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from pareco.models.base import SlimmableNet
from pareco.models.mobilenet_v2 import MobileNetV2
from pareco.models.mobilenet_v3 import MobileNetV3Large
from pareco.slim import SLIM_LAYERS, SlimBatchNorm2d

Source = Mapping[str, Tensor] | str | os.PathLike
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _conv_bn(ours: str, theirs: str) -> list[tuple[str, str]]:
    """A ``ConvBNAct`` against torchvision's ``Conv2dNormActivation`` (children 0: conv, 1: BN)."""
    return [(f"{ours}.conv", f"{theirs}.0"), (f"{ours}.bn", f"{theirs}.1")]


def _mobilenet_v2_names(net: MobileNetV2) -> list[tuple[str, str]]:
    pairs = _conv_bn("stem", "features.0")
    for j, block in enumerate(net.blocks):
        tv, k = f"features.{j + 1}.conv", 0
        if block.expand is not None:
            pairs += _conv_bn(f"blocks.{j}.expand", f"{tv}.0")
            k = 1
        pairs += _conv_bn(f"blocks.{j}.depthwise", f"{tv}.{k}")
        # torchvision's projection is a bare Conv2d + BatchNorm2d inside the block's Sequential
        pairs += [(f"blocks.{j}.project.conv", f"{tv}.{k + 1}"),
                  (f"blocks.{j}.project.bn", f"{tv}.{k + 2}")]
    pairs += _conv_bn("last_conv", f"features.{len(net.blocks) + 1}")
    return pairs + [("fc", "classifier.1")]


def _mobilenet_v3_names(net: MobileNetV3Large) -> list[tuple[str, str]]:
    pairs = _conv_bn("stem", "features.0")
    for j, block in enumerate(net.blocks):
        tv, k = f"features.{j + 1}.block", 0
        if block.expand is not None:
            pairs += _conv_bn(f"blocks.{j}.expand", f"{tv}.{k}")
            k += 1
        pairs += _conv_bn(f"blocks.{j}.depthwise", f"{tv}.{k}")
        k += 1
        if block.se is not None:
            pairs += [(f"blocks.{j}.se.fc1", f"{tv}.{k}.fc1"),
                      (f"blocks.{j}.se.fc2", f"{tv}.{k}.fc2")]
            k += 1
        pairs += _conv_bn(f"blocks.{j}.project", f"{tv}.{k}")
    pairs += _conv_bn("last_conv", f"features.{len(net.blocks) + 1}")
    return pairs + [("hidden", "classifier.0"), ("fc", "classifier.3")]


def torchvision_name_map(net: SlimmableNet) -> list[tuple[str, str]]:
    """``(our layer name, torchvision module name)`` for every slimmable layer of ``net``."""
    if isinstance(net, MobileNetV2):
        return _mobilenet_v2_names(net)
    if isinstance(net, MobileNetV3Large):
        return _mobilenet_v3_names(net)
    raise TypeError(f"no torchvision counterpart known for {type(net).__name__}; "
                    "supported: MobileNetV2, MobileNetV3Large")


def _imagenet_weights(net: SlimmableNet, tag: str | None) -> Any:
    """torchvision's ``WeightsEnum`` member for ``net`` (``DEFAULT`` when ``tag`` is None)."""
    import torchvision.models as tvm

    v2 = isinstance(net, MobileNetV2)
    enum = tvm.MobileNet_V2_Weights if v2 else tvm.MobileNet_V3_Large_Weights
    try:
        return enum.DEFAULT if tag is None else enum[tag]
    except KeyError:
        raise ValueError(f"unknown torchvision weights {tag!r} for {type(net).__name__}; "
                         f"available: {', '.join(w.name for w in enum)}") from None


def _state_dict(net: SlimmableNet, source: Source) -> Mapping[str, Tensor]:
    if isinstance(source, Mapping):
        return source
    if isinstance(source, str) and (source == "imagenet" or source.startswith("imagenet:")):
        weights = _imagenet_weights(net, source.partition(":")[2] or None)
        try:
            return weights.get_state_dict(progress=False, check_hash=True)
        except Exception as e:  # no network, proxy, bad cache, ...
            raise RuntimeError(
                f"could not obtain torchvision's {weights} from {weights.url} ({type(e).__name__}: "
                f"{e}); download that file where the internet is reachable and pass its local "
                "path instead"
            ) from e
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"torchvision state_dict file {os.fspath(source)!r} not found")
        state = torch.load(source, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise ValueError(f"{os.fspath(source)!r} holds a {type(state).__name__}, "
                             "not a state_dict mapping of tensors")
        return state
    raise TypeError(f"source must be a state_dict, a file path or 'imagenet', "
                    f"got {type(source).__name__}")


def load_torchvision_weights(net: SlimmableNet, source: Source) -> dict[str, tuple[Tensor, Tensor]]:
    """Copy torchvision's weights into ``net`` (in place); return the ``alpha = 1`` ``bn_stats``.

    ``source``: a torchvision ``state_dict``, a path to one saved with ``torch.save``, or
    ``"imagenet"`` (``"imagenet:IMAGENET1K_V1"`` for a specific tag) for torchvision's weights API.
    Raises ``ValueError`` on any unused, missing or mis-shaped tensor.
    """
    pairs = torchvision_name_map(net)
    state = _state_dict(net, source)
    modules = dict(net.named_modules())
    slim_names = {name for name, m in modules.items() if isinstance(m, SLIM_LAYERS)}
    mapped = {ours for ours, _ in pairs}
    if mapped != slim_names:  # a mapping bug, never the user's fault
        raise AssertionError(f"name map misses {sorted(slim_names - mapped)}, "
                             f"has extra {sorted(mapped - slim_names)}")
    hint = (f" (the model has num_classes={net.num_classes}, in_channels={net.in_channels}; "
            "torchvision's ImageNet weights need 1000 and 3)")
    used: set[str] = set()
    bn_stats: dict[str, tuple[Tensor, Tensor]] = {}

    def take(key: str, shape: torch.Size) -> Tensor:
        if key not in state:
            raise ValueError(f"torchvision state_dict has no {key!r}")
        t = state[key]
        if not isinstance(t, Tensor) or t.shape != shape:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"torchvision {key!r} has shape {got}, expected {tuple(shape)}{hint}")
        used.add(key)
        return t

    with torch.no_grad():
        for ours, theirs in pairs:
            layer: nn.Module = modules[ours]
            for pname, param in layer.named_parameters(recurse=False):
                param.copy_(take(f"{theirs}.{pname}", param.shape))
            if isinstance(layer, SlimBatchNorm2d):
                shape = torch.Size([layer.num_features])
                mean = take(f"{theirs}.running_mean", shape).detach().clone().float()
                var = take(f"{theirs}.running_var", shape).detach().clone().float()
                if f"{theirs}.num_batches_tracked" in state:
                    used.add(f"{theirs}.num_batches_tracked")
                bn_stats[layer.stats_key] = (mean, var)
    unused = sorted(set(state) - used)
    if unused:
        raise ValueError(f"{len(unused)} torchvision tensors were not used, e.g. {unused[:5]}: "
                         f"is this a {type(net).__name__} state_dict?")
    return bn_stats
