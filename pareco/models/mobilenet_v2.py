"""Slimmable MobileNetV2 (Sandler et al. 2018), layer for layer torchvision's ``mobilenet_v2``.

At full width: 3x3/2 stem (32) -> 17 inverted-residual blocks (ReLU6) -> 1x1 conv (1280) ->
global pool -> dropout 0.2 -> linear. 300.8 M MACs at 224x224 with 1000 classes.

Width space (the paper's Appendix A, ``d = 25``, ``alpha in [0.42, 1]``, divisor 1 by default):
the stem; per stage one group for every layer on its identity-shortcut path (the projecting conv
of each block of the stage; the first block's shortcut-free projection opens the group); one group
per expansion conv (the depthwise conv after it shares it; block 0 has no expansion, so its
depthwise conv runs in the stem's group); the last 1x1 conv. In build order (name, C_g)::

     0 stem 32                   9 blocks.6.expand 192      18 blocks.13.expand 576
     1 stage1 16                10 stage4 64                19 stage6 160
     2 blocks.1.expand 96       11 blocks.7.expand 384      20 blocks.14.expand 960
     3 stage2 24                12 blocks.8.expand 384      21 blocks.15.expand 960
     4 blocks.2.expand 144      13 blocks.9.expand 384      22 blocks.16.expand 960
     5 blocks.3.expand 144      14 blocks.10.expand 384     23 stage7 320
     6 stage3 32                15 stage5 96                24 last_conv 1280
     7 blocks.4.expand 192      16 blocks.11.expand 576
     8 blocks.5.expand 192      17 blocks.12.expand 576

``blocks.{j}`` is torchvision's ``features.{j+1}``; stage s is row s of torchvision's setting
table. Uniform ``alpha = 0.42`` gives 60.6 M MACs at 224x224 (the paper's smallest point, ~59 M).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pareco.models.base import SlimmableNet
from pareco.models.blocks import ConvBNAct, GroupAllocator, InvertedResidual, init_mobilenet_weights
from pareco.slim import SlimLinear, Subnet

LOWER = 0.42

SETTING = (  # expansion t, output channels c, blocks n, first stride s (torchvision's table)
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
STEM, LAST = 32, 1280


class MobileNetV2(SlimmableNet):
    """MobileNetV2 1.0x with one width multiplier per channel group (see module docstring)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224,
                 divisor: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.dropout = dropout
        groups = GroupAllocator()
        g_prev = groups.new("stem", STEM)
        self.stem = ConvBNAct(in_channels, STEM, 3, stride=2, in_group=None, out_group=g_prev,
                              act="relu6")
        blocks: list[InvertedResidual] = []
        c_prev = STEM
        for stage, (t, c, n, s) in enumerate(SETTING, start=1):
            for i in range(n):
                stride = s if i == 0 else 1
                g_exp = groups.new(f"blocks.{len(blocks)}.expand", c_prev * t) if t != 1 else None
                residual = stride == 1 and c_prev == c
                g_out = g_prev if residual else groups.new(f"stage{stage}", c)
                blocks.append(InvertedResidual(
                    c_prev, c_prev * t, c, kernel_size=3, stride=stride, act="relu6",
                    g_in=g_prev, g_exp=g_exp, g_out=g_out, expand=t != 1))
                c_prev, g_prev = c, g_out
        self.blocks = nn.ModuleList(blocks)
        g_last = groups.new("last_conv", LAST)
        self.last_conv = ConvBNAct(c_prev, LAST, 1, in_group=g_prev, out_group=g_last,
                                   act="relu6")
        self.fc = SlimLinear(LAST, num_classes, in_group=g_last)
        self.width_space = groups.space(LOWER, divisor)
        init_mobilenet_weights(self)
        self._finish_build()

    def _forward(self, x: Tensor, net: Subnet) -> Tensor:
        x = self.stem(x, net)
        for block in self.blocks:
            x = block(x, net)
        x = F.adaptive_avg_pool2d(self.last_conv(x, net), 1).flatten(1)
        return self.fc(F.dropout(x, self.dropout, self.training), net)

    def _extract(self, net: Subnet) -> nn.Module:
        return nn.Sequential(
            self.stem.extract(net), *[block.extract(net) for block in self.blocks],
            self.last_conv.extract(net), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Dropout(self.dropout), self.fc.to_dense(net),
        )
