"""End-to-end tests of ``python -m pareco.train`` on a tiny generated Fashion-MNIST (IDX files).

Every method runs through the real CLI (``main(argv)`` in-process, or a subprocess where the
process must die) with tiny settings: 16x16 images, 256 training images, a few steps.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from datagen import write_cifar, write_fashion_mnist
from pareco.pareto import nondominated
from pareco.train import main
from pareco.weightfile import load_zoo_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=320, n_test=96, seed=0)


def tiny_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    """A run of 8 steps per epoch on 16x16 images with tiny search and front settings."""
    return ["--data-dir", str(data_dir), "--no-download", "--out", str(out), "--subset", "320",
            "--val-size", "64", "--batch-size", "32", "--epochs", "1", "--history-size", "8",
            "--eval-batch", "32", "--calib-images", "64", "--threads", "1", "--quiet",
            "--set", "data.image_size=16", "--set", "pareco.warmup_configs=4",
            "--set", "front.uniform_grid=4", "--set", "pareco.max_overhead=1", *extra]


def check_weight_file(path: Path, method: str) -> dict:
    """The file loads; its front is non-dominated in (MFLOPs, val acc) and its costs are exact."""
    zoo = load_zoo_model(path)
    assert zoo.meta["training"]["method"] == method
    assert zoo.preprocessing.image_size == 16 and zoo.preprocessing.channels == 1
    assert len(zoo.classes) == 10
    points = np.array([[c.mflops, c.val_acc] for c in zoo.front])
    assert len(nondominated(points, maximize=[False, True])) == len(zoo.front)
    for c in zoo.front:
        assert c.macs == zoo.net.macs(c.alpha)
        assert c.mflops == pytest.approx(zoo.net.macs(c.alpha) / 1e6)
        assert 0.0 <= c.test_acc <= 1.0
        x = torch.zeros(2, 1, 16, 16)
        assert torch.isfinite(zoo.net(x, c.alpha, zoo.bn_stats[c.id])).all()
    return zoo.meta["training"]


def log_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("method", ["slim", "pareco", "twostage"])
def test_sandwich_methods_end_to_end(method: str, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / method
    assert main(tiny_args(data_dir, out, "--method", method)) == 0
    training = check_weight_file(out / "model.safetensors", method)
    assert training["steps"] == 8 and training["epochs"] == 1 and training["seed"] == 0
    assert training["recipe"]["method"] == method
    assert training["recipe"]["train"]["batch_size"] == 32
    assert not (out / "train_state.safetensors").exists()
    for name in ("front.json", "front.png", "widths.png", "README.md", "run.json"):
        assert (out / name).is_file(), name
    index = json.loads((tmp_path / "index.json").read_text())
    assert [e["name"] for e in index] == [method]
    events = log_events(out / "train_log.jsonl")
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 9))
    assert [e["event"] for e in events][-2:] == ["front", "done"]
    if method == "pareco":
        # 8 steps, |H| target 8 with M=2 and the 2 anchors: a refresh every 3 steps, 3 of them
        assert training["search"]["history_size"] == 8
        assert training["search"]["steps_per_refresh"] == 3
        refreshes = [e for e in events if e["event"] == "refresh"]
        assert [e["step"] for e in refreshes] == [0, 3, 6]
        assert [e["history"] for e in refreshes] == [4, 6, 8]
        assert [e["phase"] for e in refreshes] == ["warmup", "search", "search"]
        assert all(e["duplicates"] == 0 for e in refreshes[1:])
        # the two searched refreshes (|H| = 4, 6), then the final filter (|H| = 8, 2 batches)
        assert training["search"]["h_eval_forwards"] == 4 + 6 + 2 * 8
        assert training["search"]["duplicate_proposals"] == 0
    if method == "twostage":
        assert training["search"]["history_size"] == 8
        assert sum(e["event"] == "search" for e in events) >= 3  # 2 anchors + 3 x M = 8


def test_a_new_run_over_a_finished_one_starts_its_own_log(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "slim"
    for seed in ("0", "1"):
        assert main(tiny_args(data_dir, out, "--method", "slim", "--seed", seed)) == 0
    events = log_events(out / "train_log.jsonl")
    assert [e["event"] for e in events].count("start") == 1 and events[0]["seed"] == 1
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 9))


def train_pareco(data_dir: Path, out: Path, *settings: str) -> tuple[dict, list[dict]]:
    """A tiny pareco run with ``--set`` overrides: its weight file's training document and the
    refresh events of its log."""
    sets = [arg for setting in settings for arg in ("--set", setting)]
    assert main(tiny_args(data_dir, out, "--method", "pareco", *sets)) == 0
    training = check_weight_file(out / "model.safetensors", "pareco")
    refreshes = [e for e in log_events(out / "train_log.jsonl") if e["event"] == "refresh"]
    return training, refreshes


def test_pareco_with_a_uniform_middle_config_searches_one_per_refresh(data_dir: Path,
                                                                     tmp_path: Path) -> None:
    training, refreshes = train_pareco(data_dir, tmp_path / "mixed", "pareco.uniform_middle=1")
    assert training["recipe"]["pareco"]["uniform_middle"] == 1
    history = [e["history"] for e in refreshes]
    assert history == list(range(3, 3 + len(refreshes)))  # the 2 anchors + 1 per refresh
    assert training["search"]["history_size"] == history[-1]
    assert any(e["phase"] == "search" for e in refreshes)


def test_pareco_with_a_proposal_set_proposes_k_and_keeps_m_in_h(data_dir: Path,
                                                              tmp_path: Path) -> None:
    training, refreshes = train_pareco(data_dir, tmp_path / "proposals", "pareco.proposals=4")
    assert training["recipe"]["pareco"]["proposals"] == 4
    assert training["search"]["proposals_per_refresh"] == 4
    assert [e["history"] for e in refreshes] == list(range(4, 4 + 2 * len(refreshes), 2))
    searched = [e for e in refreshes if e["phase"] == "search"]
    assert searched and all(len(e["targets"]) == 4 and e["duplicates"] == 0 for e in searched)


def test_a_proposal_set_from_half_of_training_starts_there(data_dir: Path, tmp_path: Path) -> None:
    training, refreshes = train_pareco(data_dir, tmp_path / "later", "pareco.proposals=4",
                                       "pareco.proposals_from=0.5")
    assert training["recipe"]["pareco"]["proposals_from"] == 0.5
    total = training["steps"]
    assert training["search"]["proposal_set_from_step"] == math.ceil(0.5 * total)
    assert [e["history"] for e in refreshes] == list(range(4, 4 + 2 * len(refreshes), 2))


def test_bf16_precision_trains_under_autocast_and_ships_float32(data_dir: Path,
                                                               tmp_path: Path) -> None:
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert main(tiny_args(data_dir, out, "--method", "slim", "--precision", precision)) == 0
        training = check_weight_file(out / "model.safetensors", "slim")
        assert training["recipe"]["train"]["precision"] == precision
        zoo = load_zoo_model(out / "model.safetensors")
        assert all(p.dtype == torch.float32 for p in zoo.net.parameters())
        losses[precision] = [e["loss"] for e in log_events(out / "train_log.jsonl")
                             if e["event"] == "step"]
    # the same first batch and weights: bfloat16 rounding moves the loss a little, not a lot
    first32, first16 = losses["fp32"][0], losses["bf16"][0]
    assert first16 != first32 and abs(first16 - first32) < 0.02 * first32
    assert all(math.isfinite(v) for v in losses["bf16"])


def test_independent_writes_one_weight_file_per_width(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ind"
    args = tiny_args(data_dir, out, "--method", "independent", "--set",
                     "independent.widths=[0.316, 1.0]")
    assert main(args) == 0
    index = {e["name"]: e for e in json.loads((out / "index.json").read_text())}
    assert set(index) == {"w0.316", "w1.000"}
    for w in (0.316, 1.0):
        folder = out / f"w{w:.3f}"
        training = check_weight_file(folder / "model.safetensors", "independent")
        zoo = load_zoo_model(folder / "model.safetensors")
        assert [c.alpha for c in zoo.front] == [(w,) * 6]
        assert training["width"] == w and training["steps"] == 8
    assert index["w0.316"]["full_mflops"] == index["w1.000"]["full_mflops"]


def _default_sigint() -> None:
    """In the child: Ctrl-C handled as by an interactive shell, even when this test runs as a
    background job (which inherits SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pareco.train", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=300, preexec_fn=_default_sigint)


@pytest.mark.parametrize("signal_name, saved_at, status", [("SIGKILL", 4, -9), ("SIGTERM", 5, 143),
                                                             ("SIGINT", 5, 130)])
def test_resume_after_a_stop_continues_exactly(signal_name: str, saved_at: int, status: int,
                                               data_dir: Path, tmp_path: Path) -> None:
    """A signal after step 5 (checkpoint every 2 steps), then --resume: the step count continues
    from the saved state and the final weights equal those of an uninterrupted run. SIGKILL
    leaves the checkpoint of step 4; SIGTERM and Ctrl-C save the state of step 5 on the way out."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert main(tiny_args(data_dir, ref)) == 0  # pareco: the richest resume state
    args = tiny_args(data_dir, cut, "--checkpoint-every", "2")
    killed = _run_cli(args, env={"PARECO_TEST_KILL_AT_STEP": "5",
                                 "PARECO_TEST_KILL_SIGNAL": signal_name})
    assert killed.returncode == status, killed.stderr
    if signal_name != "SIGKILL":
        assert f"stopped by {signal_name} after step 5; the state is saved, continue with " \
               "--resume" in killed.stderr
    assert (cut / "train_state.safetensors").is_file()
    assert not (cut / "model.safetensors").exists()
    assert [p.name for p in cut.iterdir() if p.name.endswith(".tmp")] == []
    steps = [e["step"] for e in log_events(cut / "train_log.jsonl") if e["event"] == "step"]
    assert steps == [1, 2, 3, 4, 5]

    again = _run_cli(args)  # no --resume: refuses to clobber the unfinished run
    assert again.returncode == 2 and "--resume" in again.stderr

    assert main(["--out", str(cut), "--resume", "--data-dir", str(data_dir), "--no-download",
                 "--subset", "320", "--quiet", "--threads", "1"]) == 0
    events = log_events(cut / "train_log.jsonl")
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 9))
    assert [e["step"] for e in events if e["event"] == "resume"] == [saved_at]
    check_weight_file(cut / "model.safetensors", "pareco")
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    params = [k for k in a if k.startswith("param/")]
    assert params and all(torch.equal(a[k], b[k]) for k in params)
    za, zb = load_zoo_model(ref / "model.safetensors"), load_zoo_model(cut / "model.safetensors")
    assert [c.alpha for c in za.front] == [c.alpha for c in zb.front]


def _error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "no-such-recipe"], "unknown recipe"),
    (["--method", "magic"], "invalid choice"),
    (["--epochs", "0"], "positive integer"),
    (["--batch-size", "many"], "positive integer"),
    (["--lr", "-0.1"], "positive number"),
    (["--device", "tpu"], "unknown device"),
    (["--set", "train.schedule=sawtooth"], "train.schedule"),
    (["--set", "train.epochz=3"], "unknown recipe key"),
    (["--set", "model.arch=resnet7"], "unknown model"),
    (["--set", "data.dataset=mnist"], "unknown value 'mnist'"),
    (["--data-dir", "/nonexistent/folder"], "is not a folder"),
])
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert message in _error_line(capsys)


def test_bad_recipe_file_and_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {arch: resnet20}\ndata: {dataset: cifar10}\n"
                   "train: {epochs: 1, lr: fast}\n")
    assert main(["--recipe", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "train.lr must be a number" in _error_line(capsys)

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PARECO_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--recipe", "resnet20-cifar10", "--data-dir", str(empty), "--no-download",
                 "--out", str(tmp_path / "o")]) == 2
    assert "CIFAR-10 was not found" in _error_line(capsys)


def test_unwritable_output_and_nothing_to_resume(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["--out", str(blocker / "run")]) == 2
    assert "not writable" in _error_line(capsys)
    assert main(["--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in _error_line(capsys)


def test_resume_refuses_other_settings(data_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r"
    killed = _run_cli(tiny_args(data_dir, out, "--method", "slim", "--checkpoint-every", "1"),
                      env={"PARECO_TEST_KILL_AT_STEP": "1"})
    assert killed.returncode == -9, killed.stderr
    capsys.readouterr()
    assert main(["--out", str(out), "--resume", "--seed", "3", "--data-dir", str(data_dir),
                 "--subset", "320", "--quiet"]) == 2
    assert "belongs to another run (seed: saved 0, now 3)" in _error_line(capsys)


def test_list_recipes(capsys: pytest.CaptureFixture) -> None:
    assert main(["--list-recipes"]) == 0
    out = capsys.readouterr().out
    for name in ("resnet20-fashionmnist", "resnet56-cifar100", "resnet20_5x-cifar100"):
        assert name in out
    assert "INVALID" not in out


def test_cifar_layout_runs(tmp_path: Path) -> None:
    """The CIFAR-100 recipe path (pickled batches, 3 channels, 100 classes) through the CLI."""
    root = write_cifar(tmp_path / "c100", "cifar100", n_train=160, n_test=50, seed=0)
    out = tmp_path / "c"
    args = ["--recipe", "resnet20-cifar100", "--method", "slim", "--data-dir", str(root),
            "--no-download", "--out", str(out), "--subset", "160", "--val-size", "32",
            "--batch-size", "32", "--epochs", "1", "--calib-images", "32", "--quiet",
            "--workers", "0", "--set", "data.image_size=16", "--set", "front.uniform_grid=3"]
    assert main(args) == 0
    zoo = load_zoo_model(out / "model.safetensors")
    assert len(zoo.classes) == 100 and zoo.preprocessing.channels == 3
    assert zoo.meta["training"]["recipe"]["train"]["epochs"] == 1


def test_batch_larger_than_the_data_is_bad_input(data_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    args = tiny_args(data_dir, tmp_path / "b")
    args[args.index("--batch-size") + 1] = "1000"
    assert main(args) == 2
    assert "train.batch_size=1000 exceeds the 256 training images" in _error_line(capsys)
