"""The exported fp32 and int8 files in a second, independent runtime (tract) against ONNX Runtime.

tract is in the ``dev`` extra, so CI (``CI=true``) always runs this; elsewhere it is skipped if
tract is not installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from datagen import write_fashion_mnist
from export.__main__ import main
from test_export import MEAN, STD, _weights

tract = pytest.importorskip("tract") if not os.environ.get("CI") else __import__("tract")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("export-tract")
    weights = _weights(work / "model.safetensors")
    data = write_fashion_mnist(work / "fmnist", n_train=60, n_test=30, seed=0)
    out = work / "out"
    assert main(["--weights", str(weights), "--config", "small", "big", "--int8", "--out", str(out),
                 "--data-dir", str(data), "--calib-images", "16", "--eval-images", "24"]) == 0
    return out, json.loads((out / "manifest.json").read_text())


def _images(n: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    return ((rng.random((n, 1, 28, 28), dtype=np.float32) - MEAN[0]) / STD[0]).astype(np.float32)


def _tract_run(path: Path, x: np.ndarray) -> np.ndarray:
    model = tract.onnx().load(str(path)).into_model().into_runnable()
    return model.run([x])[0].to_numpy()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tract_agrees_with_onnx_runtime(exported, precision):
    out, manifest = exported
    entries = [e for e in manifest["files"] if e["precision"] == precision]
    assert len(entries) == 2
    x = _images(16)
    for entry in entries:
        path = out / entry["path"]
        ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"input": x})[0]
        for n in (1, 16):  # the dynamic batch axis works in tract too
            got = _tract_run(path, x[:n])
            assert got.shape == (n, 10)
            if precision == "fp32":
                np.testing.assert_allclose(got, ref[:n], atol=1e-4, rtol=0)
            else:  # rounding of ties may differ between int8 kernels: a quantization step or so
                scale = float(np.abs(ref).max())
                assert float(np.abs(got - ref[:n]).max()) <= 0.05 * scale
                assert (got.argmax(1) == ref[:n].argmax(1)).mean() >= 0.9
