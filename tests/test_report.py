"""Reports of a zoo model: front.json, PNG plots, the model card and the zoo index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pareco import models
from pareco.front import build_front
from pareco.report import update_index, write_reports
from pareco.weightfile import Preprocessing, load_zoo_model, read_metadata, save_zoo_model
from test_front import bundle, make_split, train_briefly

TRAINING = {"method": "pareco", "seed": 0, "epochs": 3, "wall_s": 754.2,
            "recipe": {"name": "resnet20-tiny", "dataset": "fashion-mnist", "lr": 0.1,
                       "batch_size": 64, "history_target": 100}}
LOG = [{"epoch": e, "loss": 1.5 - 0.3 * e, "lr": 0.1 / (e + 1), "images_per_s": 900.0,
        "alpha": [0.5] * 6} for e in range(3)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, one_torch_thread):
    """A small trained model with a real front, saved as a weight file; plus its history."""
    torch.manual_seed(0)
    net = models.build("resnet20", num_classes=4, in_channels=1, image_size=8)
    train_briefly(net, make_split(512, seed=1), steps=15)
    net.eval()
    history = net.width_space.sample(60, generator=torch.Generator().manual_seed(5))
    ce = 2.0 - net.macs_batch(history) / net.macs() + 0.1 * torch.rand(60, dtype=torch.float64)
    data = bundle(make_split(128, 2), make_split(128, 3), make_split(64, 4))
    front, others, stats = build_front(net, history, data, candidate_ce=ce, calib_images=64,
                                       max_configs=6, uniform_grid=6, batch_size=64)
    root = tmp_path_factory.mktemp("zoo")
    out = root / "resnet20-tiny"
    out.mkdir()
    path = out / "model.safetensors"
    save_zoo_model(path, net, front, stats, classes=list("abcd"), training=TRAINING,
                   candidates=others, preprocessing=Preprocessing(8, 1, (0.5,), (0.25,)))
    return {"root": root, "out": out, "path": path, "history": history, "ce": ce, "net": net}


def _png_ok(path: Path, min_size: tuple[int, int] = (500, 350)) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.std() > 5.0  # not a blank canvas
    assert path.stat().st_size > 15_000
    return im.size


def test_reports_exist_and_agree_with_the_weight_file(zoo):
    out, path = zoo["out"], zoo["path"]
    write_reports(out, path, history=zoo["history"], history_ce=zoo["ce"], log=LOG)
    for name in ("front.json", "front.png", "widths.png", "README.md"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "front.json").read_text())
    meta = read_metadata(path)
    loaded = load_zoo_model(path)
    assert doc["front"] == meta["front"]
    assert [c["id"] for c in doc["front"]] == [c.id for c in loaded.front]
    assert doc["name"] == "resnet20-tiny" and doc["method"] == "pareco"
    assert doc["dataset"] == "fashion-mnist" and doc["arch"] == meta["arch"]
    assert doc["training"] == meta["training"] and doc["software"] == meta["software"]
    s = doc["summary"]
    assert s["front_size"] == len(loaded.front)
    searched = [c for c in loaded.front if len(set(c.alpha)) > 1]
    assert s["searched_configs"] == len(searched)
    assert s["smallest_mflops"] == loaded.front[0].mflops
    assert s["largest_mflops"] == loaded.front[-1].mflops
    assert s["best_test_acc"] == max(c.test_acc for c in loaded.front)
    assert s["history_size"] == 60 and s["log_records"] == 3
    assert s["candidates"] == len(loaded.candidates) > 0
    assert doc["full_model"]["mflops"] == zoo["net"].macs() / 1e6
    assert (out / doc["weights"]["file"]).resolve() == path.resolve()
    wide = _png_ok(out / "front.png")
    _png_ok(out / "widths.png")
    card = (out / "README.md").read_text()
    for c in loaded.front:
        assert f"| {c.id} | {c.mflops:.3f} |" in card
        assert f"{100 * c.test_acc:.2f}%" in card
    assert "12m 34s" in card and "Limitations" in card and "python -m serve" in card
    assert f"{len(searched)} of its {len(loaded.front)} configurations are searched" in card
    assert "fashion-mnist" in card and "history_target" in card and "images_per_s" in card
    assert f"also {len(loaded.candidates)} other calibrated candidates" in card
    # without a history the accuracy plot has one panel only
    write_reports(out, path)
    assert _png_ok(out / "front.png")[0] < wide[0]
    assert json.loads((out / "front.json").read_text())["summary"]["history_size"] is None


def test_index_entries_are_replaced_not_duplicated(zoo, tmp_path):
    root, out, path = zoo["root"], zoo["out"], zoo["path"]
    index = root / "index.json"
    write_reports(out, path, log=LOG)
    other = root / "other-model"
    other.mkdir()
    (other / "model.safetensors").write_bytes(path.read_bytes())
    write_reports(other, other / "model.safetensors")
    write_reports(out, path)  # again: replaced in place
    entries = json.loads(index.read_text())
    assert [e["name"] for e in entries] == ["other-model", "resnet20-tiny"]
    e = entries[1]
    loaded = load_zoo_model(path)
    assert (root / e["path"]).resolve() == path.resolve()
    assert (root / e["card"]).is_file()
    assert e["arch"] == "resnet20" and e["dataset"] == "fashion-mnist" and e["method"] == "pareco"
    assert e["front_size"] == len(loaded.front)
    assert e["smallest_mflops"] == loaded.front[0].mflops
    assert e["full_mflops"] == zoo["net"].macs() / 1e6
    assert e["best_test_acc"] == max(c.test_acc for c in loaded.front)
    # an explicit index path; other entries survive an update
    custom = tmp_path / "idx" / "index.json"
    update_index(custom, {"name": "a", "x": 1})
    update_index(custom, {"name": "b", "x": 2})
    update_index(custom, {"name": "a", "x": 3})
    assert json.loads(custom.read_text()) == [{"name": "a", "x": 3}, {"name": "b", "x": 2}]
    assert not list(custom.parent.glob(".*tmp"))


def test_bad_inputs_fail_clearly_and_never_clobber_the_index(zoo, tmp_path):
    out, path = zoo["out"], zoo["path"]
    bad = tmp_path / "index.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        write_reports(out, path, zoo_index=bad)
    assert bad.read_text() == "{not json"
    bad.write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="JSON list"):
        update_index(bad, {"name": "y"})
    with pytest.raises(ValueError, match="history must be"):
        write_reports(out, path, history=torch.rand(5, 3), zoo_index=tmp_path / "i.json")
    with pytest.raises(ValueError, match="history_ce"):
        write_reports(out, path, history=zoo["history"], history_ce=torch.rand(3),
                      zoo_index=tmp_path / "i.json")
    with pytest.raises(Exception, match="no such weight file"):
        write_reports(out, tmp_path / "missing.safetensors", zoo_index=tmp_path / "i.json")
