"""Hardware-friendly widths through the real ``python -m pareco.train`` CLI on tiny IDX data:
a divisor-8 model trains, saves and loads; PareCO searches with a latency cost table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from datagen import write_fashion_mnist
import torch

from pareco import models
from pareco.profile import latency_functions
from pareco.train import main
from pareco.training.recipe import RecipeError, load_recipe
from pareco.weightfile import WeightFileError, load_zoo_model
from test_profile import fake_table
from test_train_cli import tiny_args


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=320, n_test=96, seed=0)


def test_divisor_8_trains_saves_and_loads(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "d8"
    assert main(tiny_args(data_dir, out, "--divisor", "8")) == 0
    zoo = load_zoo_model(out / "model.safetensors")
    assert zoo.net.width_space.divisor == 8
    assert zoo.meta["arch"]["kwargs"]["divisor"] == 8
    assert zoo.meta["training"]["recipe"]["model"]["divisor"] == 8
    full = zoo.net.width_space.full_channels
    for c in zoo.front + zoo.candidates:
        assert all(ch % 8 == 0 or ch == f for ch, f in zip(c.channels, full)), c.channels
    # the stored width space is checked against the architecture it names
    path = out / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    doc = json.loads(meta["pareco"])
    doc["width_space"]["divisor"] = 1
    save_file(tensors, str(tmp_path / "bad.safetensors"), {**meta, "pareco": json.dumps(doc)})
    with pytest.raises(WeightFileError, match="width_space does not match"):
        load_zoo_model(tmp_path / "bad.safetensors")


def test_pareco_with_a_latency_cost(data_dir: Path, tmp_path: Path) -> None:
    net = models.build("resnet20", num_classes=10, in_channels=1, image_size=16)
    table, _ = fake_table(net)
    table.save(tmp_path / "lat.json")
    out = tmp_path / "lat"
    assert main(tiny_args(data_dir, out, "--cost", "latency", "--latency-table",
                          str(tmp_path / "lat.json"))) == 0
    zoo = load_zoo_model(out / "model.safetensors")
    recipe = zoo.meta["training"]["recipe"]["pareco"]
    assert recipe["cost"] == "latency" and recipe["latency_table"] == str(tmp_path / "lat.json")
    events = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    searched = [e for e in events if e["event"] == "refresh" and e.get("phase") == "search"]
    assert searched
    # targets and costs are normalized latency: never below the smallest config's
    smooth, exact = latency_functions(net, table)
    lat_lo = float(exact(torch.tensor([net.width_space.smallest], dtype=torch.float64))[0])
    macs_lo = net.macs(net.width_space.smallest) / net.macs()
    assert lat_lo > macs_lo + 0.02
    for e in searched:
        assert all(lat_lo - 1e-9 <= v <= 1 + 1e-9 for v in e["targets"] + e["flops"])
        assert all(err <= 0.02 + 1e-9 for err in e["flops_error"])


def test_latency_table_of_another_network_is_bad_input(data_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    other = models.build("resnet20", num_classes=10, in_channels=1, image_size=28)
    table, _ = fake_table(other)
    table.save(tmp_path / "lat28.json")
    assert main(tiny_args(data_dir, tmp_path / "o", "--cost", "latency", "--latency-table",
                          str(tmp_path / "lat28.json"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pareco.latency_table" in err[-1] and "do not match" in err[-1]
    assert main(tiny_args(data_dir, tmp_path / "m", "--cost", "latency", "--latency-table",
                          str(tmp_path / "missing.json"))) == 2
    assert "cannot read latency table" in capsys.readouterr().err


@pytest.mark.parametrize("updates, message", [
    ({"model.divisor": 0}, "model.divisor must be >= 1"),
    ({"model.divisor": 2.5}, "model.divisor must be an integer"),
    ({"model.kwargs": {"divisor": 8}}, "set model.divisor instead"),
    ({"pareco.cost": "joules"}, "pareco.cost: unknown value 'joules'; choose one of macs, latency"),
    ({"pareco.cost": "latency"}, "needs pareco.latency_table"),
    ({"pareco.latency_table": "t.json"}, "only read with pareco.cost: latency"),
    ({"pareco.cost": "latency", "pareco.latency_table": "t.json", "method": "slim"},
     "which method 'slim' does not run"),
])
def test_recipe_validation(updates: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_recipe("resnet20-fashionmnist").override(updates)


def test_resume_identity_ignores_recipe_keys_added_since() -> None:
    from pareco.training.run import _diff, _with_defaults

    recipe = load_recipe("resnet20-fashionmnist")
    old = recipe.to_dict()
    del old["model"]["divisor"], old["pareco"]["cost"], old["pareco"]["latency_table"]
    identity = {"recipe": old, "seed": 0}
    assert _diff(identity, {"recipe": recipe.to_dict(), "seed": 0})  # raw: looks different
    assert _diff(_with_defaults(identity), {"recipe": recipe.to_dict(), "seed": 0}) == ""
    changed = recipe.override({"model.divisor": 8}).to_dict()
    assert "model.divisor" in _diff(_with_defaults(identity), {"recipe": changed, "seed": 0})
