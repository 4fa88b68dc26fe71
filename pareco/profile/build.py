"""Profiling a network into a :class:`~pareco.profile.table.LatencyTable`.

    table = profile_net(net, ort_runners(threads=1), threads=1)

One interleaved measurement (:func:`pareco.profile.timing.measure`) covers, together:
every grid cell of every distinct layer, ``anchors`` whole dense subnets at uniform widths from
the smallest to the full one and ``random_anchors`` random ones, and ``check_cells`` random
off-grid cells. The anchors fit the
cost model's ``scale`` and ``overhead_ms`` by least squares (measured = scale x layer sum +
overhead): the overhead covers what no layer table holds (the runtime's per-call cost, residual
additions, pooling, layout reorders), the scale corrects what isolated layers systematically
miss in context. The off-grid cells measure the interpolation error, stored in the table.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable

import numpy as np
import onnx
import torch

from pareco.models.base import SlimmableNet
from pareco.profile.graphs import layer_graph
from pareco.profile.layers import trace_layers
from pareco.profile.table import (LatencyTable, LayerTable, channel_grid, layer_axes,
                                  reachable_channels)
from pareco.profile.timing import Clock, RunnerFactory, measure, runtime_info
from pareco.profile.model import LatencyModel
from pareco.profile.subnets import SubnetExporter, export_subnets
from pareco.width import WidthSpace


def _layer_tables(net: SlimmableNet, max_points: int, block: int) -> list[LayerTable]:
    space = net.width_space
    grids = {g: channel_grid(space, g, max_points, block) for g in range(space.dim)}
    return [LayerTable(spec, count, layer_axes(spec), [grids[a] for a in layer_axes(spec)])
            for spec, count in trace_layers(net)]


def _off_grid_cells(tables: list[LayerTable], net: SlimmableNet, n: int,
                    seed: int) -> list[tuple[int, tuple[int, ...]]]:
    """Up to ``n`` (layer index, cell) pairs of reachable channel counts not on the grid."""
    rng = np.random.default_rng(seed + 1)
    space = net.width_space
    options = []
    for i, t in enumerate(tables):
        if not t.axes:
            continue
        reach = [reachable_channels(space, a) for a in t.axes]
        off = [[c for c in r if c not in g] for r, g in zip(reach, t.grids)]
        if any(off):
            options.append((i, reach, off))
    cells: set[tuple[int, tuple[int, ...]]] = set()
    for _ in range(50 * n):
        if len(cells) >= n or not options:
            break
        i, reach, off = options[int(rng.integers(len(options)))]
        axis = int(rng.choice([k for k, o in enumerate(off) if o]))
        cell = [int(rng.choice(r)) for r in reach]
        cell[axis] = int(rng.choice(off[axis]))
        cells.add((i, tuple(cell)))
    return sorted(cells)


def profile_net(net: SlimmableNet, factory: RunnerFactory, *, threads: int, max_points: int = 24,
                block: int = 8, anchors: int = 5, random_anchors: int = 3,
                check_cells: int = 20, rounds: int = 7, calls: int = 20,
                quantile: float = 0.2, seed: int = 0, clock: Clock | None = None,
                exporter: SubnetExporter = export_subnets,
                graph: Callable[..., onnx.ModelProto] = layer_graph) -> LatencyTable:
    """Measure ``net``'s latency table (see the module doc); ``threads`` is recorded as
    metadata and must be what ``factory`` runs with. ``block``: the runtime's channel block
    (:func:`~pareco.profile.table.channel_grid`). Calibration subnets: ``anchors`` >= 2
    uniform widths plus ``random_anchors`` random configurations (seeded by ``seed``)."""
    if anchors < 2 or random_anchors < 0:
        raise ValueError(f"anchors must be >= 2 and random_anchors >= 0 (scale and overhead are "
                         f"fitted), got {anchors} and {random_anchors}")
    tables = _layer_tables(net, max_points, block)
    models: dict[str, onnx.ModelProto] = {}
    for i, t in enumerate(tables):
        for cell in t.cells():
            models[f"L{i}:{cell}"] = graph(t.spec, *t.channels_at(cell), seed=seed)
    checks = _off_grid_cells(tables, net, check_cells, seed)
    for i, cell in checks:
        models[f"C{i}:{cell}"] = graph(tables[i].spec, *tables[i].channels_at(cell), seed=seed)
    space = net.width_space
    widths = np.linspace(space.lower, 1.0, anchors)
    alphas = [space.uniform(float(w)) for w in widths]
    gen = torch.Generator().manual_seed(seed + 2)
    alphas += [space.validate(r) for r in space.sample(random_anchors, generator=gen)]
    for j, m in enumerate(exporter(net, alphas)):
        models[f"A{j}"] = m
    kwargs = {} if clock is None else {"clock": clock}
    sec = measure(models, factory, rounds=rounds, calls=calls, quantile=quantile, seed=seed,
                  **kwargs)
    ms = {k: 1e3 * v for k, v in sec.items()}
    for i, t in enumerate(tables):
        shape = [len(g) for g in t.grids]
        t.ms = np.asarray([ms[f"L{i}:{c}"] for c in t.cells()]).reshape(shape).tolist()
    table = LatencyTable({"name": net.arch_name, "kwargs": dict(net.build_kwargs)},
                         space.to_dict(), {}, tables, overhead_ms=0.0, block=block)
    _calibrate(table, alphas, [ms[f"A{j}"] for j in range(len(alphas))], space)
    table.interpolation_check = _check(table, checks, ms, space.dim)
    table.measurement = {**runtime_info(threads), "rounds": rounds, "calls": calls,
                         "quantile": quantile, "max_points": max_points, "block": block,
                         "anchors": anchors, "random_anchors": random_anchors, "seed": seed,
                         "models": len(models),
                         "created": _dt.datetime.now(_dt.timezone.utc).isoformat(
                             timespec="seconds")}
    return table


def _calibrate(table: LatencyTable, alphas: list[tuple[float, ...]], measured: list[float],
               space: WidthSpace) -> None:
    """Fit ``scale`` and ``overhead_ms`` to the anchors' measured milliseconds."""
    channels = torch.tensor([space.channels(a) for a in alphas], dtype=torch.float64)
    sums = LatencyModel(table).layers_ms(channels).numpy()
    scale, overhead = np.polyfit(sums, np.asarray(measured), 1)
    table.scale, table.overhead_ms = float(scale), float(overhead)
    table.calibration = [{"alpha": list(a), "channels": [int(c) for c in ch],
                          "measured_ms": m, "layers_ms": float(s)}
                         for a, ch, m, s in zip(alphas, channels.tolist(), measured, sums)]


def _check(table: LatencyTable, checks: list[tuple[int, tuple[int, ...]]], ms: dict[str, float],
           dim: int) -> dict:
    """Relative error of the interpolated table against the measured off-grid cells."""
    errors = []
    for i, cell in checks:
        t = table.layers[i]
        row = torch.zeros(1, dim, dtype=torch.float64)
        for axis, c in zip(t.axes, cell):
            row[0, axis] = c
        predicted = float(t.lookup(row, table.block)[0])
        measured = ms[f"C{i}:{cell}"]
        errors.append(abs(predicted - measured) / measured)
    if not errors:
        return {"cells": 0}
    return {"cells": len(errors), "mean_rel_err": float(np.mean(errors)),
            "max_rel_err": float(np.max(errors))}
