"""Whole dense subnets as ONNX models, for calibrating and checking a latency table.

Timing does not depend on weight values, so BN statistics are placeholders (mean 0, variance
1) of the right shapes; ONNX Runtime folds the batch norms into the convolutions, as in the
exported zoo subnets. Export goes through ``torch.onnx.export`` (the dynamo exporter, batch 1).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import onnx
import torch
from torch import Tensor, nn

from pareco.models.base import SlimmableNet
from pareco.slim import BNStats, SlimBatchNorm2d

SubnetExporter = Callable[[SlimmableNet, Sequence[tuple[float, ...]]], list[onnx.ModelProto]]
"""``(net, alphas) -> one ONNX model per alpha`` (input ``(1, C, H, W)`` float32)."""


def placeholder_stats(net: SlimmableNet, alpha: tuple[float, ...]) -> BNStats:
    """BN statistics of the right shapes for ``alpha``: mean 0, variance 1."""
    stats: dict[str, tuple[Tensor, Tensor]] = {}

    def record(layer: nn.Module, x: Tensor, _y: Tensor) -> None:
        if isinstance(layer, SlimBatchNorm2d):
            c = x.shape[1]
            stats[layer.stats_key] = (torch.zeros(c), torch.ones(c))

    with torch.no_grad():
        net(torch.zeros(2, net.in_channels, net.image_size, net.image_size), alpha, None, record)
    return stats


def export_subnets(net: SlimmableNet, alphas: Sequence[tuple[float, ...]]) -> list[onnx.ModelProto]:
    """Dense ONNX subnets of ``net`` at ``alphas`` (placeholder BN statistics, batch 1)."""
    models = []
    example = torch.zeros(1, net.in_channels, net.image_size, net.image_size)
    for alpha in alphas:
        dense = net.extract(alpha, placeholder_stats(net, alpha))
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(dense, (example,), dynamo=True, verbose=False)
        models.append(program.model_proto)
    return models
