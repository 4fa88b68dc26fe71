"""The weight file: save -> load round trip, and clear errors on corrupt or inconsistent files."""

import dataclasses
import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from pareco import models
from pareco.calibrate import calibrate_bn
from pareco.weightfile import (
    FrontConfig, Preprocessing, WeightFileError, front_config, load_zoo_model, read_metadata, save_zoo_model,
)

CLASSES = [f"class{i}" for i in range(4)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    net = models.build("resnet20", num_classes=4, in_channels=1, image_size=8)
    images = torch.randn(16, 1, 8, 8)
    alphas = {"c00": net.width_space.smallest, "c01": [0.5, 0.8, 0.4, 0.9, 1.0, 0.6],
              "c02": net.width_space.full}
    front = [front_config(net, cid, a, val_acc=0.5 + i / 10, test_acc=0.4 + i / 10)
             for i, (cid, a) in enumerate(alphas.items())]
    others = [front_config(net, "k00", [0.6, 0.4, 0.5, 0.9, 0.7, 0.5], val_acc=0.55)]
    alphas |= {"k00": others[0].alpha}
    stats = {cid: calibrate_bn(net, a, images.split(8)) for cid, a in alphas.items()}
    path = tmp_path_factory.mktemp("wf") / "model.safetensors"
    save_zoo_model(path, net, front, stats, preprocessing=Preprocessing(8, 1, (0.5,), (0.25,)),
                   classes=CLASSES, training={"method": "pareco", "seed": 0}, candidates=others)
    return net, front, stats, path, images


def test_round_trip_rebuilds_an_identical_model(saved):
    net, front, stats, path, images = saved
    zoo = load_zoo_model(path)
    assert zoo.front == sorted(front, key=lambda c: c.macs)
    assert zoo.classes == tuple(CLASSES)
    assert zoo.preprocessing == Preprocessing(8, 1, (0.5,), (0.25,))
    assert zoo.meta["training"]["method"] == "pareco"
    assert zoo.meta["software"]["torch"] == torch.__version__
    for c in front:
        expect = net.eval()(images, c.alpha, stats[c.id])
        assert torch.equal(zoo.net(images, c.alpha, zoo.bn_stats[c.id]), expect)
        assert (zoo.extract(c.id)(images) - expect).abs().max() <= 1e-5
    assert zoo.candidates == [dataclasses.replace(c) for c in saved_candidates(path)]
    k = zoo.config("k00")
    assert k.val_acc == 0.55 and k.test_acc is None
    assert torch.equal(zoo.net(images, k.alpha, zoo.bn_stats["k00"]),
                       net.eval()(images, k.alpha, stats["k00"]))
    assert (zoo.extract("k00")(images) - net(images, k.alpha, stats["k00"])).abs().max() <= 1e-5
    assert [c.macs for c in zoo.configs] == sorted(c.macs for c in zoo.front + zoo.candidates)
    assert zoo.best_within(None).id == "c02"  # budgets pick from the front only
    assert zoo.best_within(zoo.front[1].mflops + 1e-9).id == "c01"
    with pytest.raises(ValueError, match="smallest needs"):
        zoo.best_within(0.0001)


def saved_candidates(path):
    return [FrontConfig.from_dict(c) for c in read_metadata(path)["candidates"]]


def test_version_1_files_without_candidates_still_load(saved, tmp_path):
    old = tmp_path / "v1.safetensors"
    rewrite_metadata(saved[3], old, edit_doc(lambda d: (d.update(version=1), d.pop("candidates"))))
    zoo = load_zoo_model(old)
    assert zoo.candidates == [] and [c.id for c in zoo.configs] == ["c00", "c01", "c02"]
    assert zoo.front == load_zoo_model(saved[3]).front


def test_the_documented_schema_is_in_the_metadata(saved):
    doc = read_metadata(saved[3])
    assert doc["format"] == "pareco-slimmable" and doc["version"] == 2
    assert [c["id"] for c in doc["candidates"]] == ["k00"]
    assert doc["arch"] == {"name": "resnet20",
                           "kwargs": {"num_classes": 4, "in_channels": 1, "image_size": 8}}
    assert doc["width_space"]["dim"] == 6
    first = doc["front"][0]
    assert set(first) >= {"id", "alpha", "channels", "mflops", "params", "val_acc", "test_acc"}
    assert first["mflops"] == pytest.approx(first["macs"] / 1e6)


def rewrite_metadata(src, dst, edit):
    """Copy a safetensors file with its JSON header edited by ``edit(header_dict)``."""
    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def edit_doc(change):
    def edit(header):
        doc = json.loads(header["__metadata__"]["pareco"])
        change(doc)
        header["__metadata__"]["pareco"] = json.dumps(doc)
    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (edit_doc(lambda d: d.update(format="other")), "format is not"),
        (edit_doc(lambda d: d.update(version=99)), "format version 99"),
        (edit_doc(lambda d: d["arch"].update(name="nope")), "cannot rebuild the architecture"),
        (edit_doc(lambda d: d["front"][1].update(macs=d["front"][1]["macs"] + 1)), "claims"),
        (edit_doc(lambda d: d["front"][1].update(channels=[1] * 6)), "do not follow from its alpha"),
        (edit_doc(lambda d: d["front"][1].update(alpha=[2.0] * 6)), "outside the width range"),
        (edit_doc(lambda d: d["front"][0].update(val_acc=93.0)), "not a fraction"),
        (edit_doc(lambda d: d.update(front=[])), "front is empty"),
        (edit_doc(lambda d: d["candidates"][0].update(params=1)), "config k00: claims 1 params"),
        (edit_doc(lambda d: d["candidates"][0].update(id="c01")), "duplicate configuration id"),
        (edit_doc(lambda d: d.update(candidates={})), "candidates must be a list"),
        (edit_doc(lambda d: d.update(classes=["a"])), "class names"),
        (edit_doc(lambda d: d.pop("preprocessing")), "lacks 'preprocessing'"),
        (lambda h: h.pop("__metadata__"), "without the 'pareco' metadata"),
    ],
)
def test_inconsistent_files_are_refused_with_a_precise_message(saved, tmp_path, edit, message):
    bad = tmp_path / "bad.safetensors"
    rewrite_metadata(saved[3], bad, edit)
    with pytest.raises(WeightFileError, match=message):
        load_zoo_model(bad)


@pytest.mark.parametrize("drop, message", [("bn/c01/stem_bn/var", "missing BN statistics"),
                                           ("bn/k00/stem_bn/mean", "config k00: missing BN"),
                                           ("param/fc.weight", "missing weight tensor")])
def test_missing_tensors_are_named(saved, tmp_path, drop, message):
    tensors = load_file(str(saved[3]))
    del tensors[drop]
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"pareco": json.dumps(read_metadata(saved[3]))})
    with pytest.raises(WeightFileError, match=message):
        load_zoo_model(bad)


def test_truncated_empty_and_missing_files_are_refused(saved, tmp_path):
    raw = saved[3].read_bytes()
    for name, content in [("trunc", raw[: len(raw) // 2]), ("empty", b""), ("junk", b"x" * 100)]:
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(content)
        with pytest.raises(WeightFileError):
            load_zoo_model(p)
    with pytest.raises(WeightFileError, match="no such weight file"):
        load_zoo_model(tmp_path / "absent.safetensors")


def test_save_is_atomic_and_refuses_an_incomplete_front(saved, tmp_path):
    net, front, stats, _, _ = saved
    path = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="no BN statistics"):
        save_zoo_model(path, net, front, {"c00": stats["c00"]},
                       preprocessing=Preprocessing(8, 1, (0.5,), (0.25,)), classes=CLASSES)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind
