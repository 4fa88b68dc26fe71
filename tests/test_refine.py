"""``python -m pareco.refine``: more configurations searched on a trained model's frozen weights.

A tiny PareCO run through the real training CLI writes the weight file (on generated
Fashion-MNIST IDX files). Refining it must keep everything it had (the weights bit for bit, every
calibrated configuration with its statistics and validation accuracy), add only new channel
vectors found by the search, and re-select a front that is non-dominated on validation accuracy
among all of them -- so its validation staircase can only rise.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from datagen import write_fashion_mnist
from pareco.pareto import nondominated
from bench.refine_cells import main as refine_cells
from pareco.refine import area, main
from pareco.train import main as train
from pareco.weightfile import load_zoo_model
from tinymodel import write_tiny_zoo_model

from test_train_cli import tiny_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    data_dir = write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=320, n_test=96)
    out = tmp_path_factory.mktemp("run") / "pareco"
    assert train(tiny_args(data_dir, out, "--method", "pareco")) == 0
    return out / "model.safetensors", data_dir


def refine_args(weights: Path, out: Path, data_dir: Path, *extra: str) -> list[str]:
    return ["--weights", str(weights), "--out", str(out), "--data-dir", str(data_dir),
            "--no-download", "--threads", "1", "--quiet", *extra]


def test_refining_keeps_what_was_there_and_reselects_the_front(trained, tmp_path, capsys):
    weights, data_dir = trained
    out = tmp_path / "refined.safetensors"
    assert main(refine_args(weights, out, data_dir, "--configs", "6")) == 0
    before, after = load_zoo_model(weights), load_zoo_model(out)
    old, new = load_file(str(weights)), load_file(str(out))
    for key, t in old.items():  # the shared weights, bit for bit
        if not key.startswith("bn/"):
            assert torch.equal(new[key], t), key
    by_channels = {c.channels: c for c in after.configs}
    assert len(by_channels) == len(after.configs)  # nothing calibrated twice
    for c in before.configs:  # every old configuration kept, with its statistics and accuracy
        kept = by_channels[c.channels]
        assert kept.val_acc == c.val_acc and kept.macs == c.macs
        for key, (mean, var) in before.bn_stats[c.id].items():
            assert torch.equal(after.bn_stats[kept.id][key][0], mean)
            assert torch.equal(after.bn_stats[kept.id][key][1], var)
    stats = after.meta["training"]["refine"]
    assert stats["configs"] == 6 and stats["searched"] == 6 and stats["duplicates"] == 0
    added = len(after.configs) - len(before.configs)
    assert added == stats["kept"] and 0 <= added <= 6
    # the front: non-dominated on validation accuracy among all calibrated configurations
    points = np.array([[c.mflops, c.val_acc] for c in after.configs])
    nd = {after.configs[i].channels for i in nondominated(points, maximize=[False, True])}
    assert {c.channels for c in after.front} == nd
    assert [c.id for c in after.front] == [f"c{i:02d}" for i in range(len(after.front))]
    assert all(0 <= c.test_acc <= 1 for c in after.front)
    assert all(c.test_acc is None for c in after.candidates)
    old_test = {c.channels: c.test_acc for c in before.front}
    for c in after.front:  # the old front's test accuracies are kept, never re-measured
        assert c.test_acc == old_test.get(c.channels, c.test_acc)
    lo = min(c.mflops for c in before.front)
    hi = max(c.mflops for c in before.front)
    assert area(after.front, lo, hi, "val_acc") >= area(before.front, lo, hi, "val_acc")
    printed = capsys.readouterr().out
    assert f"6 configurations searched, {added} calibrated" in printed
    assert "area under the val accuracy" in printed and "area under the test accuracy" in printed


def test_refining_is_deterministic(trained, tmp_path):
    weights, data_dir = trained
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for out in (a, b):
        assert main(refine_args(weights, out, data_dir, "--configs", "4", "--seed", "3")) == 0
    za, zb = load_zoo_model(a), load_zoo_model(b)
    assert za.front == zb.front and za.candidates == zb.candidates


def test_bad_input_is_refused_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as usage:
        main(["--weights", str(tmp_path / "x.safetensors"), "--configs", "0"])
    assert usage.value.code == 2
    assert "argument --configs: expected a positive integer, got '0'" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "absent.safetensors")]) == 1
    assert "no such weight file" in capsys.readouterr().err
    untrained = write_tiny_zoo_model(tmp_path / "tiny.safetensors")  # no training section
    assert main(["--weights", str(untrained), "--no-download"]) == 1
    assert "names no recipe data" in capsys.readouterr().err


def test_bench_refines_a_finished_cell_into_its_own_folder(trained, tmp_path, capsys):
    weights, data_dir = trained
    source = tmp_path / "cells"
    (source / "tiny").mkdir(parents=True)
    cell = {"network": "tiny", "method": "pareco", "seed": 0, "status": "trained",
            "command": f"{sys.executable} -m pareco.train --out {weights.parent} --seed 0",
            "run": {"front": []}}
    (source / "tiny" / "pareco-seed0.json").write_text(json.dumps(cell))
    argv = [f"{source}:pareco", "--network", "tiny", "--seeds", "0", "--configs", "4",
            "--cells-dir", str(tmp_path / "refined"), "--runs-dir", str(tmp_path / "runs"),
            "--data-dir", str(data_dir)]
    assert refine_cells(argv) == 0
    doc = json.loads((tmp_path / "refined" / "tiny" / "pareco-seed0.json").read_text())
    out = tmp_path / "runs" / "tiny" / "pareco" / "seed0" / "model.safetensors"
    assert doc["refine"]["searched"] == 4 and doc["refine_command"].count(str(out)) == 1
    assert [p["id"] for p in doc["run"]["front"]] == [c.id for c in load_zoo_model(out).front]
    assert "[refine] tiny pareco seed 0" in capsys.readouterr().out
    assert refine_cells(argv) == 0  # kept, not refined again
    assert capsys.readouterr().out == ""
    cell["command"] = "python -m pareco.train --out /nowhere"
    (source / "tiny" / "pareco-seed1.json").write_text(json.dumps({**cell, "seed": 1}))
    assert refine_cells([*argv[:4], "1", *argv[5:]]) == 1
    assert "/nowhere/model.safetensors (the cell's weight file) is not on this machine" in \
        capsys.readouterr().err
