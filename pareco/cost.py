"""Exact analytic MACs and parameter counts of sub-networks, vectorized over many configurations.

Every conv / linear / batch-norm cost is a product of at most two channel counts times a constant
(``c_out * c_in * k*k * H*W`` for a conv, ``c * k*k * H*W`` for a depthwise conv, ...). A model's
cost is therefore a sum of terms ``coef * c[a] * c[b]`` over its channel groups, where a slot
``a == dim`` stands for the constant 1 (fixed channel counts are folded into ``coef``). The terms
are read once from a traced full-width forward (which gives every layer's output resolution), so
a cost evaluation is one gather and one sum, cheap enough for thousands of calls in a search.

MACs count conv and linear multiply-accumulates only (no bias, BN, activation or pooling), the
convention of ``torch.utils.flop_counter.FlopCounterMode`` total / 2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pareco.slim import SlimBatchNorm2d, SlimConv2d, SlimLinear, Subnet

Term = tuple[float, int | None, int | None]


class CostModel:
    """Sum of ``coef * c[a] * c[b]`` terms; ``None`` group slots mean the constant 1."""

    def __init__(self, dim: int, terms: list[Term]) -> None:
        self.dim = dim
        one = dim
        self._coef = torch.tensor([t[0] for t in terms], dtype=torch.float64)
        self._a = torch.tensor([one if t[1] is None else t[1] for t in terms], dtype=torch.long)
        self._b = torch.tensor([one if t[2] is None else t[2] for t in terms], dtype=torch.long)

    def __call__(self, channels: Tensor) -> Tensor:
        """Cost of each row of an ``(n, dim)`` tensor of channel counts, as float64 ``(n,)``."""
        c = channels.to(torch.float64)
        ext = torch.cat([c, torch.ones(c.shape[0], 1, dtype=torch.float64)], dim=1)
        return (ext[:, self._a] * ext[:, self._b] * self._coef).sum(dim=1)


def trace_costs(
    forward: Callable[[Subnet], None], dim: int, full_channels: tuple[int, ...]
) -> tuple[CostModel, CostModel]:
    """Run ``forward`` once at full width, recording each slimmable layer; return (MACs, params).

    ``forward(subnet)`` must run the model on a representative input with that subnet.
    """
    macs: list[Term] = []
    params: list[Term] = []
    seen: set[int] = set()

    def fixed(group: int | None, n: int) -> tuple[float, int | None]:
        return (1.0, group) if group is not None else (float(n), None)

    def record(layer: nn.Module, x: Tensor, y: Tensor) -> None:
        first_use = id(layer) not in seen
        seen.add(id(layer))
        if isinstance(layer, SlimConv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            hw = y.shape[2] * y.shape[3]
            fo, go = fixed(layer.out_group, layer.out_channels)
            if layer.depthwise:
                macs.append((fo * k * hw, go, None))
                w_terms = [(fo * k, go, None)]
            else:
                fi, gi = fixed(layer.in_group, layer.in_channels)
                macs.append((fo * fi * k * hw, go, gi))
                w_terms = [(fo * fi * k, go, gi)]
            if layer.bias is not None:
                w_terms.append((fo, go, None))
        elif isinstance(layer, SlimLinear):
            fo, go = fixed(layer.out_group, layer.out_features)
            fi, gi = fixed(layer.in_group, layer.in_features)
            rows = y.numel() // (y.shape[0] * y.shape[-1])  # per image
            macs.append((fo * fi * rows, go, gi))
            w_terms = [(fo * fi, go, gi)] + ([(fo, go, None)] if layer.bias is not None else [])
        elif isinstance(layer, SlimBatchNorm2d):
            f, g = fixed(layer.in_group, layer.num_features)
            w_terms = [(2.0 * f, g, None)]
        else:  # pragma: no cover - only slimmable layers call the hook
            return
        if first_use:
            params.extend(w_terms)

    with torch.no_grad():
        forward(Subnet(full_channels, None, record))
    return CostModel(dim, macs), CostModel(dim, params)
