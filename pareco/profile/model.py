"""The additive latency cost model: a configuration's latency predicted from a latency table.

    model = LatencyModel.for_net(net, load_table("zoo/resnet20-fashionmnist/latency-ort1.json"))
    model.predict_ms(net.width_space.channels_batch(alphas))     # (n,) milliseconds
    smooth, exact = latency_functions(net, table)                 # normalized: full model = 1

``predict = scale * sum over layers of count * T_layer(c_in, c_out) + overhead_ms``, where
``T_layer`` interpolates the table (:meth:`~pareco.profile.table.LayerTable.lookup`) and
``scale`` / ``overhead_ms`` were fitted to whole-network measurements by the profiler.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pareco.models.base import SlimmableNet
from pareco.profile.layers import trace_layers
from pareco.profile.table import LatencyTable, TableError

CostFn = Callable[[Tensor], Tensor]
"""``alpha (..., d) float64 -> normalized cost (...)``, as :data:`pareco.search.FlopsFn` (not
imported: the search pulls in BoTorch, which profiling does not need)."""


class LatencyModel:
    """Predicts milliseconds per batch-1 call from group channel counts (see the module doc)."""

    def __init__(self, table: LatencyTable) -> None:
        self.table = table

    @classmethod
    def for_net(cls, net: SlimmableNet, table: LatencyTable) -> "LatencyModel":
        """The model of ``table`` after checking that it describes ``net``: the same channel
        groups and the same layers (the divisor may differ: the grid is interpolated).
        Raises :class:`~pareco.profile.table.TableError` saying what differs."""
        mine = net.width_space.to_dict()
        theirs = table.width_space
        if theirs.get("groups") != mine["groups"] or theirs.get("lower") != mine["lower"]:
            raise TableError(f"the latency table was profiled for {table.arch.get('name')!r} "
                             f"with width space {theirs.get('groups')} (lower "
                             f"{theirs.get('lower')}), not this network's {mine['groups']} "
                             f"(lower {mine['lower']}); profile it with python -m pareco.profile")
        layers = trace_layers(net)
        listed = [(t.spec, t.count) for t in table.layers]
        if listed != layers:
            raise TableError(f"the latency table lists {len(listed)} distinct layers that do not "
                             f"match this network's {len(layers)} (other input size or "
                             f"architecture?); profile it with python -m pareco.profile")
        return cls(table)

    def layers_ms(self, group_channels: Tensor, relaxed: bool = False) -> Tensor:
        """Sum over layers of ``count * T_layer`` for ``(n, dim)`` channels, float64 ``(n,)``.

        ``relaxed``: the channels are unrounded reals, interpolate over the whole grid
        (continuous); otherwise they are integral and the table's ``block`` classes apply."""
        c = group_channels.to(torch.float64)
        block = 1 if relaxed else self.table.block
        total = torch.zeros(c.shape[0], dtype=torch.float64)
        for layer in self.table.layers:
            total = total + layer.count * layer.lookup(c, block)
        return total

    def predict_ms(self, group_channels: Tensor, relaxed: bool = False) -> Tensor:
        """Predicted milliseconds of each row of ``(n, dim)`` group channels, float64 ``(n,)``
        (``relaxed``: see :meth:`layers_ms`)."""
        return self.table.scale * self.layers_ms(group_channels, relaxed) + self.table.overhead_ms


def latency_functions(net: SlimmableNet, table: LatencyTable) -> tuple[CostFn, CostFn]:
    """``(smooth, exact)`` normalized-latency functions of ``net`` (full model = 1), the drop-in
    replacement of :func:`pareco.search.flops_functions` for a latency-cost search.

    ``smooth(alpha)`` predicts at the unrounded channels ``alpha * C_g`` (piecewise linear,
    differentiable almost everywhere); ``exact(alpha)`` at the channels the network runs.
    """
    model = LatencyModel.for_net(net, table)
    space = net.width_space
    full_channels = torch.tensor(space.full_channels, dtype=torch.float64)
    full_ms = float(model.predict_ms(full_channels.reshape(1, -1))[0])
    if not full_ms > 0:
        raise TableError(f"the latency table predicts {full_ms} ms for the full network")

    def smooth(alpha: Tensor) -> Tensor:
        if alpha.shape[-1] != space.dim:
            raise ValueError(f"alpha must end in {space.dim} multipliers, got shape "
                             f"{tuple(alpha.shape)}")
        c = alpha.to(torch.float64).reshape(-1, space.dim) * full_channels.to(alpha.device)
        return (model.predict_ms(c, relaxed=True) / full_ms).reshape(alpha.shape[:-1])

    def exact(alpha: Tensor) -> Tensor:
        return model.predict_ms(space.channels_batch(alpha)) / full_ms

    return smooth, exact
