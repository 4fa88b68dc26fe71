"""``python -m export`` end to end on a small ResNet20 weight file and tiny Fashion-MNIST files.

One full run (every config, ``--ort --int8``) is shared by the module; the bad-input cases fail
before any export, so they are cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.flop_counter import FlopCounterMode

from datagen import write_fashion_mnist
from export.__main__ import main
from export.count import count_macs
from pareco import models
from pareco.calibrate import calibrate_bn
from pareco.weightfile import Preprocessing, front_config, load_zoo_model, save_zoo_model
from tinymodel import write_tiny_zoo_model

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]
MEAN, STD = (0.286,), (0.353,)


def _weights(path: Path, dataset: str = "fashion-mnist") -> Path:
    torch.manual_seed(0)
    net = models.build("resnet20", num_classes=10, in_channels=1, image_size=28).eval()
    alphas = {"small": [0.316] * 6, "mid": [0.4, 0.6, 0.35, 0.5, 0.45, 0.7], "big": [0.75] * 6}
    images = [torch.randn(16, 1, 28, 28) for _ in range(2)]
    front = [front_config(net, cid, a, val_acc=acc, test_acc=acc - 0.01)
             for (cid, a), acc in zip(alphas.items(), (0.80, 0.85, 0.90))]
    stats = {cid: calibrate_bn(net, a, images) for cid, a in alphas.items()}
    save_zoo_model(path, net, front, stats, preprocessing=Preprocessing(28, 1, MEAN, STD),
                   classes=CLASSES, training={"dataset": dataset})
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def weights(workdir) -> Path:
    return _weights(workdir / "model.safetensors")


@pytest.fixture(scope="module")
def zoo(weights):
    return load_zoo_model(weights)


@pytest.fixture(scope="module")
def data_dir(workdir) -> Path:
    return write_fashion_mnist(workdir / "fmnist", n_train=120, n_test=40, seed=0)


@pytest.fixture(scope="module")
def full_run(workdir, weights, data_dir) -> tuple[Path, dict]:
    out = workdir / "all"
    rc = main(["--weights", str(weights), "--all", "--out", str(out), "--ort", "--int8",
               "--calib-images", "32", "--data-dir", str(data_dir)])
    assert rc == 0
    return out, json.loads((out / "manifest.json").read_text())


def _images(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((rng.random((n, 1, 28, 28), dtype=np.float32) - MEAN[0]) / STD[0]).astype(np.float32)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _entries(manifest: dict, kind: str, precision: str) -> list[dict]:
    return [f for f in manifest["files"] if f["kind"] == kind and f["precision"] == precision]


def test_every_config_exported_with_all_formats(full_run, weights, zoo):
    out, manifest = full_run
    names = sorted(p.name for p in out.iterdir())
    expected = sorted([f"{c.id}{suffix}" for c in zoo.front
                       for suffix in (".onnx", ".ort", ".int8.onnx", ".int8.ort")] + ["manifest.json"])
    assert names == expected
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".all.")]  # temp folder gone


def test_onnx_reproduces_pytorch_at_batch_1_and_5(full_run, weights, zoo):
    out, manifest = full_run
    x = _images(5)
    for entry in _entries(manifest, "onnx", "fp32"):
        cfg = entry["config"]["id"]
        model = onnx.load(out / entry["path"])
        onnx.checker.check_model(model, full_check=True)
        assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]
        sess = _session(out / entry["path"])
        ref = zoo.extract(cfg)(torch.from_numpy(x)).detach().numpy()
        for n in (1, 5):
            got = sess.run(["logits"], {"input": x[:n]})[0]
            assert got.shape == (n, 10)
            np.testing.assert_allclose(got, ref[:n], atol=1e-4, rtol=0)
        par = entry["parity"]
        assert set(par["max_abs_diff"]) == {"1", "8"} and max(par["max_abs_diff"].values()) <= 1e-4
        assert par["inputs"] == "fashion-mnist test split"


def test_onnx_macs_equal_claimed_mflops(full_run, weights, zoo):
    out, manifest = full_run
    for entry in _entries(manifest, "onnx", "fp32"):
        cfg = zoo.config(entry["config"]["id"])
        macs = count_macs(onnx.load(out / entry["path"]))
        assert macs == entry["onnx_macs"] == cfg.macs
        assert entry["config"]["mflops"] == pytest.approx(cfg.mflops)
        with FlopCounterMode(display=False) as counter:  # the torch-side reference
            zoo.extract(cfg.id)(torch.zeros(1, 1, 28, 28))
        assert counter.get_total_flops() // 2 == macs
        # BN folding: each BN's 2*C affine parameters become one C-element conv bias
        bn_channels = sum(m.num_features for m in zoo.extract(cfg.id).modules()
                          if isinstance(m, torch.nn.BatchNorm2d))
        assert entry["onnx_params"] == cfg.params - bn_channels
        assert entry["params"] == {"before_bn_folding": cfg.params,
                                   "after_bn_folding": cfg.params - bn_channels}
        assert entry["folded_batchnorms"] == 21


def test_int8_and_ort_files_run(full_run, weights):
    out, manifest = full_run
    x = _images(5)
    fp32 = {e["config"]["id"]: _session(out / e["path"]).run(None, {"input": x})[0]
            for e in _entries(manifest, "onnx", "fp32")}
    for kind, precision in (("onnx", "int8"), ("ort", "fp32"), ("ort", "int8")):
        entries = _entries(manifest, kind, precision)
        assert len(entries) == 3
        for entry in entries:
            sess = _session(out / entry["path"])
            for n in (1, 5):
                assert sess.run(None, {"input": x[:n]})[0].shape == (n, 10)
            got = sess.run(None, {"input": x})[0]
            if precision == "fp32":
                np.testing.assert_allclose(got, fp32[entry["config"]["id"]], atol=1e-4, rtol=0)
            if kind == "ort":
                assert set(entry["mobile"]) == {"nnapi", "coreml_neuralnetwork", "coreml_mlprogram"}
    for entry in _entries(manifest, "onnx", "int8"):
        assert 0.0 <= entry["parity"]["top1_agreement"] <= 1.0
        acc = entry["accuracy"]
        assert acc["test_images"] == 40
        assert acc["int8_change"] == pytest.approx(acc["int8_test"] - acc["onnx_test"])
        assert entry["quantization"]["calib_images"] == 32
        ops = {n.op_type for n in onnx.load(out / entry["path"]).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_manifest_records_files_and_provenance(full_run, weights):
    import hashlib
    out, manifest = full_run
    assert manifest["format"] == "pareco-export"
    assert manifest["source"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert set(manifest["software"]) >= {"pareco", "torch", "onnx", "onnxruntime"}
    assert manifest["input"]["shape"] == ["batch", 1, 28, 28]
    assert manifest["ort"]["target_platform"] == "arm"
    for entry in manifest["files"]:
        data = (out / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
        assert entry["opset"] >= 18
        assert {"id", "alpha", "channels", "mflops", "params", "test_acc"} <= set(entry["config"])


def test_mflops_budget_picks_most_accurate_fitting_config(workdir, weights, zoo, data_dir):
    budget = (zoo.config("mid").mflops + zoo.config("big").mflops) / 2
    out = workdir / "budget"
    assert main(["--weights", str(weights), "--mflops", str(budget), "--out", str(out),
                 "--data-dir", str(data_dir), "--opset", "18"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == ["mid.onnx"]
    assert manifest["files"][0]["opset"] == 18
    assert manifest["inputs_for_checks"] == "fashion-mnist test split"


def test_candidates_export_with_a_host_profile(workdir, data_dir):
    weights = write_tiny_zoo_model(workdir / "with-candidates.safetensors", size=28, candidates=[
        ([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 0.75), ([0.5, 1.0, 0.5, 1.0, 0.5, 1.0], 0.72)])
    out = workdir / "profiled"
    assert main(["--weights", str(weights), "--config", "k01", "c00", "k00", "c01",
                 "--out", str(out), "--data-dir", str(data_dir), "--host-profile"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["host_profile"] == "host-profile.json"
    assert [f["config"]["id"] for f in manifest["files"]] == ["k01", "c00", "k00", "c01"]
    doc = json.loads((out / "host-profile.json").read_text())
    assert doc["format"] == "pareco-host-profile" and doc["version"] == 1
    assert doc["runtime"]["backend"] == "onnxruntime" and doc["runtime"]["threads"] == 1
    assert doc["host"]["cores"] >= 1 and doc["host"]["cpu"]
    rows = doc["configs"]
    assert [r["mflops"] for r in rows] == sorted(r["mflops"] for r in rows)
    assert {r["id"] for r in rows} == {"c00", "c01", "k00", "k01"}
    lat = {r["id"]: r["latency_ms"] for r in rows}
    acc = {r["id"]: r["accuracy"] for r in rows}
    assert all(t > 0 for t in lat.values())
    assert doc["latency_front"] == sorted(doc["latency_front"], key=lat.get)
    for r in rows:  # on the front exactly when nothing dominates it, and the dominator does
        assert r["on_latency_front"] == (r["latency_dominated_by"] is None) == (
            r["id"] in doc["latency_front"])
        if (d := r["latency_dominated_by"]) is not None:
            assert lat[d] <= lat[r["id"]] and acc[d] >= acc[r["id"]]
    assert acc["k01"] == 0.72  # validation accuracy, the candidates' only one


def test_host_profile_is_batch_1(workdir, weights, capsys):
    out = workdir / "bad-profile"
    _fails(["--weights", str(weights), "--all", "--batch", "4", "--host-profile", "--out",
            str(out)], capsys, "--host-profile times batch-1 inference", out)


def _fails(argv: list[str], capsys, needle: str, out: Path | None = None) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    if out is not None:
        assert not out.exists() or not any(out.iterdir())
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_unknown_config_lists_the_ids(workdir, weights, capsys):
    out = workdir / "bad1"
    _fails(["--weights", str(weights), "--config", "nope", "--out", str(out)], capsys,
           "small, mid, big", out)


def test_budget_below_smallest_names_the_minimum(workdir, weights, capsys, zoo):
    out = workdir / "bad2"
    _fails(["--weights", str(weights), "--mflops", "0.5", "--out", str(out)], capsys,
           f"{zoo.front[0].mflops:.4f} MFLOPs", out)


def test_corrupt_and_truncated_weight_files(workdir, weights, capsys):
    garbage = workdir / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file at all" * 10)
    truncated = workdir / "truncated.safetensors"
    truncated.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for bad in (garbage, truncated, workdir / "missing.safetensors"):
        out = workdir / f"out-{bad.stem}"
        _fails(["--weights", str(bad), "--all", "--out", str(out)], capsys, str(bad), out)


def test_unwritable_output(workdir, weights, capsys):
    blocker = workdir / "a-file"
    blocker.write_text("x")
    _fails(["--weights", str(weights), "--all", "--out", str(blocker / "sub")], capsys,
           "cannot write to --out")
    _fails(["--weights", str(weights), "--all", "--out", str(blocker)], capsys, "not a folder")


@pytest.mark.parametrize("extra", [
    ["--all", "--config", "small"],
    ["--all", "--mflops", "10"],
    ["--config", "small", "--calib-images", "10"],
    ["--all", "--int8", "--calib-images", "0"],
    ["--all", "--opset", "3"],
    [],
])
def test_conflicting_or_invalid_flags(workdir, weights, capsys, extra):
    out = workdir / "bad-flags"
    _fails(["--weights", str(weights), "--out", str(out), *extra], capsys, "error:", out)


def test_int8_without_data_names_data_dir(workdir, weights, capsys, monkeypatch):
    meta = json.loads(safe_open(str(weights), "pt").metadata()["pareco"])
    meta["training"]["dataset"] = "cifar10"  # a dataset that is nowhere on this machine
    other = workdir / "cifar-model.safetensors"
    save_file(load_file(str(weights)), str(other), metadata={"pareco": json.dumps(meta)})
    empty = workdir / "empty-data"
    empty.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
    monkeypatch.delenv("PARECO_DATA", raising=False)
    out = workdir / "bad-int8"
    _fails(["--weights", str(other), "--config", "small", "--int8", "--data-dir", str(empty),
            "--out", str(out)], capsys, "--data-dir", out)


def test_failed_check_leaves_no_files(workdir, weights, data_dir, full_run, capsys, monkeypatch):
    """A check failing on the second config (the first one's files may already be written)."""
    from export import pipeline
    done, _ = full_run
    monkeypatch.setattr(pipeline.onnx_io, "to_onnx_many",  # reuse the full run's exports
                        lambda modules, shape, opset=None: [onnx.load(done / f"{c}.onnx")
                                                            for c in ("small", "mid")])
    real = pipeline.count.count_macs
    mid_macs = real(onnx.load(done / "mid.onnx"))
    # configs are verified in parallel threads: the fault follows the graph, not the call order
    monkeypatch.setattr(pipeline.count, "count_macs",
                        lambda m: real(m) + (1 if real(m) == mid_macs else 0))
    out = workdir / "failing"
    out.mkdir()
    (out / "keep.txt").write_text("untouched")
    assert main(["--weights", str(weights), "--config", "small", "mid", "--out", str(out),
                 "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "check failed: mid: the ONNX graph has" in err[-1]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not [p for p in workdir.iterdir() if p.name.startswith(".failing.")]
