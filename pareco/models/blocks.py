"""Slimmable building blocks shared by the MobileNets: conv-BN-activation, squeeze-excitation and
the inverted-residual (MBConv) block, each with a plain dense counterpart for extraction.

Every block takes the per-call :class:`~pareco.slim.Subnet` as an argument and keeps no width
state; ``extract(subnet)`` returns ordinary ``nn`` modules computing the same function.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pareco.slim import SlimBatchNorm2d, SlimConv2d, Subnet
from pareco.width import ChannelGroup, WidthSpace

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish,
}
"""Activation names accepted by the blocks (``None`` means no activation)."""


def activation(name: str | None) -> nn.Module | None:
    """A fresh activation module for ``name``, or ``None`` for a linear layer."""
    if name is None:
        return None
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class ConvBNAct(nn.Module):
    """``act(bn(conv(x)))`` with the conv's output group shared by the BN.

    Children are named ``conv`` and ``bn`` (the BN's ``stats_key`` ends in ``.bn``).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, *, in_group: int | None,
                 out_group: int | None, stride: int = 1, depthwise: bool = False,
                 act: str | None = None, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = SlimConv2d(c_in, c_out, kernel_size, stride=stride, in_group=in_group,
                               out_group=out_group, depthwise=depthwise)
        self.bn = SlimBatchNorm2d(c_out, group=out_group, eps=bn_eps)
        self.act_name = act
        self.act = activation(act)

    def forward(self, x: Tensor, net: Subnet) -> Tensor:
        x = self.bn(self.conv(x, net), net)
        return x if self.act is None else self.act(x)

    def extract(self, net: Subnet) -> nn.Sequential:
        layers: list[nn.Module] = [self.conv.to_dense(net), self.bn.to_dense(net)]
        act = activation(self.act_name)
        return nn.Sequential(*layers, *([act] if act is not None else []))


class DenseSqueezeExcite(nn.Module):
    """Plain SE: ``x * hardsigmoid(fc2(relu(fc1(avgpool(x)))))``."""

    def __init__(self, fc1: nn.Conv2d, fc2: nn.Conv2d) -> None:
        super().__init__()
        self.fc1, self.fc2 = fc1, fc2

    def forward(self, x: Tensor) -> Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class SqueezeExcite(nn.Module):
    """Slimmable SE (MobileNetV3 flavour: ReLU squeeze, hard-sigmoid gate).

    The squeeze width is fixed (never slimmed); the gate follows ``group``, the group of the
    channels it scales.
    """

    def __init__(self, channels: int, squeeze: int, *, group: int | None) -> None:
        super().__init__()
        self.fc1 = SlimConv2d(channels, squeeze, 1, in_group=group, out_group=None, bias=True)
        self.fc2 = SlimConv2d(squeeze, channels, 1, in_group=None, out_group=group, bias=True)

    def forward(self, x: Tensor, net: Subnet) -> Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s, net)), net))
        return x * s

    def extract(self, net: Subnet) -> DenseSqueezeExcite:
        return DenseSqueezeExcite(self.fc1.to_dense(net), self.fc2.to_dense(net))


class DenseInvertedResidual(nn.Module):
    """Plain inverted-residual block: ``body(x) (+ x when residual)``."""

    def __init__(self, body: nn.Sequential, residual: bool) -> None:
        super().__init__()
        self.body, self.residual = body, residual

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return y + x if self.residual else y


class InvertedResidual(nn.Module):
    """MBConv: [1x1 expand -> BN -> act] -> kxk depthwise -> BN -> act -> [SE] -> 1x1 project -> BN.

    ``g_exp`` is the expansion conv's group (ignored when ``expand`` is false: then the depthwise
    conv runs on the input's group ``g_in``). The identity shortcut is used when ``stride == 1``
    and ``c_in == c_out``, which requires ``g_in == g_out``.
    """

    def __init__(self, c_in: int, c_exp: int, c_out: int, *, kernel_size: int, stride: int,
                 act: str, g_in: int, g_exp: int | None, g_out: int, expand: bool,
                 se_squeeze: int | None = None, bn_eps: float = 1e-5) -> None:
        super().__init__()
        if not expand and c_exp != c_in:
            raise ValueError(f"without expansion the hidden width must equal c_in, "
                             f"got {c_exp} != {c_in}")
        self.residual = stride == 1 and c_in == c_out
        if self.residual and g_in != g_out:
            raise ValueError(f"a residual block needs one group in and out, got {g_in}/{g_out}")
        g_hid = g_exp if expand else g_in
        if g_hid is None:
            raise ValueError("an expanding block needs the expansion conv's group g_exp")
        self.expand = (ConvBNAct(c_in, c_exp, 1, in_group=g_in, out_group=g_hid, act=act,
                                 bn_eps=bn_eps) if expand else None)
        self.depthwise = ConvBNAct(c_exp, c_exp, kernel_size, in_group=g_hid, out_group=g_hid,
                                   stride=stride, depthwise=True, act=act, bn_eps=bn_eps)
        self.se = (SqueezeExcite(c_exp, se_squeeze, group=g_hid)
                   if se_squeeze is not None else None)
        self.project = ConvBNAct(c_exp, c_out, 1, in_group=g_hid, out_group=g_out, act=None,
                                 bn_eps=bn_eps)

    def forward(self, x: Tensor, net: Subnet) -> Tensor:
        y = x if self.expand is None else self.expand(x, net)
        y = self.depthwise(y, net)
        if self.se is not None:
            y = self.se(y, net)
        y = self.project(y, net)
        return y + x if self.residual else y

    def extract(self, net: Subnet) -> DenseInvertedResidual:
        parts = [self.expand, self.depthwise, self.se, self.project]
        body = nn.Sequential(*[p.extract(net) for p in parts if p is not None])
        return DenseInvertedResidual(body, self.residual)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's channel rounding (used only for the fixed SE squeeze width)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class GroupAllocator:
    """Collects channel groups in build order; ``new`` returns the group's index."""

    def __init__(self) -> None:
        self.groups: list[ChannelGroup] = []

    def new(self, name: str, channels: int) -> int:
        self.groups.append(ChannelGroup(name, channels))
        return len(self.groups) - 1

    def space(self, lower: float, divisor: int) -> WidthSpace:
        return WidthSpace(tuple(self.groups), lower, divisor)


def init_mobilenet_weights(model: nn.Module) -> None:
    """torchvision's MobileNet initialization: He (fan-out) convs, unit BN, N(0, 0.01) linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
