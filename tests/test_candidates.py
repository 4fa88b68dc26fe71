"""``python -m pareco.candidates``: calibrated candidates added to a trained weight file.

A tiny run through the real training CLI writes the weight file (on generated Fashion-MNIST IDX
files); the tool must rebuild the same validation split and calibration (so the front's own BN
statistics and accuracies come out identical when recomputed), keep the front bit for bit, and
add only new channel vectors.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from datagen import write_fashion_mnist
from pareco import models
from pareco.candidates import load_training_data, main, rounded
from pareco.evaluate import eval_mode
from pareco.front import calibrate_and_validate
from pareco.train import main as train
from pareco.weightfile import load_zoo_model
from tinymodel import write_tiny_zoo_model

from test_train_cli import tiny_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    data_dir = write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=320, n_test=96)
    out = tmp_path_factory.mktemp("run") / "slim"
    assert train(tiny_args(data_dir, out, "--method", "slim")) == 0
    return out / "model.safetensors", data_dir


def test_rounding_moves_every_group_to_an_allowed_multiple():
    space = models.build("resnet20", num_classes=10, in_channels=1, image_size=8).width_space
    assert space.channels(rounded(space, space.smallest, 8)) == (8, 8, 16, 16, 24, 24)
    assert space.channels(rounded(space, space.full, 8)) == (16, 16, 32, 32, 64, 64)
    mid = space.validate([13 / 16, 11 / 16, 21 / 32, 27 / 32, 45 / 64, 60 / 64])
    assert space.channels(rounded(space, mid, 8)) == (16, 8, 24, 24, 48, 64)  # 12 -> 16 on a tie


def test_candidates_are_added_and_the_front_is_kept(trained, tmp_path):
    weights, data_dir = trained
    out = tmp_path / "with-candidates.safetensors"
    args = ["--weights", str(weights), "--out", str(out), "--data-dir", str(data_dir),
            "--no-download", "--round-to", "8", "--uniform-grid", "6", "--threads", "1", "--quiet"]
    assert main(args) == 0
    before, after = load_zoo_model(weights), load_zoo_model(out)
    assert after.front == before.front and after.meta["training"] == before.meta["training"]
    old, new = load_file(str(weights)), load_file(str(out))
    for key, t in old.items():  # weights and the front's BN statistics, bit for bit
        if not key.startswith("bn/k"):
            assert torch.equal(new[key], t), key
    by_channels = {c.channels: c for c in after.candidates}
    assert before.candidates  # the training run's own candidates are kept (re-numbered)
    for c in before.candidates:
        kept = by_channels[c.channels]
        assert kept.val_acc == c.val_acc
        for key, (mean, _) in before.bn_stats[c.id].items():
            assert torch.equal(after.bn_stats[kept.id][key][0], mean)
    channels = [c.channels for c in after.configs]
    assert len(set(channels)) == len(channels)  # nothing calibrated twice
    assert [c.id for c in after.candidates] == [f"k{i:02d}" for i in range(len(after.candidates))]
    space = after.net.width_space
    eights = {space.channels(rounded(space, c.alpha, 8)) for c in before.front}
    assert eights - {c.channels for c in before.front} <= set(channels)
    assert all(0 <= c.val_acc <= 1 and c.test_acc is None for c in after.candidates)
    # running it again adds nothing new and keeps what was there
    assert main(["--weights", str(out), *args[4:]]) == 0
    assert load_zoo_model(out).candidates == after.candidates


def test_the_validation_split_and_calibration_are_the_trainings(trained):
    weights, data_dir = trained
    zoo = load_zoo_model(weights)
    data = load_training_data(zoo, data_dir, download=False)
    front = zoo.meta["training"]["recipe"]["front"]
    with eval_mode(zoo.net):
        stats, acc = calibrate_and_validate(zoo.net, [c.alpha for c in zoo.front], data,
                                            calib_images=front["calib_images"],
                                            val_images=front["val_images"],
                                            batch_size=front["batch_size"], device="cpu")
    assert acc == [c.val_acc for c in zoo.front]
    for c, s in zip(zoo.front, stats):
        for key, (mean, var) in s.items():
            torch.testing.assert_close(mean, zoo.bn_stats[c.id][key][0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(var, zoo.bn_stats[c.id][key][1], rtol=1e-5, atol=1e-6)


def test_bad_input_is_refused_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as usage:
        main(["--weights", str(tmp_path / "x.safetensors"), "--round-to", "0"])
    assert usage.value.code == 2
    assert "argument --round-to: expected a positive integer, got '0'" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "absent.safetensors")]) == 1
    assert "no such weight file" in capsys.readouterr().err
    untrained = write_tiny_zoo_model(tmp_path / "tiny.safetensors")  # no training section
    assert main(["--weights", str(untrained), "--no-download"]) == 1
    assert "names no recipe data" in capsys.readouterr().err
