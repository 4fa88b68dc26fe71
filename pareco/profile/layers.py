"""The latency-relevant layers of a slimmable network, read from one traced forward.

Every slimmable convolution (its batch norm folded in, the runtime fuses the activation) and
every slimmable linear layer is one :class:`LayerSpec`: its geometry (kernel, stride, padding,
input resolution, depthwise or not) and which channel group -- or fixed count, such as the image
channels or the classes -- its input and output channels follow. Layers with equal specs cost the
same at every width, so the network is a list of distinct specs with multiplicities
(:func:`trace_layers`); a latency table measures each distinct spec once per channel pair.

Everything else (residual additions, pooling, layout reorders, the runtime's per-call overhead)
is not a layer here: the cost model's calibrated overhead term covers it (:mod:`.model`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from pareco.models.base import SlimmableNet
from pareco.slim import SlimConv2d, SlimLinear, Subnet

KINDS = ("conv", "linear")


@dataclass(frozen=True)
class LayerSpec:
    """One layer's geometry and channel wiring.

    ``in_group`` / ``out_group``: channel-group index, or ``None`` for a fixed count
    (``in_channels`` / ``out_channels``, the full-width counts). ``kernel``, ``stride``,
    ``padding``: square conv geometry (1, 1, 0 for linear); ``in_size``: input height = width
    in pixels (1 for linear); ``depthwise``: a depthwise conv (then ``in_group == out_group``).
    """

    kind: str
    in_channels: int
    out_channels: int
    in_group: int | None
    out_group: int | None
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    in_size: int = 1
    depthwise: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"layer kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def channels(self, group_channels: Tensor) -> tuple[Tensor, Tensor]:
        """``(c_in, c_out)`` float64 ``(n,)`` for an ``(n, dim)`` tensor of group channels."""
        n = group_channels.shape[0]

        def pick(group: int | None, fixed: int) -> Tensor:
            if group is None:
                return torch.full((n,), float(fixed), dtype=torch.float64)
            return group_channels[:, group].to(torch.float64)

        return pick(self.in_group, self.in_channels), pick(self.out_group, self.out_channels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LayerSpec":
        fields = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown layer fields {sorted(unknown)}; expected {sorted(fields)}")
        return cls(**d)


def trace_layers(net: SlimmableNet) -> list[tuple[LayerSpec, int]]:
    """The distinct :class:`LayerSpec` of ``net`` in forward order, each with its multiplicity.

    Traced at full width at ``net.image_size`` (resolutions do not depend on width).
    """
    counts: dict[LayerSpec, int] = {}

    def record(layer: nn.Module, x: Tensor, _y: Tensor) -> None:
        if isinstance(layer, SlimConv2d):
            spec = LayerSpec("conv", layer.in_channels, layer.out_channels, layer.in_group,
                             layer.out_group, kernel=_square(layer.kernel_size, "kernel"),
                             stride=_square(layer.stride, "stride"),
                             padding=_square(layer.padding, "padding"),
                             in_size=_square(tuple(x.shape[2:]), "input"),
                             depthwise=layer.depthwise)
        elif isinstance(layer, SlimLinear):
            spec = LayerSpec("linear", layer.in_features, layer.out_features, layer.in_group,
                             layer.out_group)
        else:
            return
        counts[spec] = counts.get(spec, 0) + 1

    # two images: batch-statistics BN needs more than one value per channel (1x1 maps)
    probe = torch.zeros(2, net.in_channels, net.image_size, net.image_size)
    with torch.no_grad():
        net._forward(probe, Subnet(net.width_space.full_channels, None, record))
    return list(counts.items())


def _square(value: tuple | int | str, what: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) or len(set(value)) != 1:
        raise ValueError(f"latency tables support square {what}s only, got {value!r}")
    return int(value[0])
