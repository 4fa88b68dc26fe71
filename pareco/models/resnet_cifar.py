"""Slimmable ResNet for CIFAR-sized inputs (He et al. 2016, depth 6n+2) and its k-times-wide variants.

Three stages of ``n`` basic blocks at 16k, 32k and 64k channels; stage transitions use a strided
1x1 projection shortcut (option B), so any pair of stage widths can be added. Width space (the
paper's Appendix A, six groups, ``alpha in [0.316, 1]``): per stage one group for every layer on
the residual path (the stem or projection output and each block's second conv) and one group
shared by the blocks' internal (first conv) layers.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pareco.models.base import SlimmableNet
from pareco.slim import SlimBatchNorm2d, SlimConv2d, SlimLinear, Subnet
from pareco.width import ChannelGroup, WidthSpace

LOWER = 0.316


class _DenseBlock(nn.Module):
    """Plain basic block: relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Module) -> None:
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int,
                 g_in: int, g_mid: int, g_out: int) -> None:
        super().__init__()
        self.conv1 = SlimConv2d(c_in, c_mid, 3, stride=stride, in_group=g_in, out_group=g_mid)
        self.bn1 = SlimBatchNorm2d(c_mid, group=g_mid)
        self.conv2 = SlimConv2d(c_mid, c_out, 3, in_group=g_mid, out_group=g_out)
        self.bn2 = SlimBatchNorm2d(c_out, group=g_out)
        self.proj: SlimConv2d | None = None
        if stride != 1 or g_in != g_out:
            self.proj = SlimConv2d(c_in, c_out, 1, stride=stride, in_group=g_in, out_group=g_out)
            self.proj_bn = SlimBatchNorm2d(c_out, group=g_out)

    def forward(self, x: Tensor, net: Subnet) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x, net), net))
        out = self.bn2(self.conv2(out, net), net)
        shortcut = x if self.proj is None else self.proj_bn(self.proj(x, net), net)
        return F.relu(out + shortcut)

    def extract(self, net: Subnet) -> nn.Module:
        body = nn.Sequential(self.conv1.to_dense(net), self.bn1.to_dense(net), nn.ReLU(),
                             self.conv2.to_dense(net), self.bn2.to_dense(net))
        shortcut: nn.Module = nn.Identity()
        if self.proj is not None:
            shortcut = nn.Sequential(self.proj.to_dense(net), self.proj_bn.to_dense(net))
        return _DenseBlock(body, shortcut)


class ResNetCifar(SlimmableNet):
    """ResNet-(6n+2) with base width ``16 * width_factor``."""

    def __init__(self, depth: int = 20, width_factor: float = 1.0, num_classes: int = 10,
                 in_channels: int = 3, image_size: int = 32, divisor: int = 1) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"ResNet-CIFAR depth must be 6n+2 with n >= 1, got {depth}")
        if width_factor <= 0:
            raise ValueError(f"width_factor must be positive, got {width_factor}")
        blocks_per_stage = (depth - 2) // 6
        widths = [max(1, round(16 * width_factor * m)) for m in (1, 2, 4)]
        groups = []
        for s, c in enumerate(widths, start=1):
            groups += [ChannelGroup(f"stage{s}.residual", c), ChannelGroup(f"stage{s}.internal", c)]
        self.width_space = WidthSpace(tuple(groups), LOWER, divisor)
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size

        self.stem = SlimConv2d(in_channels, widths[0], 3, in_group=None, out_group=0)
        self.stem_bn = SlimBatchNorm2d(widths[0], group=0)
        blocks = []
        c_prev, g_prev = widths[0], 0
        for s, c in enumerate(widths):
            g_res, g_mid = 2 * s, 2 * s + 1
            for b in range(blocks_per_stage):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(BasicBlock(c_prev, c, c, stride, g_prev, g_mid, g_res))
                c_prev, g_prev = c, g_res
        self.blocks = nn.ModuleList(blocks)
        self.fc = SlimLinear(widths[-1], num_classes, in_group=g_prev)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self._finish_build()

    def _forward(self, x: Tensor, net: Subnet) -> Tensor:
        x = F.relu(self.stem_bn(self.stem(x, net), net))
        for block in self.blocks:
            x = block(x, net)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x, net)

    def _extract(self, net: Subnet) -> nn.Module:
        return nn.Sequential(
            self.stem.to_dense(net), self.stem_bn.to_dense(net), nn.ReLU(),
            *[block.extract(net) for block in self.blocks],
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), self.fc.to_dense(net),
        )
