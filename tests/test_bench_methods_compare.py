"""``bench/methods_compare.py``: cells from two folders, paired by seed against Slim."""

import json
from pathlib import Path

import pytest

from bench.methods_compare import confidence_interval, main

ARCH = {"name": "resnet20", "kwargs": {"num_classes": 10, "in_channels": 1, "image_size": 28,
                                       "width_factor": 0.25}}


def write_cell(folder: Path, method: str, seed: int, accs: list[float],
               status: str = "trained") -> None:
    front = [{"id": f"c{i}", "mflops": m, "test_acc": a, "val_acc": a, "alpha": [1.0]}
             for i, (m, a) in enumerate(zip((0.2, 1.0, 2.0), accs))]
    times = {"wall_s": 10.0, "training_s": 8.0, "train_s": 8.0, "search_s": 0.0, "front_s": 2.0}
    run = {"front": front, "times": times, "arch": ARCH}
    (folder / "resnet20_quarter").mkdir(parents=True, exist_ok=True)
    (folder / "resnet20_quarter" / f"{method}-seed{seed}.json").write_text(json.dumps(
        {"network": "resnet20_quarter", "method": method, "seed": seed, "status": status,
         "run": run}))


def test_a_variant_in_its_own_folder_is_paired_with_slim_by_seed(tmp_path, capsys):
    protocol, screen = tmp_path / "cells-resolve", tmp_path / "cells-screen"
    for seed in (0, 1):
        write_cell(protocol, "slim", seed, [0.80, 0.85, 0.90])
        write_cell(screen, "pareco", seed, [0.80, 0.86 + 0.01 * seed, 0.90])
    write_cell(screen, "pareco", 2, [0.9, 0.9, 0.9], status="failed")  # unfinished: left out
    assert main(["--network", "resnet20_quarter", f"slim={protocol}:slim",
                 f"variant={screen}:pareco"]) == 0
    out = capsys.readouterr().out
    assert "area on [0.200, 2.000] MFLOPs" in out
    # the staircase is 1 pp (seed 0) and 2 pp (seed 1) higher from 1 to 2 MFLOPs: +0.56, +1.11
    assert ("variant - slim: mean +0.83 pp, std 0.39 pp over 2 seed(s) (s0 +0.56, s1 +1.11); "
            "mean/std +2.12, above the spread; 95 % t-interval [-2.70, +4.36] pp") in out


def test_the_interval_is_students_t_of_the_paired_mean():
    # n = 4: t(0.975, 3) = 3.1824; half width 3.1824 * 2 / sqrt(4)
    lo, hi = confidence_interval({"n": 4, "mean": 1.0, "std": 2.0})
    assert lo == pytest.approx(1.0 - 3.182446) and hi == pytest.approx(1.0 + 3.182446)
    lo, hi = confidence_interval({"n": 4, "mean": 1.0, "std": 2.0}, level=0.90)
    assert hi - 1.0 == pytest.approx(2.353363)  # t(0.95, 3)


def test_a_mean_below_minus_the_spread_is_said_to_be_below(tmp_path, capsys):
    for seed in (0, 1):
        write_cell(tmp_path, "slim", seed, [0.80, 0.85, 0.90])
        write_cell(tmp_path, "pareco", seed, [0.80, 0.84 - 0.01 * seed, 0.90])
    assert main(["--network", "resnet20_quarter", f"slim={tmp_path}:slim",
                 f"worse={tmp_path}:pareco"]) == 0
    assert "mean/std -2.12, below the spread" in capsys.readouterr().out


def test_one_seed_has_no_spread(tmp_path, capsys):
    write_cell(tmp_path, "slim", 0, [0.80, 0.85, 0.90])
    write_cell(tmp_path, "pareco", 0, [0.80, 0.86, 0.90])
    assert main(["--network", "resnet20_quarter", f"slim={tmp_path}:slim",
                 f"one={tmp_path}:pareco"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "one - slim" in x)
    assert line.endswith("over 1 seed(s) (s0 +0.56)")


def test_bad_sources_say_what_is_expected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--network", "resnet20_quarter", "slim=cells"])
    assert "expected LABEL=CELLS_FOLDER:METHOD" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--network", "resnet20_quarter", f"x={tmp_path}:pareco"])
    assert "one source must be labelled slim" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no finished resnet20_quarter cells for slim"):
        main(["--network", "resnet20_quarter", f"slim={tmp_path}:slim"])
