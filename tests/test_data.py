"""pareco.data: every format loads from tiny files in its real on-disk layout."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
from pathlib import Path

import pytest
import torch

from datagen import write_cifar, write_fashion_mnist, write_imagefolder
from pareco.data import DATASETS, DataBundle, DataError, load_data
import pareco.data.load as load_module
from pareco.data import fashion_mnist, locate
from pareco.data.lighting import Lighting


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path_factory):
    """No test sees the real environment: empty cache, no $PARECO_DATA, no system folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("PARECO_DATA", raising=False)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {})


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=200, n_test=50)


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("c10"), "cifar10", n_train=120, n_test=30)


def _stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def _check_bundle(b: DataBundle, *, n_train: int, n_val: int, n_test: int, channels: int,
                  size: int, num_classes: int) -> None:
    assert (len(b.train), len(b.calib), len(b.val), len(b.test)) == (n_train, n_train, n_val,
                                                                      n_test)
    assert (b.in_channels, b.image_size, b.num_classes) == (channels, size, num_classes)
    assert len(b.mean) == len(b.std) == channels and len(b.class_names) == num_classes
    for split in (b.train, b.calib, b.val, b.test):
        x, y = split[0]
        assert x.dtype == torch.float32 and x.shape == (channels, size, size)
        assert type(y) is int and 0 <= y < num_classes


# ------------------------------------------------------------------------------ Fashion-MNIST
def test_fashion_mnist_loads_idx_with_normalization(fmnist_dir):
    b = load_data("fashion-mnist", data_dir=fmnist_dir, download=False, val_size=40)
    _check_bundle(b, n_train=160, n_val=40, n_test=50, channels=1, size=28, num_classes=10)
    assert b.mean == (0.2860,) and b.std == (0.3530,)
    assert b.class_names[0] == "T-shirt/top" and b.class_names[-1] == "Ankle boot"
    # calib is exactly the uint8 file content, normalized: invert and compare with the raw IDX
    raw = fashion_mnist.read(fashion_mnist.find(fmnist_dir))
    x, y = b.calib[0]
    j = int(b.calib.indices[0])
    pixels = (x * 0.3530 + 0.2860) * 255
    torch.testing.assert_close(pixels, raw.train_images[j].float(), atol=1e-3, rtol=0)
    assert y == int(raw.train_labels[j])
    assert sorted(torch.cat([_stack(b.calib)[1], _stack(b.val)[1]]).tolist()) == \
        sorted(raw.train_labels.tolist())


@pytest.mark.parametrize("gz,layout", [(False, "flat"), (True, "torchvision"),
                                       (False, "torchvision")])
def test_fashion_mnist_layouts(tmp_path, gz, layout):
    root = write_fashion_mnist(tmp_path, n_train=30, n_test=10, gz=gz, layout=layout)
    b = load_data("fashion-mnist", data_dir=root, download=False, val_size=5)
    assert (len(b.train), len(b.val), len(b.test)) == (25, 5, 10)


def test_fashion_mnist_resize_and_augmentation(fmnist_dir):
    b = load_data("fashion-mnist", data_dir=fmnist_dir, download=False, image_size=32)
    assert b.image_size == 32 and b.train[0][0].shape == (1, 32, 32)
    torch.manual_seed(0)
    first = _stack(b.train)[0]
    torch.manual_seed(0)
    again = _stack(b.train)[0]
    torch.manual_seed(1)
    other = _stack(b.train)[0]
    assert torch.equal(first, again), "augmentation must be reproducible from torch's seed"
    assert not torch.equal(first, other)
    assert not torch.equal(first, _stack(b.calib)[0]), "train must be augmented"
    plain = load_data("fashion-mnist", data_dir=fmnist_dir, download=False, image_size=32,
                      augment={"crop_padding": 0, "flip": False})
    assert torch.equal(_stack(plain.train)[0], _stack(plain.calib)[0])


def test_crop_flip_is_a_shifted_or_mirrored_copy(fmnist_dir):
    b = load_data("fashion-mnist", data_dir=fmnist_dir, download=False,
                  augment={"crop_padding": 2, "flip": True})
    clean = b.calib[3][0]
    background = (0 - 0.2860) / 0.3530
    for s in range(20):
        torch.manual_seed(s)
        x = b.train[3][0]
        candidates = []
        for img in (clean, clean.flip(-1)):
            padded = torch.nn.functional.pad(img, (2, 2, 2, 2), value=background)
            candidates += [padded[:, t:t + 28, l:l + 28] for t in range(5) for l in range(5)]
        assert any(torch.allclose(x, c) for c in candidates)


def test_corrupt_idx_files_raise_data_error_naming_the_file(tmp_path):
    root = write_fashion_mnist(tmp_path / "trunc", n_train=20, n_test=10, gz=False)
    path = root / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        load_data("fashion-mnist", data_dir=root, download=False)

    root = write_fashion_mnist(tmp_path / "magic", n_train=20, n_test=10)
    path = root / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + bytes(20))  # an images header in a labels file
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*magic"):
        load_data("fashion-mnist", data_dir=root, download=False)

    root = write_fashion_mnist(tmp_path / "gz", n_train=20, n_test=10)
    path = root / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_data("fashion-mnist", data_dir=root, download=False)


def test_incomplete_folder_names_missing_file(tmp_path):
    root = write_fashion_mnist(tmp_path, n_train=20, n_test=10)
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="incomplete.*t10k-images-idx3-ubyte"):
        load_data("fashion-mnist", data_dir=root, download=False)


# ------------------------------------------------------------------------------ lookup order
def test_missing_data_without_download_names_all_options(tmp_path):
    with pytest.raises(DataError) as info:
        load_data("fashion-mnist", data_dir=tmp_path, download=False)
    message = str(info.value)
    for option in ("--data-dir", "$PARECO_DATA", "apt-get install dataset-fashion-mnist",
                   "download=True", str(tmp_path)):
        assert option in message
    with pytest.raises(DataError, match="cannot be downloaded") as info:
        load_data("imagenet", data_dir=tmp_path, download=True)
    assert "--data-dir" in str(info.value) and "$PARECO_DATA" in str(info.value)


def test_env_var_system_dir_and_order(tmp_path, monkeypatch):
    env = write_fashion_mnist(tmp_path / "env", n_train=30, n_test=10)
    system = write_fashion_mnist(tmp_path / "system", n_train=40, n_test=10)
    arg = write_fashion_mnist(tmp_path / "arg", n_train=50, n_test=10)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"fashion-mnist": (system,)})
    sizes = lambda b: len(b.train) + len(b.val)  # noqa: E731
    assert sizes(load_data("fashion-mnist", download=False)) == 40
    monkeypatch.setenv("PARECO_DATA", str(env))
    assert sizes(load_data("fashion-mnist", download=False)) == 30
    assert sizes(load_data("fashion-mnist", data_dir=arg, download=False)) == 50
    # a data_dir without the dataset falls through to $PARECO_DATA
    assert sizes(load_data("fashion-mnist", data_dir=tmp_path / "empty", download=False)) == 30


def _with_download(monkeypatch, name, download):
    """Replace the downloader of dataset ``name`` (stands in for torchvision's network code)."""
    source = load_module._SOURCES[name]
    monkeypatch.setitem(load_module._SOURCES, name, dataclasses.replace(source, download=download))


def test_download_goes_to_user_cache_once(tmp_path, monkeypatch):
    calls = []

    def fake_download(cache):
        calls.append(cache)
        write_cifar(cache, "cifar10", n_train=20, n_test=10)

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _with_download(monkeypatch, "cifar10", fake_download)
    b = load_data("cifar10", data_dir=tmp_path / "empty", val_size=2)
    assert calls == [tmp_path / "xdg" / "pareco" / "data"] and len(b.train) == 18
    load_data("cifar10", val_size=2)  # found in the cache now: no second download
    assert len(calls) == 1
    assert not (tmp_path / "empty").exists()


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    def offline(cache):
        raise OSError("network unreachable")

    _with_download(monkeypatch, "fashion-mnist", offline)
    with pytest.raises(DataError, match="network unreachable.*apt-get install"):
        load_data("fashion-mnist", data_dir=tmp_path)


# ------------------------------------------------------------------------------ splits
def test_val_split_disjoint_deterministic_and_seeded(fmnist_dir):
    a = load_data("fashion-mnist", data_dir=fmnist_dir, download=False, val_size=0.25, seed=3)
    b = load_data("fashion-mnist", data_dir=fmnist_dir, download=False, val_size=0.25, seed=3)
    c = load_data("fashion-mnist", data_dir=fmnist_dir, download=False, val_size=0.25, seed=4)
    train, val = set(a.train.indices.tolist()), set(a.val.indices.tolist())
    assert len(val) == 50 and not train & val and train | val == set(range(200))
    assert torch.equal(a.calib.indices, a.train.indices)
    assert torch.equal(a.val.indices, b.val.indices)
    assert not torch.equal(a.val.indices, c.val.indices)
    assert torch.equal(_stack(a.val)[0], _stack(b.val)[0])
    default = load_data("fashion-mnist", data_dir=fmnist_dir, download=False)
    assert len(default.val) == 20  # min(5000, 10%)


def test_subset_keeps_first_images(fmnist_dir):
    full = load_data("fashion-mnist", data_dir=fmnist_dir, download=False, val_size=10)
    sub = load_data("fashion-mnist", data_dir=fmnist_dir, download=False, subset=60,
                    val_size=10)
    assert (len(sub.train), len(sub.val), len(sub.test)) == (50, 10, 50)
    assert set(sub.train.indices.tolist()) | set(sub.val.indices.tolist()) == set(range(60))
    assert torch.equal(sub.calib.images, full.calib.images[:60])


@pytest.mark.parametrize("kwargs,match", [
    ({"subset": 1}, "subset"), ({"subset": 201}, "subset=201 exceeds the 200"),
    ({"subset": 2.5}, "subset"), ({"val_size": 0}, "val_size"), ({"val_size": 200}, "val_size"),
    ({"val_size": 1.0}, "val_size"), ({"val_size": True}, "val_size"),
    ({"image_size": 4}, "image_size"), ({"augment": {"colour": 1}}, "valid options: crop_"),
    ({"augment": {"crop_padding": -1}}, "crop_padding"), ({"augment": {"flip": 1}}, "flip"),
])
def test_bad_arguments_raise_data_error(fmnist_dir, kwargs, match):
    with pytest.raises(DataError, match=match):
        load_data("fashion-mnist", data_dir=fmnist_dir, download=False, **kwargs)


def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError) as info:
        load_data("mnist")
    assert all(name in str(info.value) for name in DATASETS)


# ------------------------------------------------------------------------------ CIFAR
def test_cifar10_loads_pickled_batches(cifar10_dir):
    b = load_data("cifar10", data_dir=cifar10_dir, download=False, val_size=20)
    _check_bundle(b, n_train=100, n_val=20, n_test=30, channels=3, size=32, num_classes=10)
    assert b.class_names[:2] == ("airplane", "automobile")
    assert b.mean == (0.4914, 0.4822, 0.4465)
    x = _stack(b.calib)[0]
    assert x.mean().abs() < 1.5 and 0.1 < x.std() < 3


def test_cifar100_and_direct_folder(tmp_path):
    root = write_cifar(tmp_path, "cifar100", n_train=60, n_test=20)
    b = load_data("cifar100", data_dir=root / "cifar-100-python", download=False, val_size=10)
    _check_bundle(b, n_train=50, n_val=10, n_test=20, channels=3, size=32, num_classes=100)
    assert b.class_names[7] == "fine_07"


def test_corrupt_cifar_batch_raises_data_error(tmp_path):
    root = write_cifar(tmp_path, "cifar10", n_train=20, n_test=10)
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        load_data("cifar10", data_dir=root, download=False)
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="incomplete: test_batch missing"):
        load_data("cifar10", data_dir=root, download=False)


# ------------------------------------------------------------------------------ ImageNet
def test_imagefolder_loads_with_transforms(tmp_path):
    write_imagefolder(tmp_path / "imagenet", n_classes=3, n_per_class=6, size=40,
                             n_val_per_class=2)
    b = load_data("imagenet", data_dir=tmp_path, download=False, val_size=3, image_size=32,
                  augment={"color_jitter": 0.4, "lighting": 0.1, "crop_scale": (0.5, 1.0)})
    _check_bundle(b, n_train=15, n_val=3, n_test=6, channels=3, size=32, num_classes=3)
    assert b.class_names == ("class_00", "class_01", "class_02")
    assert sorted(y for _, y in (b.test[i] for i in range(6))) == [0, 0, 1, 1, 2, 2]
    torch.manual_seed(0)
    first = b.train[0][0]
    torch.manual_seed(0)
    assert torch.equal(first, b.train[0][0])
    assert torch.equal(b.calib[0][0], b.calib[0][0])
    assert not torch.equal(first, b.calib[0][0])


def test_imagefolder_without_val_is_a_data_error(tmp_path):
    write_imagefolder(tmp_path, n_classes=2, n_per_class=2, size=16)
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(DataError, match="no val/"):
        load_data("imagenet", data_dir=tmp_path)


def test_lighting_adds_one_color_offset_per_image():
    torch.manual_seed(0)
    image = torch.rand(3, 8, 8)
    out = Lighting(0.1)(image)
    offset = out - image
    assert offset.abs().max() > 0
    torch.testing.assert_close(offset, offset[:, :1, :1].expand_as(offset))
    assert torch.equal(Lighting(0.0)(image), image)


# ------------------------------------------------------------------------------ learnability
def test_generated_classes_are_separable(fmnist_dir):
    """Nearest class mean on the clean training images classifies the test set well."""
    b = load_data("fashion-mnist", data_dir=fmnist_dir, download=False)
    x, y = _stack(b.calib)
    xt, yt = _stack(b.test)
    means = torch.stack([x[y == k].mean(0) for k in range(10)]).flatten(1)
    pred = torch.cdist(xt.flatten(1), means).argmin(1)
    assert (pred == yt).float().mean() > 0.8


# ------------------------------------------------------------------------------ real data
REAL = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (REAL / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package(monkeypatch):
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"fashion-mnist": (REAL,)})
    b = load_data("fashion-mnist", download=False)
    assert len(b.train) + len(b.val) == 60000 and len(b.test) == 10000 and len(b.val) == 5000
