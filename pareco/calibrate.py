"""Batch-norm calibration: per-configuration statistics computed after training (DESIGN §6).

Shared running statistics are meaningless across widths, so the network keeps none. For one
configuration we forward calibration images (no augmentation) with batch-statistics
normalization and accumulate, for every slimmable BN layer, the exact mean and unbiased variance
of its input over all images seen (the cumulative average, not an exponential one).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from pareco.models.base import SlimmableNet
from pareco.slim import BNStats, SlimBatchNorm2d
from pareco.width import AlphaLike


class _Moments:
    """Per-layer float64 running sums of x and x^2 over (N, H, W)."""

    def __init__(self) -> None:
        self.sums: dict[str, list] = {}

    def __call__(self, layer: nn.Module, x: Tensor, _y: Tensor) -> None:
        if not isinstance(layer, SlimBatchNorm2d):
            return
        xd = x.detach().to(torch.float64)
        n = xd.numel() // xd.shape[1]
        s1 = xd.sum(dim=(0, 2, 3))
        s2 = (xd * xd).sum(dim=(0, 2, 3))
        acc = self.sums.get(layer.stats_key)
        if acc is None:
            self.sums[layer.stats_key] = [s1, s2, n]
        else:
            acc[0] += s1
            acc[1] += s2
            acc[2] += n

    def stats(self) -> dict[str, tuple[Tensor, Tensor]]:
        out = {}
        for key, (s1, s2, n) in self.sums.items():
            mean = s1 / n
            var = (s2 / n - mean * mean).clamp(min=0.0) * (n / max(n - 1, 1))
            out[key] = (mean.float(), var.float())
        return out


@torch.no_grad()
def calibrate_bn(net: SlimmableNet, alpha: AlphaLike, images: Iterable[Tensor],
                 device: torch.device | str = "cpu") -> BNStats:
    """BN statistics of configuration ``alpha`` from batches of (normalized) ``images``.

    Returns ``stats_key -> (mean, var)`` float32 tensors of each layer's channel count for
    ``alpha``, ready for ``net(x, alpha, bn_stats=...)`` and ``net.extract(alpha, bn_stats)``.
    """
    moments = _Moments()
    seen = 0
    for batch in images:
        net(batch.to(device), alpha, None, moments)
        seen += batch.shape[0]
    if seen < 2:
        raise ValueError("BN calibration needs at least 2 images")
    stats = moments.stats()
    missing = set(net.bn_layers()) - set(stats)
    if missing:  # pragma: no cover - every BN layer runs in every configuration
        raise RuntimeError(f"calibration never reached BN layers {sorted(missing)}")
    return {k: (mean.cpu(), var.cpu()) for k, (mean, var) in stats.items()}
