"""Normalized FLOPs of a slimmable network as functions of the width multipliers ``alpha``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pareco.models.base import SlimmableNet

FlopsFn = Callable[[Tensor], Tensor]
"""``alpha (..., d) float64 -> normalized FLOPs (...)``; the full model costs 1."""


def flops_functions(net: SlimmableNet) -> tuple[FlopsFn, FlopsFn]:
    """``(smooth, exact)`` normalized-FLOPs functions of ``net`` (full model = 1).

    ``smooth(alpha)`` takes any ``(..., d)`` tensor and evaluates the MACs polynomial at the
    *unrounded* channels ``alpha * C_g``: a differentiable relaxation for gradient-based acquisition
    optimization. ``exact(alpha)`` takes ``(n, d)`` valid multipliers and rounds channels exactly as
    the network does (piecewise constant in ``alpha``): use it for anything reported or compared.
    The two agree wherever ``alpha * C_g`` is integral (e.g. ``alpha = 1``).
    """
    full_macs = float(net.macs())
    full_channels = torch.tensor(net.width_space.full_channels, dtype=torch.float64)
    model = net.macs_model
    dim = net.width_space.dim

    def smooth(alpha: Tensor) -> Tensor:
        if alpha.shape[-1] != dim:
            raise ValueError(f"alpha must end in {dim} multipliers, got shape {tuple(alpha.shape)}")
        channels = alpha.to(torch.float64).reshape(-1, dim) * full_channels.to(alpha.device)
        return (model(channels) / full_macs).reshape(alpha.shape[:-1])

    def exact(alpha: Tensor) -> Tensor:
        return net.macs_batch(alpha) / full_macs

    return smooth, exact
