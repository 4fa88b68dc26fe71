"""Slimmable MobileNetV3-Large (Howard et al. 2019), layer for layer torchvision's
``mobilenet_v3_large``.

At full width: 3x3/2 stem (16, hard-swish) -> 15 inverted-residual blocks (ReLU or hard-swish,
some with a hard-sigmoid squeeze-excitation) -> 1x1 conv (960, hard-swish) -> global pool ->
linear 1280 -> hard-swish -> dropout 0.2 -> linear. BN eps 1e-3. 216.6 M MACs at 224x224.

Width space (the paper's Appendix A, ``d = 22``, ``alpha in [0.42, 1]``, divisor 1 by default):
one group per run of identity-shortcut-connected layers (the stem shares its group with block 0,
a residual 16 -> 16 block; each later stage's group is opened by its first block's projecting
conv); one group per expansion conv (shared by the depthwise conv after it and by the SE gate
that scales it; the SE squeeze width is fixed); the last 1x1 conv; the classifier's hidden
linear. In build order (name, C_g)::

     0 stem 16                   8 blocks.6.expand 240      16 blocks.12.expand 672
     1 blocks.1.expand 64        9 stage3 80                17 stage5 160
     2 stage1 24                10 blocks.7.expand 200      18 blocks.13.expand 960
     3 blocks.2.expand 72       11 blocks.8.expand 184      19 blocks.14.expand 960
     4 blocks.3.expand 72       12 blocks.9.expand 184      20 last_conv 960
     5 stage2 40                13 blocks.10.expand 480     21 classifier.hidden 1280
     6 blocks.4.expand 120      14 stage4 112
     7 blocks.5.expand 120      15 blocks.11.expand 672

``blocks.{j}`` is torchvision's ``features.{j+1}``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pareco.models.base import SlimmableNet
from pareco.models.blocks import (
    ConvBNAct, GroupAllocator, InvertedResidual, init_mobilenet_weights, make_divisible,
)
from pareco.slim import SlimLinear, Subnet

LOWER = 0.42
BN_EPS = 1e-3

SETTING = (  # input, kernel, expanded, output, SE, activation, stride (torchvision's table)
    (16, 3, 16, 16, False, "relu", 1),
    (16, 3, 64, 24, False, "relu", 2),
    (24, 3, 72, 24, False, "relu", 1),
    (24, 5, 72, 40, True, "relu", 2),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hardswish", 2),
    (80, 3, 200, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 480, 112, True, "hardswish", 1),
    (112, 3, 672, 112, True, "hardswish", 1),
    (112, 5, 672, 160, True, "hardswish", 2),
    (160, 5, 960, 160, True, "hardswish", 1),
    (160, 5, 960, 160, True, "hardswish", 1),
)
LAST, HIDDEN = 960, 1280


class MobileNetV3Large(SlimmableNet):
    """MobileNetV3-Large 1.0x with one width multiplier per channel group (see module docstring)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224,
                 divisor: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.dropout = dropout
        groups = GroupAllocator()
        c_prev = SETTING[0][0]
        g_prev = groups.new("stem", c_prev)
        self.stem = ConvBNAct(in_channels, c_prev, 3, stride=2, in_group=None, out_group=g_prev,
                              act="hardswish", bn_eps=BN_EPS)
        blocks: list[InvertedResidual] = []
        stage = 0
        for c_in, k, c_exp, c_out, se, act, stride in SETTING:
            assert c_in == c_prev
            expand = c_exp != c_in
            g_exp = groups.new(f"blocks.{len(blocks)}.expand", c_exp) if expand else None
            if stride == 1 and c_in == c_out:
                g_out = g_prev
            else:
                stage += 1
                g_out = groups.new(f"stage{stage}", c_out)
            blocks.append(InvertedResidual(
                c_in, c_exp, c_out, kernel_size=k, stride=stride, act=act, g_in=g_prev,
                g_exp=g_exp, g_out=g_out, expand=expand,
                se_squeeze=make_divisible(c_exp // 4, 8) if se else None, bn_eps=BN_EPS))
            c_prev, g_prev = c_out, g_out
        self.blocks = nn.ModuleList(blocks)
        g_last = groups.new("last_conv", LAST)
        self.last_conv = ConvBNAct(c_prev, LAST, 1, in_group=g_prev, out_group=g_last,
                                   act="hardswish", bn_eps=BN_EPS)
        g_hidden = groups.new("classifier.hidden", HIDDEN)
        self.hidden = SlimLinear(LAST, HIDDEN, in_group=g_last, out_group=g_hidden)
        self.fc = SlimLinear(HIDDEN, num_classes, in_group=g_hidden)
        self.width_space = groups.space(LOWER, divisor)
        init_mobilenet_weights(self)
        self._finish_build()

    def _forward(self, x: Tensor, net: Subnet) -> Tensor:
        x = self.stem(x, net)
        for block in self.blocks:
            x = block(x, net)
        x = F.adaptive_avg_pool2d(self.last_conv(x, net), 1).flatten(1)
        x = F.hardswish(self.hidden(x, net))
        return self.fc(F.dropout(x, self.dropout, self.training), net)

    def _extract(self, net: Subnet) -> nn.Module:
        return nn.Sequential(
            self.stem.extract(net), *[block.extract(net) for block in self.blocks],
            self.last_conv.extract(net), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            self.hidden.to_dense(net), nn.Hardswish(), nn.Dropout(self.dropout),
            self.fc.to_dense(net),
        )
