"""``python -m pareco.data``: the dataset check that ``make train`` runs before training."""

from pareco.data import locate
from pareco.data.__main__ import main
from datagen import write_fashion_mnist


def test_found_dataset_prints_its_splits(tmp_path, capsys):
    data = write_fashion_mnist(tmp_path / "fmnist", n_train=200, n_test=40, seed=0)
    assert main(["fashion-mnist", "--data-dir", str(data), "--no-download"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fashion-mnist: 200 training images") and "40 test images" in out


def test_missing_dataset_names_the_options(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PARECO_DATA", raising=False)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {})
    assert main(["--no-download", "--data-dir", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "dataset-fashion-mnist" in err and "--data-dir" in err
