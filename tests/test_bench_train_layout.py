"""``bench/train_layout.py`` on tiny Fashion-MNIST IDX files: every (memory format, precision)
variant computes the same first step as NCHW float32, and the report says so."""

import json

import pytest

from bench.train_layout import main
from datagen import write_fashion_mnist

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_variants_agree_and_are_timed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # never the user's cache
    monkeypatch.setenv("PARECO_DATA", str(write_fashion_mnist(tmp_path / "fmnist", n_train=600)))
    out = tmp_path / "layout.json"
    assert main(["--recipes", "resnet20_quarter-fashionmnist", "--precisions", "fp32,bf16",
                 "--steps", "1", "--rounds", "1", "--threads", "1", "--out", str(out)]) == 0
    (cell,) = json.loads(out.read_text())["cells"]
    variants = {"nchw/fp32", "channels_last/fp32", "nchw/bf16", "channels_last/bf16"}
    assert cell["recipe"] == "resnet20_quarter-fashionmnist" and cell["steps_per_variant"] == 1
    assert set(cell["median_step_s"]) == variants and all(
        s > 0 for s in cell["median_step_s"].values())
    assert cell["ratio_to_nchw_fp32"]["nchw/fp32"] == 1.0
    first = cell["first_step_relative_loss_difference"]
    assert first["nchw/fp32"] == 0.0 and first["channels_last/fp32"] <= 1e-5
    assert first["nchw/bf16"] <= 2e-2 and first["channels_last/bf16"] <= 2e-2
    assert "ratio to nchw/fp32" in capsys.readouterr().out


def test_precisions_must_include_the_reference(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--precisions", "bf16"])
    assert exc.value.code == 2
    assert "including fp32 (the reference)" in capsys.readouterr().err
