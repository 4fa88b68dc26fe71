"""Latency tables (pareco.profile) with a fake clock and fake runners: deterministic, fast.

The fake runtime charges every layer graph a bilinear function of its (c_in, c_out) -- 1.5 x
dearer when a count is not a multiple of the channel block 8, as for padded blocked kernels --
plus a per-call cost, and every whole subnet the sum of its layers' functions plus a fixed
overhead. Block-aware bilinear interpolation reproduces such costs exactly, so the additive model
must predict every configuration exactly, on and off the measured grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pareco import models
from pareco.profile import (LatencyModel, TableError, channel_grid, latency_functions, load_table,
                            measure, profile_net, trace_layers)
from pareco.profile.__main__ import main as profile_main
from pareco.profile.graphs import layer_graph
from pareco.search import cost_functions

CALL_S = 2e-6     # every session call
NET_S = 30e-6     # a whole subnet's non-layer work (adds, pooling, ...)


def fake_layer_s(spec, c_in: int, c_out: int) -> float:
    """The fake runtime's seconds of one layer (without the per-call cost)."""
    hw = (spec.in_size // spec.stride) ** 2 if spec.kind == "conv" else 1
    padded = 1.5 if c_in % 8 or c_out % 8 else 1.0
    return 1e-11 * (padded * c_in * c_out * spec.kernel ** 2 * hw + 50 * c_out)


class FakeRuntime:
    """A fake clock advanced by fake runners; whole subnets carry their channels in doc_string."""

    def __init__(self, net) -> None:
        self.now = 0.0
        self.layers = trace_layers(net)
        self.calls = 0

    def clock(self) -> float:
        return self.now

    def seconds(self, model: onnx.ModelProto) -> float:
        if model.doc_string.startswith("subnet:"):
            ch = torch.tensor([json.loads(model.doc_string[7:])], dtype=torch.float64)
            total = NET_S
            for spec, count in self.layers:
                c_in, c_out = (int(v[0]) for v in spec.channels(ch))
                total += count * fake_layer_s(spec, c_in, c_out)
            return total + CALL_S
        spec = model.graph.doc_string_spec  # set by fake_graph
        return fake_layer_s(spec, *model.graph.doc_string_io) + CALL_S

    def factory(self, model: onnx.ModelProto):
        cost = self.seconds(model)

        def run() -> None:
            self.calls += 1
            self.now += cost
        return run


class _Graph:
    """A stand-in for an ONNX graph that remembers what it models."""

    def __init__(self, spec, c_in: int, c_out: int) -> None:
        self.doc_string_spec, self.doc_string_io = spec, (c_in, c_out)


class _Model:
    def __init__(self, graph=None, doc: str = "") -> None:
        self.graph, self.doc_string = graph, doc


def fake_graph(spec, c_in: int, c_out: int, seed: int = 0):
    return _Model(_Graph(spec, c_in, c_out))


def fake_exporter(net, alphas):
    return [_Model(doc="subnet:" + json.dumps(list(net.width_space.channels(a)))) for a in alphas]


def true_ms(net, runtime: FakeRuntime, alpha) -> float:
    ch = json.dumps(list(net.width_space.channels(alpha)))
    return 1e3 * runtime.seconds(_Model(doc="subnet:" + ch))  # as measured: one call


@pytest.fixture(scope="module")
def net():
    return models.build("resnet20", num_classes=10, in_channels=1, image_size=16)


def fake_table(net, max_points: int = 4, check_cells: int = 6, block: int = 8):
    runtime = FakeRuntime(net)
    table = profile_net(net, runtime.factory, threads=1, max_points=max_points, block=block,
                        anchors=3, random_anchors=2, check_cells=check_cells, rounds=3, calls=2,
                        clock=runtime.clock, exporter=fake_exporter, graph=fake_graph)
    return table, runtime


def test_measure_interleaves_and_takes_the_low_quantile() -> None:
    now = [0.0]
    order: list[str] = []
    slow = {"round": 0}

    def factory(model):
        def run() -> None:
            order.append(model)
            now[0] += {"a": 1.0, "b": 2.0}[model] * (3.0 if slow["round"] == 1 else 1.0)
        return run

    def clock() -> float:
        if len(order) and len(order) % 6 == 0:  # every model visited: the round ends
            slow["round"] = len(order) // 6
        return now[0]

    sec = measure({"a": "a", "b": "b"}, factory, rounds=3, calls=2, quantile=0.0, clock=clock)
    assert sec == {"a": 1.0, "b": 2.0}  # the slowed round does not count at quantile 0
    assert len(order) == 3 * 2 * (1 + 2)  # per round and model: 1 warm-up + 2 timed calls
    again: list[str] = []
    measure({"a": "a", "b": "b"}, lambda m: (lambda: again.append(m)), rounds=3, calls=2,
            clock=lambda: 0.0)
    assert again == order  # the seeded order is reproducible
    with pytest.raises(ValueError, match="quantile"):
        measure({"a": "a"}, factory, quantile=1.5)


def test_channel_grid_keeps_ends_and_aligned_multiples() -> None:
    space = models.build("resnet20", num_classes=10, in_channels=1, image_size=16).width_space
    assert channel_grid(space, 5, 12) == list(range(20, 65, 4))  # 45 counts -> multiples of 4
    assert channel_grid(space, 0, 12) == list(range(5, 17))
    assert channel_grid(space, 5, 3) == [20, 32, 64]
    assert channel_grid(space, 5, 2) == [20, 64]  # the ends even when no multiple fits
    d8 = models.build("resnet20", num_classes=10, in_channels=1, image_size=16, divisor=8)
    assert channel_grid(d8.width_space, 5, 12) == [24, 32, 40, 48, 56, 64]
    with pytest.raises(ValueError, match="max_points"):
        channel_grid(space, 0, 1)
    # block 8: every multiple of 8, the other counts coarsened among themselves
    assert channel_grid(space, 5, 12, block=8) == [20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60,
                                                   63, 64]


def test_table_predicts_every_configuration_exactly(net, tmp_path: Path) -> None:
    table, runtime = fake_table(net)
    assert table.scale == pytest.approx(1.0, abs=1e-9)
    n_layers = sum(t.count for t in table.layers)
    assert table.overhead_ms == pytest.approx(1e3 * (NET_S + CALL_S - n_layers * CALL_S))
    assert table.interpolation_check["cells"] == 6
    assert table.interpolation_check["max_rel_err"] < 0.02  # per-call cost aside, exact
    table.save(tmp_path / "t.json")
    model = LatencyModel.for_net(net, load_table(tmp_path / "t.json"))
    gen = torch.Generator().manual_seed(0)
    alphas = net.width_space.sample(20, generator=gen)
    predicted = model.predict_ms(net.width_space.channels_batch(alphas))
    for alpha, p in zip(alphas, predicted):
        assert float(p) == pytest.approx(true_ms(net, runtime, alpha), rel=1e-9)
    # without block classes, padded counts get averaged with blocked neighbours: inexact
    plain, _ = fake_table(net, block=1)
    assert plain.interpolation_check["max_rel_err"] > 0.05
    off = LatencyModel(plain).predict_ms(net.width_space.channels_batch(alphas))
    err = [abs(float(p) / true_ms(net, runtime, a) - 1) for a, p in zip(alphas, off)]
    assert max(err) > 0.01


def test_latency_functions_are_normalized_and_differentiable(net) -> None:
    table, _ = fake_table(net)
    smooth, exact = latency_functions(net, table)
    full = torch.ones(1, net.width_space.dim, dtype=torch.float64)
    assert float(exact(full)[0]) == pytest.approx(1.0)
    x = torch.full((2, net.width_space.dim), 0.6, dtype=torch.float64, requires_grad=True)
    y = smooth(x)
    y.sum().backward()
    assert (x.grad > 0).all()  # wider is slower in every group
    lo = torch.tensor([net.width_space.smallest], dtype=torch.float64)
    assert 0 < float(exact(lo)[0]) < 1


def test_table_of_another_network_is_rejected(net, tmp_path: Path) -> None:
    table, _ = fake_table(net)
    table.save(tmp_path / "t.json")
    other = models.build("resnet20", num_classes=10, in_channels=1, image_size=28)
    with pytest.raises(TableError, match="do not match"):
        cost_functions(other, "latency", str(tmp_path / "t.json"))
    wider = models.build("resnet20_2x", num_classes=10, in_channels=1, image_size=16)
    with pytest.raises(TableError, match="width space"):
        cost_functions(wider, "latency", str(tmp_path / "t.json"))
    d8 = models.build("resnet20", num_classes=10, in_channels=1, image_size=16, divisor=8)
    smooth, exact = cost_functions(d8, "latency", str(tmp_path / "t.json"))  # grid interpolated
    assert float(exact(torch.ones(1, 6, dtype=torch.float64))[0]) == pytest.approx(1.0)


def test_load_table_errors(tmp_path: Path, net) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TableError, match="cannot read"):
        load_table(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(TableError, match="not a latency table"):
        load_table(bad)
    table, _ = fake_table(net)
    doc = table.to_dict()
    bad.write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(TableError, match="version 99"):
        load_table(bad)
    doc["layers"][1]["ms"] = [[1.0]]
    bad.write_text(json.dumps(doc))
    with pytest.raises(TableError, match="wrong shape"):
        load_table(bad)
    with pytest.raises(ValueError, match="unknown cost"):
        cost_functions(net, "joules")
    with pytest.raises(ValueError, match="needs a latency table"):
        cost_functions(net, "latency")


def test_layer_graphs_are_valid_onnx(net) -> None:
    specs = [s for s, _ in trace_layers(net)]
    assert {s.kind for s in specs} == {"conv", "linear"}
    for spec in specs:
        model = layer_graph(spec, 5, 7) if spec.in_group is not None else layer_graph(spec, 1, 7)
        out = model.graph.output[0].type.tensor_type.shape
        assert out.dim[1].dim_value == 7
    with pytest.raises(ValueError, match=">= 1"):
        layer_graph(specs[0], 0, 4)


@pytest.mark.parametrize("argv, message", [
    (["--out", "x.json"], "one of the arguments --weights --arch is required"),
    (["--arch", "vgg", "--out", "x.json"], "unknown model 'vgg'"),
    (["--arch", "resnet20", "--out", "x.json", "--quantile", "2"], "expected a number in [0, 1]"),
    (["--weights", "nope.safetensors", "--out", "x.json"], "--weights nope.safetensors"),
    (["--weights", "w.safetensors", "--divisor", "8", "--out", "x.json"], "only for --arch"),
])
def test_profile_cli_bad_input(argv, message, capsys: pytest.CaptureFixture) -> None:
    assert profile_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_profile_cli_real_runtime(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The real path once (ONNX Runtime, exporter), tiny settings: the table loads and fits."""
    out = tmp_path / "t.json"
    assert profile_main(["--arch", "resnet20", "--in-channels", "1", "--image-size", "8",
                         "--num-classes", "4", "--divisor", "8", "--out", str(out),
                         "--rounds", "1", "--calls", "1", "--anchors", "2", "--random-anchors", "0",
                         "--check-cells", "0"]) == 0
    assert "wrote" in capsys.readouterr().out
    table = load_table(out)
    assert table.measurement["runtime"] == "onnxruntime" and table.measurement["threads"] == 1
    assert table.arch == {"name": "resnet20", "kwargs": {"num_classes": 4, "in_channels": 1,
                                                         "image_size": 8, "divisor": 8}}
    assert table.block == 8 and len(table.calibration) == 2
    assert all(np.isfinite(np.asarray(t.ms)).all() and np.min(t.ms) > 0 for t in table.layers)
    net = models.build("resnet20", num_classes=4, in_channels=1, image_size=8, divisor=8)
    model = LatencyModel.for_net(net, table)
    for c in table.calibration:  # two anchors: the fitted line passes through both
        ch = torch.tensor([c["channels"]], dtype=torch.float64)
        assert float(model.predict_ms(ch)[0]) == pytest.approx(c["measured_ms"], rel=1e-6)


def test_mobilenet_layers_depthwise_and_se() -> None:
    """Depthwise convs depend on one group; SE convs run on 1x1 maps (traced at batch 2)."""
    net = models.build("mobilenet_v3_large", num_classes=10, in_channels=3, image_size=32)
    layers = trace_layers(net)
    assert sum(count for _, count in layers) == len(layers) > 50
    depthwise = [s for s, _ in layers if s.depthwise]
    assert depthwise and all(s.in_group == s.out_group is not None for s in depthwise)
    assert any(s.in_size == 1 and s.kind == "conv" for s, _ in layers)  # squeeze-excitation
    model = layer_graph(depthwise[0], 16, 16)
    assert any(a.name == "group" and a.i == 16 for a in model.graph.node[0].attribute)
    with pytest.raises(ValueError, match="c_in == c_out"):
        layer_graph(depthwise[0], 16, 24)
