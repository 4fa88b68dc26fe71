"""``bench/methods.py --protocol quick`` end to end on tiny generated Fashion-MNIST: real CLI runs of
every method, two cells at a time, then the report (fronts, areas, matched MFLOPs, times, ratio,
plot); one result file per cell; a second invocation that reuses the cells' files instead of
training again, even without the run folders (a later session on a new machine)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datagen import write_fashion_mnist

REPO = Path(__file__).resolve().parents[1]
METHODS = ("slim", "pareco", "twostage", "independent")
NETWORKS = ("resnet20_half",)  # both networks take the same code path; one keeps it fast


def _bench(tmp_path: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "methods.py"), "--protocol", "quick",
         "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"),
         "--cells-dir", str(tmp_path / "cells"), "--out", str(tmp_path / "methods.json"),
         "--threads", "1", *extra],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def finite(x) -> bool:
    return isinstance(x, (int, float)) and x == x


@pytest.mark.slow
def test_quick_methods_benchmark(tmp_path):
    data = write_fashion_mnist(tmp_path / "fmnist", n_train=200, n_test=64, seed=0)
    proc = _bench(tmp_path, data, "--networks", ",".join(NETWORKS), "--parallel", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "methods.json").read_text())

    assert res["complete"] and res["protocol"]["quick"]
    assert "methods.py" in res["environment"]["command"]
    assert {(r["network"], r["method"], r["status"]) for r in res["runs"]} == {
        (n, m, "trained") for n in NETWORKS for m in METHODS}
    assert set(res["networks"]) == set(NETWORKS)
    for network, nd in res["networks"].items():
        lo, hi = nd["mflops_range"]
        assert 0 < lo < hi
        assert set(nd["methods"]) == set(METHODS)
        for method, d in nd["methods"].items():
            front = d["fronts"]["0"]
            assert front and all(0 <= p["test_acc"] <= 1 and p["mflops"] > 0 for p in front)
            assert [p["mflops"] for p in front] == sorted(p["mflops"] for p in front)
            assert 0 <= d["area"]["mean"] <= 1 and d["area"]["n"] == 1
            assert len(d["matched"]) == len(nd["budgets"])
            full = d["matched"]["1"]["mean"]          # every method has a model within full MACs
            assert finite(full) and 0 <= full <= 1
            t = d["times"]
            assert t["wall_s"]["mean"] > 0 and t["train_s"]["mean"] > 0 and t["front_s"]["mean"] > 0
            assert t["training_s"]["mean"] >= t["train_s"]["mean"]
        assert nd["methods"]["twostage"]["times"]["search_s"]["mean"] > 0
        assert nd["methods"]["slim"]["times"]["search_s"]["mean"] == 0
        assert nd["methods"]["pareco"]["search"]["0"]["history_size"] >= 6
        assert nd["methods"]["pareco"]["search"]["0"]["duplicate_proposals"] == 0
        # independent: one point per width, at exactly those widths
        assert {p["width"] for p in nd["methods"]["independent"]["fronts"]["0"]} == {0.316, 1.0}
        vs = nd["vs_slim"]
        assert set(vs) == {"pareco", "twostage", "independent"}
        assert finite(vs["pareco"]["area_delta"]["mean"])
        assert finite(vs["pareco"]["matched_delta"]["1"]["mean"])
        ratio = vs["pareco"]["time_ratio_training_s"]["mean"]
        assert finite(ratio) and ratio > 0
    png = Path(res["plot"])
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| pareco |" in proc.stdout and "Δ pareco−slim" in proc.stdout
    assert "training time PareCO / Slim" in proc.stdout

    cells = sorted(p.relative_to(tmp_path / "cells").as_posix() for p in (tmp_path / "cells").rglob("*.json"))
    assert cells == sorted(f"resnet20_half/{m}-seed0.json" for m in METHODS)

    # resumable from the cell files alone: a second invocation without the run folders trains
    # nothing and reports the same fronts
    shutil.rmtree(tmp_path / "runs")
    again = _bench(tmp_path, data, "--methods", "slim,pareco", "--networks", "resnet20_half")
    assert "training ->" not in again.stdout
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    res2 = json.loads((tmp_path / "methods.json").read_text())
    assert {r["status"] for r in res2["runs"]} == {"reused"}
    assert res2["networks"]["resnet20_half"]["methods"]["pareco"]["fronts"] == \
        res["networks"]["resnet20_half"]["methods"]["pareco"]["fronts"]

    # a cell records the recipe it was trained with: an option added since with a null default
    # (the old behaviour) leaves it reused; once a default changes it is not reused
    cell = tmp_path / "cells" / "resnet20_half" / "pareco-seed0.json"
    doc = json.loads(cell.read_text())
    assert doc["recipe"]["pareco"].pop("proposals_from") is None  # as if trained before it
    cell.write_text(json.dumps(doc))
    older = _bench(tmp_path, data, "--methods", "pareco", "--networks", "resnet20_half",
                   "--report-only")
    assert older.returncode == 0, older.stderr[-3000:]
    now = doc["recipe"]["pareco"]["proposals"]
    assert doc["recipe"]["method"] == "pareco" and now != 7
    doc["recipe"]["pareco"]["proposals"] = 7
    cell.write_text(json.dumps(doc))
    stale = _bench(tmp_path, data, "--methods", "pareco", "--networks", "resnet20_half",
                   "--report-only")
    assert stale.returncode == 2
    assert (f"was trained with another recipe (pareco.proposals: 7 then, {json.dumps(now)} now)"
            in stale.stderr)


def test_a_cell_file_of_other_arguments_is_refused(tmp_path):
    data = write_fashion_mnist(tmp_path / "fmnist", n_train=200, n_test=64, seed=0)
    cell = tmp_path / "cells" / "resnet20" / "slim-seed0.json"
    cell.parent.mkdir(parents=True)
    cell.write_text(json.dumps({"protocol_argv": ["--epochs", "99"], "run": {}}))
    proc = _bench(tmp_path, data, "--methods", "slim", "--networks", "resnet20", "--report-only")
    assert proc.returncode == 2
    assert "holds a result of other arguments" in proc.stderr


def test_other_arguments_in_a_run_folder_are_refused(tmp_path):
    data = write_fashion_mnist(tmp_path / "fmnist", n_train=200, n_test=64, seed=0)
    folder = tmp_path / "runs" / "resnet20" / "slim" / "seed0"
    folder.mkdir(parents=True)
    (folder / "bench.json").write_text(json.dumps({"argv": ["--epochs", "99"]}))
    proc = _bench(tmp_path, data, "--methods", "slim", "--networks", "resnet20")
    assert proc.returncode == 2
    assert "trained with other arguments" in proc.stderr


def test_a_cell_commit_waits_out_a_held_index_and_never_raises(tmp_path, monkeypatch, capsys):
    from bench import methods

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    for key, value in (("user.name", "t"), ("user.email", "t@t")):
        subprocess.run([*git, "config", key, value], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "root"], check=True)
    monkeypatch.setattr(methods, "REPO", repo)
    cell = repo / "cells" / "slim-seed0.json"
    cell.parent.mkdir()
    cell.write_text("{}\n")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")  # another git process holds the index
    assert methods.commit_cell(cell, "cell", tries=2, wait_s=0.0) is False
    assert "could not commit cells/slim-seed0.json" in capsys.readouterr().err
    lock.unlink()
    assert methods.commit_cell(cell, "bench: slim seed 0", tries=2, wait_s=0.0) is True
    log = subprocess.run([*git, "log", "--format=%s", "--name-only", "-1"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert log[:4] == ["bench:", "slim", "seed", "0"] and log[-1] == "cells/slim-seed0.json"
