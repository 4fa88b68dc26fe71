"""The per-layer latency table: measured milliseconds of every distinct layer over a channel grid.

For each distinct :class:`~pareco.profile.layers.LayerSpec` the table holds its latency at every
point of a grid over the channel groups it depends on (none, one, or two: input and output
group). :func:`channel_grid` gives a group's grid: the channel counts the width space can reach
that are multiples of the runtime's channel ``block`` and the others, each class coarsened to
multiples of a power of two so that at most ``max_points`` remain (ends kept). Between grid
points latency is interpolated linearly per axis within the count's class (multiple of the
block or not; :meth:`LayerTable.lookup`), outside it is clamped.

JSON schema (``format`` / ``version`` checked on load)::

    {"format": "pareco-latency-table", "version": 1,
     "arch": {"name": "resnet20", "kwargs": {...}}, "width_space": {...},
     "measurement": {"runtime": "onnxruntime", "runtime_version": ..., "threads": 1, "batch": 1,
                     "host": ..., "cpu": ..., "rounds": 7, "calls": 20, "quantile": 0.2, ...},
     "layers": [{"spec": {...}, "count": 3, "axes": [0, 1], "grids": [[5, 6, ...], [...]],
                 "ms": [[...], ...]}, ...],
     "block": 8, "overhead_ms": 0.05, "scale": 1.0,
     "calibration": [{"alpha": [...], "measured_ms": ..., "layers_ms": ...}, ...],
     "interpolation_check": {"cells": 20, "mean_rel_err": ..., "max_rel_err": ...}}
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pareco.atomic import atomic_write_bytes
from pareco.profile.layers import LayerSpec
from pareco.width import WidthSpace

FORMAT = "pareco-latency-table"
VERSION = 1


class TableError(ValueError):
    """A latency table that cannot be read, or does not fit the network it is used for."""


def reachable_channels(space: WidthSpace, group: int) -> list[int]:
    """Every channel count group ``group`` takes for some ``alpha`` in ``[lower, 1]``, ascending."""
    full = space.full_channels[group]
    sweep = torch.linspace(space.lower, 1.0, 64 * full + 1, dtype=torch.float64)
    alphas = torch.full((len(sweep), space.dim), 1.0, dtype=torch.float64)
    alphas[:, group] = sweep
    return sorted({int(c) for c in space.channels_batch(alphas)[:, group].tolist()})


def _coarsen(counts: list[int], max_points: int) -> list[int]:
    """``counts`` that are multiples of the smallest power of two leaving at most
    ``max_points`` of them, plus both ends (ascending)."""
    if not counts:
        return []
    step = 1
    while True:
        grid = sorted({counts[0], counts[-1], *(c for c in counts if c % step == 0)})
        if len(grid) <= max_points or step > counts[-1]:
            return grid
        step *= 2


def channel_grid(space: WidthSpace, group: int, max_points: int, block: int = 1) -> list[int]:
    """The measured channel counts of ``group`` (ascending).

    ``block`` > 1 (a runtime's channel block, 8 for ONNX Runtime's AVX2 NCHWc kernels): the
    reachable multiples of ``block`` -- counts that run the blocked kernels, typically much
    faster than their neighbours -- and the other reachable counts, each class coarsened to at
    most ``max_points`` (:func:`_coarsen`; every multiple of ``block`` is kept while they are
    that few). ``block`` == 1: all reachable counts coarsened.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    counts = reachable_channels(space, group)
    if block == 1:
        return _coarsen(counts, max_points)
    aligned = _coarsen([c for c in counts if c % block == 0], max_points)
    other = _coarsen([c for c in counts if c % block], max_points)
    return sorted(set(aligned) | set(other))


@functools.lru_cache(maxsize=4096)
def _points(grid: tuple[int, ...], points: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``points`` as a float64 tensor and their indices in ``grid`` (cached: lookups are hot)."""
    return (torch.tensor(points, dtype=torch.float64),
            torch.tensor([grid.index(c) for c in points], dtype=torch.long))


def _axis(x: Tensor, grid: list[int], points: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Interpolation of ``x`` between neighbours among ``points`` (a non-empty subset of
    ``grid``): their indices in ``grid`` (low, high) and the weight of the high one."""
    g, pos = _points(tuple(grid), tuple(points))
    top = len(points) - 1
    i = (torch.searchsorted(g, x.detach().contiguous(), right=True) - 1).clamp(0, max(top - 1, 0))
    j = (i + 1).clamp(max=top)
    span = torch.where(j > i, g[j] - g[i], torch.ones_like(x))
    t = torch.where(j > i, ((x - g[i]) / span).clamp(0.0, 1.0), torch.zeros_like(x))
    return pos[i], pos[j], t


@dataclass
class LayerTable:
    """One distinct layer: ``count`` occurrences, latency ``ms`` over ``grids`` of ``axes``.

    ``axes``: the distinct channel groups the layer depends on (``[]``, ``[g]`` or
    ``[g_in, g_out]``); ``ms`` is a nested list of shape ``[len(g) for g in grids]``.
    """

    spec: LayerSpec
    count: int
    axes: list[int]
    grids: list[list[int]]
    ms: Any = field(default=None)
    _tensor: tuple[int, Tensor] | None = field(default=None, repr=False, compare=False)

    def cells(self) -> list[tuple[int, ...]]:
        """Every grid point as a tuple of channel counts, one per axis, row-major."""
        if not self.axes:
            return [()]
        mesh = np.meshgrid(*[np.asarray(g) for g in self.grids], indexing="ij")
        return [tuple(int(v) for v in p) for p in zip(*(m.ravel() for m in mesh))]

    def table(self) -> Tensor:
        """``ms`` as a float64 tensor (cached until ``ms`` is replaced)."""
        if self._tensor is None or self._tensor[0] != id(self.ms):
            self._tensor = (id(self.ms), torch.as_tensor(np.asarray(self.ms, dtype=np.float64)))
        return self._tensor[1]

    def channels_at(self, cell: tuple[int, ...]) -> tuple[int, int]:
        """``(c_in, c_out)`` of the layer at grid point ``cell``."""
        value = dict(zip(self.axes, cell))
        s = self.spec
        c_in = s.in_channels if s.in_group is None else value[s.in_group]
        c_out = s.out_channels if s.out_group is None else value[s.out_group]
        return c_in, c_out

    def lookup(self, group_channels: Tensor, block: int = 1) -> Tensor:
        """Milliseconds of ONE occurrence at each row of ``(n, dim)`` group channels, float64.

        ``block`` == 1: linear interpolation per axis over the whole grid (continuous and
        differentiable almost everywhere in the channel values: for relaxed, unrounded
        channels). ``block`` > 1 (integral channels): a multiple of ``block`` interpolates
        among the grid's multiples of ``block`` only, any other count among the other points
        only, so a padded count is never averaged with a blocked-kernel neighbour.
        """
        table = self.table()
        n = group_channels.shape[0]
        if not self.axes:
            return table.reshape(()).expand(n)
        lo, hi, frac = [], [], []
        for axis, grid in zip(self.axes, self.grids):
            x = group_channels[:, axis].to(torch.float64)
            i, j, t = _axis(x, grid, grid)
            aligned = [c for c in grid if c % block == 0] if block > 1 else []
            other = [c for c in grid if c % block] if block > 1 else []
            if aligned and other:
                is_aligned = torch.remainder(x.detach().round(), block) == 0
                ia, ja, ta = _axis(x, grid, aligned)
                io, jo, to = _axis(x, grid, other)
                i, j, t = (torch.where(is_aligned, ia, io), torch.where(is_aligned, ja, jo),
                           torch.where(is_aligned, ta, to))
            lo.append(i)
            hi.append(j)
            frac.append(t)
        if len(lo) == 1:
            return table[lo[0]] * (1 - frac[0]) + table[hi[0]] * frac[0]
        (lo0, lo1), (hi0, hi1), (t, u) = lo, hi, frac  # axis 0 (input), axis 1 (output)
        return ((1 - t) * (1 - u) * table[lo0, lo1] + t * (1 - u) * table[hi0, lo1]
                + (1 - t) * u * table[lo0, hi1] + t * u * table[hi0, hi1])

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "count": self.count, "axes": self.axes,
                "grids": self.grids, "ms": self.ms}


def layer_axes(spec: LayerSpec) -> list[int]:
    """The distinct channel groups ``spec``'s cost depends on, input first."""
    axes = [g for g in (spec.in_group, spec.out_group) if g is not None]
    return list(dict.fromkeys(axes))


@dataclass
class LatencyTable:
    """A whole profiled network: its layer tables, the runtime's channel ``block`` the grid and
    lookups respect, and the calibrated ``scale`` / ``overhead_ms`` (predicted latency =
    ``scale`` x sum of layer latencies + ``overhead_ms``)."""

    arch: dict
    width_space: dict
    measurement: dict
    layers: list[LayerTable]
    overhead_ms: float
    scale: float = 1.0
    block: int = 1
    calibration: list[dict] = field(default_factory=list)
    interpolation_check: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "arch": self.arch,
                "width_space": self.width_space, "measurement": self.measurement,
                "layers": [t.to_dict() for t in self.layers], "block": self.block,
                "overhead_ms": self.overhead_ms,
                "scale": self.scale, "calibration": self.calibration,
                "interpolation_check": self.interpolation_check}

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as JSON, atomically."""
        atomic_write_bytes(Path(path), (json.dumps(self.to_dict(), indent=1) + "\n").encode())


def load_table(path: str | os.PathLike) -> LatencyTable:
    """Read and validate a table written by :meth:`LatencyTable.save`; :class:`TableError`
    naming the problem otherwise."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TableError(f"cannot read latency table {path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TableError(f"{path} is not a latency table (format {FORMAT!r} expected)")
    if doc.get("version") != VERSION:
        raise TableError(f"{path}: latency table version {doc.get('version')!r}, this code "
                         f"reads version {VERSION}")
    try:
        layers = []
        for raw in doc["layers"]:
            t = LayerTable(LayerSpec.from_dict(raw["spec"]), int(raw["count"]),
                           [int(a) for a in raw["axes"]],
                           [[int(c) for c in g] for g in raw["grids"]], raw["ms"])
            shape = tuple(len(g) for g in t.grids)
            if np.asarray(t.ms, dtype=np.float64).shape != shape or t.axes != layer_axes(t.spec):
                raise TableError(f"layer {raw['spec']} has a table of the wrong shape")
            layers.append(t)
        block = int(doc["block"])
        if block < 1:
            raise TableError(f"block must be >= 1, got {block}")
        return LatencyTable(doc["arch"], doc["width_space"], doc["measurement"], layers,
                            float(doc["overhead_ms"]), float(doc["scale"]), block,
                            list(doc.get("calibration", [])),
                            dict(doc.get("interpolation_check", {})))
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, TableError):
            raise TableError(f"{path}: {e}") from None
        raise TableError(f"{path}: malformed latency table ({type(e).__name__}: {e})") from None
