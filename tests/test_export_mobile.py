"""What a mobile developer ships: self-describing, lean files; ARM int8 .ort; the float-edges int8
layout; fixed shapes; older opsets/IR; reproducible bytes; int8 results in the progress lines.

Runs the real ``python -m export`` CLI (``export.__main__.main``) on the small ResNet20 weight file
of ``test_export`` and tiny Fashion-MNIST files.
"""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession

from datagen import write_fashion_mnist
from export import mobile
from export.__main__ import main
from test_export import CLASSES, MEAN, STD, _weights

SMALL_RUN = ["--calib-images", "16", "--eval-images", "24"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export-mobile")


@pytest.fixture(scope="module")
def weights(workdir) -> Path:
    return _weights(workdir / "model.safetensors")


@pytest.fixture(scope="module")
def data_dir(workdir) -> Path:
    return write_fashion_mnist(workdir / "fmnist", n_train=60, n_test=30, seed=0)


def _export(weights: Path, data_dir: Path, out: Path, *flags: str) -> dict:
    argv = ["--weights", str(weights), "--out", str(out), "--data-dir", str(data_dir), *flags]
    assert main(argv) == 0
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def default_run(workdir, weights, data_dir) -> tuple[Path, dict]:
    """``--config small mid --ort --int8`` with the defaults: dynamic batch, arm, float-edges."""
    out = workdir / "default"
    return out, _export(weights, data_dir, out, "--config", "small", "mid", "--ort", "--int8",
                        *SMALL_RUN)


def _ort_ops(path: Path) -> collections.Counter:
    """Op types of the graph stored in an ORT-format file."""
    buf = path.read_bytes()
    graph = InferenceSession.InferenceSession.GetRootAsInferenceSession(buf, 0).Model().Graph()
    return collections.Counter(graph.Nodes(i).OpType().decode() for i in range(graph.NodesLength()))


def _meta(path: Path) -> dict[str, str]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.get_modelmeta().custom_metadata_map


def _images(n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    return ((rng.random((n, 1, 28, 28), dtype=np.float32) - MEAN[0]) / STD[0]).astype(np.float32)


def test_every_file_describes_its_input_and_output(default_run):
    out, manifest = default_run
    for entry in manifest["files"]:
        meta = _meta(out / entry["path"])  # .onnx and .ort alike
        assert json.loads(meta["class_names"]) == CLASSES
        assert json.loads(meta["mean"]) == list(MEAN) and json.loads(meta["std"]) == list(STD)
        assert meta["input_layout"] == "NCHW" and meta["input_name"] == "input"
        assert json.loads(meta["input_shape"]) == ["batch", 1, 28, 28]
        assert "pixel / 255" in meta["preprocessing"] and meta["output_name"] == "logits"
        assert meta["pareco.config_id"] == entry["config"]["id"]
        assert meta["pareco.precision"] == entry["precision"]


def test_no_exporter_stack_traces_or_build_paths(default_run):
    out, manifest = default_run
    for entry in manifest["files"]:
        data = (out / entry["path"]).read_bytes()
        assert b"stack_trace" not in data and b"pkg.torch" not in data
        assert str(Path.cwd()).encode() not in data and b"site-packages" not in data
        if entry["kind"] == "onnx":
            model = onnx.load(out / entry["path"])
            assert not any(n.metadata_props or n.doc_string for n in model.graph.node)
            assert model.producer_name == "pareco-export"


def test_ir_version_is_the_lowest_the_opset_allows(default_run):
    out, manifest = default_run
    for entry in manifest["files"]:
        if entry["kind"] == "onnx":
            model = onnx.load(out / entry["path"])
            assert model.ir_version == entry["ir_version"]
            assert model.ir_version == {18: 8, 19: 9, 20: 9, 21: 10}[entry["opset"]]
            onnx.checker.check_model(model, full_check=True)


def test_int8_float_edges_layout_and_arm_ort(default_run):
    out, manifest = default_run
    for entry in [e for e in manifest["files"] if e["precision"] == "int8"]:
        assert entry["quantization"]["layout"] == "float-edges"
        if entry["kind"] == "onnx":
            graph = onnx.load(out / entry["path"]).graph
            producer = {o: n for n in graph.node for o in n.output}
            assert producer["logits"].op_type == "Gemm"  # float classifier, float logits
            stem = [n for n in graph.node if n.op_type == "Conv"][0]
            assert stem.input[0] == "input"  # the float stem takes the float input directly
        else:
            assert entry["target_platform"] == "arm"
            ops = _ort_ops(out / entry["path"])
            assert ops["QLinearConv"] == 20 and ops["QLinearAdd"] == 9  # 21 convs - the stem
            assert ops["Conv"] + ops["FusedConv"] == 1


def test_progress_lines_show_int8_results(workdir, weights, data_dir, capsys):
    _export(weights, data_dir, workdir / "progress", "--config", "small", "--int8", *SMALL_RUN)
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.strip().startswith("small:"))
    assert "int8 on 24 test images: top-1 agreement" in line and "accuracy" in line
    assert "after BN folding" in line


def test_same_inputs_give_byte_identical_files(default_run, workdir, weights, data_dir):
    if not mobile.reproducible():
        pytest.skip("setarch -R does not work here: .ort bytes depend on address randomization")
    out, first = default_run
    again = workdir / "again"
    second = _export(weights, data_dir, again, "--config", "small", "mid", "--ort", "--int8",
                     *SMALL_RUN)
    for entry in first["files"]:
        assert (again / entry["path"]).read_bytes() == (out / entry["path"]).read_bytes(), entry["path"]
    assert [f["sha256"] for f in first["files"]] == [f["sha256"] for f in second["files"]]
    assert first["ort"]["byte_reproducible"] is True


def test_fixed_batch_all_layout_amd64_opset18(workdir, weights, data_dir):
    out = workdir / "fixed"
    manifest = _export(weights, data_dir, out, "--config", "mid", "--ort", "--int8", "--batch", "4",
                       "--int8-layout", "all", "--target-platform", "amd64", "--opset", "18",
                       *SMALL_RUN)
    assert manifest["input"]["shape"] == [4, 1, 28, 28]
    x = _images(4)
    for entry in manifest["files"]:
        assert entry["batch"] == 4 and entry["opset"] == 18
        if entry["kind"] == "onnx":
            model = onnx.load(out / entry["path"])
            assert model.ir_version == 8
            for value in [*model.graph.input, *model.graph.output]:
                assert value.type.tensor_type.shape.dim[0].dim_value == 4
        sess = ort.InferenceSession(str(out / entry["path"]), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].shape == [4, 1, 28, 28]
        assert sess.run(None, {"input": x})[0].shape == (4, 10)
        with pytest.raises(Exception):
            sess.run(None, {"input": x[:1]})
        assert json.loads(_meta(out / entry["path"])["input_shape"]) == [4, 1, 28, 28]
        if entry["precision"] == "fp32":
            assert set(entry["parity"]["max_abs_diff"]) == {"4"}
        else:
            assert entry["quantization"]["layout"] == "all"
            assert entry["quantization"]["float_nodes"] == []
        if entry["kind"] == "ort":
            assert entry["target_platform"] == "amd64"
    graph = onnx.load(out / "mid.int8.onnx").graph
    producer = {o: n for n in graph.node for o in n.output}
    assert producer["logits"].op_type == "DequantizeLinear"  # quantized classifier


@pytest.mark.parametrize("extra, needle", [
    (["--target-platform", "arm"], "--target-platform needs --ort"),
    (["--ort", "--target-platform", "x86"], "invalid choice"),
    (["--int8-layout", "all"], "--int8-layout needs --int8"),
    (["--eval-images", "10"], "--eval-images needs --int8"),
    (["--int8", "--eval-images", "0"], "positive integer or 'all'"),
    (["--batch", "0"], "positive integer"),
    (["--opset", "17"], "between 18 and"),
])
def test_bad_mobile_flags_say_what_is_accepted(workdir, weights, capsys, extra, needle):
    out = workdir / "bad"
    assert main(["--weights", str(weights), "--config", "small", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_ort_conversion_rejects_unknown_platform(tmp_path):
    with pytest.raises(ValueError, match="arm, amd64"):
        mobile.to_ort_many([(tmp_path / "a.onnx", tmp_path / "a.ort")], "riscv")


def test_file_hashes_in_manifest_match(default_run):
    out, manifest = default_run
    for entry in manifest["files"]:
        assert entry["sha256"] == hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest()
