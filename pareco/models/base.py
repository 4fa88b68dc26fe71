"""The slimmable-network base class: the public API every architecture in the zoo shares.

    net = pareco.models.build("resnet20", num_classes=10, in_channels=1, image_size=28)
    net.width_space.dim                 # 6 independent channel groups
    y = net(x, alpha)                   # forward at per-group multipliers alpha (None = full)
    net.macs(alpha)                     # exact multiply-accumulates at the model's input size
    dense = net.extract(alpha, stats)   # plain Conv2d/BatchNorm2d/Linear module, same function

Subclasses define ``width_space``, ``_forward(x, subnet)`` and ``_extract(subnet)``; they must
call :meth:`_finish_build` at the end of ``__init__``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pareco.cost import CostModel, trace_costs
from pareco.slim import BNStats, LayerHook, SlimBatchNorm2d, Subnet
from pareco.width import AlphaLike, WidthSpace


class SlimmableNet(nn.Module):
    """A network whose width is chosen per forward call from its :class:`WidthSpace`."""

    width_space: WidthSpace
    arch_name: str = ""  # set by pareco.models.build, with build_kwargs
    build_kwargs: dict[str, Any]
    in_channels: int
    num_classes: int
    image_size: int

    def _finish_build(self) -> None:
        for name, module in self.named_modules():
            if isinstance(module, SlimBatchNorm2d):
                module.stats_key = name
        probe = torch.zeros(2, self.in_channels, self.image_size, self.image_size)
        self._macs_model, self._params_model = trace_costs(
            lambda subnet: self._forward(probe, subnet),
            self.width_space.dim,
            self.width_space.full_channels,
        )

    # ---------------------------------------------------------------------------- forward
    def subnet(self, alpha: AlphaLike = None, bn_stats: BNStats | None = None,
               hook: LayerHook | None = None) -> Subnet:
        """The immutable per-call context for ``alpha`` (validated)."""
        return Subnet(self.width_space.channels(alpha), bn_stats, hook)

    def forward(self, x: Tensor, alpha: AlphaLike = None, bn_stats: BNStats | None = None,
                hook: LayerHook | None = None) -> Tensor:
        """Logits of the sub-network ``alpha`` for images ``x`` of shape ``(N, C, H, W)``.

        ``bn_stats=None`` normalizes with batch statistics; otherwise the given per-config
        statistics are used (inference). ``hook`` observes every slimmable layer.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected images of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        return self._forward(x, self.subnet(alpha, bn_stats, hook))

    def _forward(self, x: Tensor, subnet: Subnet) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------------------- costs
    def macs(self, alpha: AlphaLike = None) -> int:
        """Multiply-accumulates of sub-network ``alpha`` for one image at ``image_size``."""
        return int(round(self._macs_model(self._channels_row(alpha)).item()))

    def params(self, alpha: AlphaLike = None) -> int:
        """Parameters of the dense sub-network ``alpha`` (weights, biases, BN affine)."""
        return int(round(self._params_model(self._channels_row(alpha)).item()))

    def macs_batch(self, alphas: Tensor) -> Tensor:
        """MACs of each row of an ``(n, dim)`` tensor of valid multipliers (float64)."""
        return self._macs_model(self.width_space.channels_batch(alphas))

    @property
    def macs_model(self) -> CostModel:
        """The MACs polynomial over channel counts (see :mod:`pareco.cost`)."""
        return self._macs_model

    def _channels_row(self, alpha: AlphaLike) -> Tensor:
        return torch.tensor([self.width_space.channels(alpha)], dtype=torch.float64)

    # -------------------------------------------------------------------------- extraction
    def extract(self, alpha: AlphaLike = None, bn_stats: BNStats | None = None) -> nn.Module:
        """A plain dense ``nn.Module`` (eval mode) computing ``self(x, alpha, bn_stats)``.

        Weights are contiguous copies, so the result shares no storage with this model.
        """
        return self._extract(self.subnet(alpha, bn_stats)).eval()

    def _extract(self, subnet: Subnet) -> nn.Module:
        raise NotImplementedError

    def bn_layers(self) -> dict[str, SlimBatchNorm2d]:
        """The slimmable batch-norm layers by ``stats_key`` (the keys of ``bn_stats``)."""
        return {m.stats_key: m for m in self.modules() if isinstance(m, SlimBatchNorm2d)}
