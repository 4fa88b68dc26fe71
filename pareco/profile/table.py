"""The per-layer latency table: measured milliseconds of every distinct layer over a channel grid.

For each distinct :class:`~pareco.profile.layers.LayerSpec` the table holds its latency at every
point of a grid over the channel groups it depends on (none, one, or two: input and output
group). :func:`channel_grid` gives a group's grid: the channel counts the width space can reach,
coarsened to multiples of a power of two so that at most ``max_points`` remain (the smallest and
the largest reachable counts always kept). Between grid points latency is interpolated linearly
per axis (:meth:`LayerTable.lookup`), outside it is clamped.

JSON schema (``format`` / ``version`` checked on load)::

    {"format": "pareco-latency-table", "version": 1,
     "arch": {"name": "resnet20", "kwargs": {...}}, "width_space": {...},
     "measurement": {"runtime": "onnxruntime", "runtime_version": ..., "threads": 1, "batch": 1,
                     "host": ..., "cpu": ..., "rounds": 7, "calls": 20, "quantile": 0.2, ...},
     "layers": [{"spec": {...}, "count": 3, "axes": [0, 1], "grids": [[5, 6, ...], [...]],
                 "ms": [[...], ...]}, ...],
     "overhead_ms": 0.05, "scale": 1.0,
     "calibration": [{"alpha": [...], "measured_ms": ..., "layers_ms": ...}, ...],
     "interpolation_check": {"cells": 20, "mean_rel_err": ..., "max_rel_err": ...}}
"""

from __future__ import annotations

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


def channel_grid(space: WidthSpace, group: int, max_points: int) -> list[int]:
    """The measured channel counts of ``group``: its reachable counts that are multiples of the
    smallest power of two leaving at most ``max_points`` of them, plus both ends."""
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    counts = reachable_channels(space, group)
    step = 1
    while True:
        grid = sorted({counts[0], counts[-1], *(c for c in counts if c % step == 0)})
        if len(grid) <= max_points or step > counts[-1]:
            return grid
        step *= 2


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

    def cells(self) -> list[tuple[int, ...]]:
        """Every grid point as a tuple of channel counts, one per axis, row-major."""
        mesh = np.meshgrid(*[np.asarray(g) for g in self.grids], indexing="ij")
        return [tuple(int(v) for v in p) for p in zip(*(m.ravel() for m in mesh))] if self.axes \
            else [()]

    def channels_at(self, cell: tuple[int, ...]) -> tuple[int, int]:
        """``(c_in, c_out)`` of the layer at grid point ``cell``."""
        value = dict(zip(self.axes, cell))
        s = self.spec
        c_in = s.in_channels if s.in_group is None else value[s.in_group]
        c_out = s.out_channels if s.out_group is None else value[s.out_group]
        return c_in, c_out

    def lookup(self, group_channels: Tensor) -> Tensor:
        """Milliseconds of ONE occurrence at each row of ``(n, dim)`` group channels (float64,
        differentiable in the channel values: piecewise multilinear)."""
        table = torch.as_tensor(np.asarray(self.ms, dtype=np.float64))
        n = group_channels.shape[0]
        if not self.axes:
            return table.reshape(()).expand(n)
        lo, hi, frac = [], [], []
        for axis, grid in zip(self.axes, self.grids):
            g = torch.tensor(grid, dtype=torch.float64)
            x = group_channels[:, axis].to(torch.float64)
            top = len(grid) - 1
            i = (torch.searchsorted(g, x.detach().contiguous(), right=True) - 1).clamp(0, max(top - 1, 0))
            j = (i + 1).clamp(max=top)
            span = torch.where(j > i, g[j] - g[i], torch.ones_like(x))
            lo.append(i)
            hi.append(j)
            frac.append(torch.where(j > i, ((x - g[i]) / span).clamp(0.0, 1.0), torch.zeros_like(x)))
        if len(lo) == 1:
            return table[lo[0]] * (1 - frac[0]) + table[hi[0]] * frac[0]
        (i0, j0), (i1, j1), (t, u) = lo, hi, frac
        return ((1 - t) * (1 - u) * table[i0, j0] + t * (1 - u) * table[i1, j0]
                + (1 - t) * u * table[i0, j1] + t * u * table[i1, j1])

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "count": self.count, "axes": self.axes,
                "grids": self.grids, "ms": self.ms}


def layer_axes(spec: LayerSpec) -> list[int]:
    """The distinct channel groups ``spec``'s cost depends on, input first."""
    axes = [g for g in (spec.in_group, spec.out_group) if g is not None]
    return list(dict.fromkeys(axes))


@dataclass
class LatencyTable:
    """A whole profiled network: its layer tables and the calibrated ``scale`` / ``overhead_ms``
    (predicted latency = ``scale`` x sum of layer latencies + ``overhead_ms``)."""

    arch: dict
    width_space: dict
    measurement: dict
    layers: list[LayerTable]
    overhead_ms: float
    scale: float = 1.0
    calibration: list[dict] = field(default_factory=list)
    interpolation_check: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "arch": self.arch,
                "width_space": self.width_space, "measurement": self.measurement,
                "layers": [t.to_dict() for t in self.layers], "overhead_ms": self.overhead_ms,
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
        return LatencyTable(doc["arch"], doc["width_space"], doc["measurement"], layers,
                            float(doc["overhead_ms"]), float(doc["scale"]),
                            list(doc.get("calibration", [])), dict(doc.get("interpolation_check", {})))
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, TableError):
            raise TableError(f"{path}: {e}") from None
        raise TableError(f"{path}: malformed latency table ({type(e).__name__}: {e})") from None
