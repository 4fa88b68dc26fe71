"""Slimmable layers over shared weights, and the per-call :class:`Subnet` context they read.

Every slimmable layer owns full-width weights and, on each forward call, uses the first ``c``
input/output channels, where ``c`` comes from the :class:`Subnet` passed *as an argument*. Layers
keep no per-call state, so one model can serve concurrent requests at different widths.

Each layer declares which channel group its input and output belong to (an index into the
model's :class:`~pareco.width.WidthSpace`, or ``None`` for a fixed count such as the image
channels or the number of classes). A forward call checks the incoming tensor against that
declaration, so a wiring mistake (say, a residual addition of mismatched widths) fails loudly.

Batch norm keeps no running statistics. With ``Subnet.bn_stats is None`` it normalizes with batch
statistics (training, calibration, H re-evaluation); otherwise it uses the statistics stored for
that configuration, keyed by the layer's ``stats_key`` (its module name in the model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BNStats = Mapping[str, tuple[Tensor, Tensor]]
"""Per-configuration batch-norm statistics: ``stats_key -> (running_mean, running_var)``, each of
the configuration's channel count for that layer."""

LayerHook = Callable[[nn.Module, Tensor, Tensor], None]
"""Called as ``hook(layer, input, output)`` by every slimmable layer during one forward call."""


@dataclass(frozen=True)
class Subnet:
    """The immutable width context of one forward call.

    ``channels[g]`` is the channel count of group ``g``; ``bn_stats`` selects stored batch-norm
    statistics (``None``: batch statistics); ``hook`` observes every slimmable layer (used for
    calibration and cost tracing, never by serving).
    """

    channels: tuple[int, ...]
    bn_stats: BNStats | None = None
    hook: LayerHook | None = None

    def width(self, group: int | None, full: int) -> int:
        return full if group is None else self.channels[group]


def _check_input(layer: nn.Module, x: Tensor, expected: int) -> None:
    if x.shape[1] != expected:
        raise RuntimeError(
            f"{type(layer).__name__} (group {getattr(layer, 'in_group', None)}) received "
            f"{x.shape[1]} channels but the width configuration says {expected}: "
            "the model wires channel groups inconsistently"
        )


class SlimConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose first ``c_out`` filters over the first ``c_in`` channels are used.

    ``depthwise=True`` makes a depthwise conv (groups == channels); its input and output
    share one group by construction.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        in_group: int | None,
        out_group: int | None,
        stride: int = 1,
        padding: int | None = None,
        depthwise: bool = False,
        bias: bool = False,
    ) -> None:
        if depthwise and (in_channels != out_channels or in_group != out_group):
            raise ValueError("a depthwise conv needs equal in/out channels and one group")
        padding = (kernel_size - 1) // 2 if padding is None else padding
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            groups=in_channels if depthwise else 1, bias=bias,
        )
        self.in_group, self.out_group, self.depthwise = in_group, out_group, depthwise

    def forward(self, x: Tensor, net: Subnet) -> Tensor:  # type: ignore[override]
        c_in = net.width(self.in_group, self.in_channels)
        _check_input(self, x, c_in)
        c_out = net.width(self.out_group, self.out_channels)
        weight = self.weight[:c_out] if self.depthwise else self.weight[:c_out, :c_in]
        bias = None if self.bias is None else self.bias[:c_out]
        y = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation,
                     c_out if self.depthwise else 1)
        if net.hook is not None:
            net.hook(self, x, y)
        return y

    def to_dense(self, net: Subnet) -> nn.Conv2d:
        c_in = net.width(self.in_group, self.in_channels)
        c_out = net.width(self.out_group, self.out_channels)
        dense = nn.Conv2d(c_in, c_out, self.kernel_size, self.stride, self.padding,
                          self.dilation, c_out if self.depthwise else 1, self.bias is not None)
        with torch.no_grad():
            w = self.weight[:c_out] if self.depthwise else self.weight[:c_out, :c_in]
            dense.weight.copy_(w)
            if self.bias is not None:
                dense.bias.copy_(self.bias[:c_out])
        return dense


class SlimLinear(nn.Linear):
    """``nn.Linear`` over the first ``c_in`` input features, producing ``c_out`` outputs."""

    def __init__(self, in_features: int, out_features: int, *, in_group: int | None,
                 out_group: int | None = None, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.in_group, self.out_group = in_group, out_group

    def forward(self, x: Tensor, net: Subnet) -> Tensor:  # type: ignore[override]
        c_in = net.width(self.in_group, self.in_features)
        _check_input(self, x, c_in)
        c_out = net.width(self.out_group, self.out_features)
        bias = None if self.bias is None else self.bias[:c_out]
        y = F.linear(x, self.weight[:c_out, :c_in], bias)
        if net.hook is not None:
            net.hook(self, x, y)
        return y

    def to_dense(self, net: Subnet) -> nn.Linear:
        c_in = net.width(self.in_group, self.in_features)
        c_out = net.width(self.out_group, self.out_features)
        dense = nn.Linear(c_in, c_out, bias=self.bias is not None)
        with torch.no_grad():
            dense.weight.copy_(self.weight[:c_out, :c_in])
            if self.bias is not None:
                dense.bias.copy_(self.bias[:c_out])
        return dense


class SlimBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the first ``c`` channels, with no shared running statistics."""

    def __init__(self, num_features: int, *, group: int | None, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps, affine=True, track_running_stats=False)
        self.in_group = self.out_group = group
        self.stats_key = ""  # set once by the owning model to this layer's module name

    def forward(self, x: Tensor, net: Subnet) -> Tensor:  # type: ignore[override]
        c = net.width(self.in_group, self.num_features)
        _check_input(self, x, c)
        if net.hook is not None:
            net.hook(self, x, x)
        if net.bn_stats is None:
            return F.batch_norm(x, None, None, self.weight[:c], self.bias[:c], True, 0.0, self.eps)
        mean, var = self._stats(net.bn_stats, c)
        # calibrated statistics are kept on the CPU (calibrate_bn); follow the input's device
        mean, var = mean.to(x.device), var.to(x.device)
        return F.batch_norm(x, mean, var, self.weight[:c], self.bias[:c], False, 0.0, self.eps)

    def _stats(self, bn_stats: BNStats, c: int) -> tuple[Tensor, Tensor]:
        try:
            mean, var = bn_stats[self.stats_key]
        except KeyError:
            raise KeyError(f"bn_stats has no statistics for layer {self.stats_key!r}") from None
        if mean.shape != (c,) or var.shape != (c,):
            raise ValueError(
                f"bn_stats for {self.stats_key!r} have shapes {tuple(mean.shape)}/"
                f"{tuple(var.shape)}, expected ({c},) for this configuration"
            )
        return mean, var

    def to_dense(self, net: Subnet) -> nn.BatchNorm2d:
        """A plain ``BatchNorm2d``: eval-mode with the stored statistics, or batch statistics."""
        c = net.width(self.in_group, self.num_features)
        if net.bn_stats is None:
            dense = nn.BatchNorm2d(c, eps=self.eps, track_running_stats=False)
        else:
            dense = nn.BatchNorm2d(c, eps=self.eps)
            mean, var = self._stats(net.bn_stats, c)
            dense.running_mean.copy_(mean)
            dense.running_var.copy_(var)
        with torch.no_grad():
            dense.weight.copy_(self.weight[:c])
            dense.bias.copy_(self.bias[:c])
        return dense.eval()


SLIM_LAYERS = (SlimConv2d, SlimLinear, SlimBatchNorm2d)
