"""Tiny datasets written in the REAL on-disk formats, so tests run the real loading code.

Images are learnable: each class has a smooth random template (symmetric left-right, so random
flips keep it, and low-frequency, so small random crops barely change it) plus pixel noise; a
small network separates the classes well above chance within a few epochs.

    >>> root = write_fashion_mnist(tmp_path, n_train=200, n_test=50)
    >>> load_data("fashion-mnist", data_dir=root, download=False)
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def class_images(labels: np.ndarray, n_classes: int, channels: int, size: int,
                 rng: np.random.Generator, template_seed: int = 1234) -> np.ndarray:
    """``N x channels x size x size`` uint8 images whose content depends on ``labels``.

    The class templates depend only on ``(n_classes, channels, size, template_seed)``, so train
    and test images written with different ``rng`` share them.
    """
    trng = np.random.default_rng(template_seed)
    grid = trng.uniform(0.0, 1.0, (n_classes, channels, 4, 4))
    grid = (grid + grid[..., ::-1]) / 2  # left-right symmetric
    coords = np.linspace(0, 3, size)
    lo = np.floor(coords).astype(int).clip(0, 2)
    frac = coords - lo
    rows = grid[..., lo, :] * (1 - frac)[:, None] + grid[..., lo + 1, :] * frac[:, None]
    templates = rows[..., lo] * (1 - frac) + rows[..., lo + 1] * frac  # bilinear upsampling
    images = 40 + 170 * templates[labels] + rng.normal(0, 20, (len(labels), channels, size, size))
    return images.round().clip(0, 255).astype(np.uint8)


def _labels(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Balanced, shuffled labels."""
    return rng.permutation(np.arange(n) % n_classes)


def write_fashion_mnist(root: str | Path, n_train: int = 200, n_test: int = 50, seed: int = 0,
                        gz: bool = True, layout: str = "flat") -> Path:
    """Write the four Fashion-MNIST IDX files (28x28, 10 classes) and return ``root``.

    ``layout="flat"``: files directly in ``root`` (the Debian package's layout);
    ``"torchvision"``: in ``root/FashionMNIST/raw``. ``gz`` compresses them.
    """
    if layout not in ("flat", "torchvision"):
        raise ValueError(f"layout must be 'flat' or 'torchvision', got {layout!r}")
    root = Path(root)
    folder = root if layout == "flat" else root / "FashionMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in ((0, n_train), (2, n_test)):
        labels = _labels(n, 10, rng)
        images = class_images(labels, 10, 1, 28, rng)[:, 0]
        for name, magic, array in ((FASHION_MNIST_FILES[prefix], 0x0803, images),
                                   (FASHION_MNIST_FILES[prefix + 1], 0x0801, labels)):
            header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
            data = header + array.astype(np.uint8).tobytes()
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as f:
                    f.write(data)
            else:
                (folder / name).write_bytes(data)
    return root


def write_cifar(root: str | Path, variant: str = "cifar10", n_train: int = 100,
                n_test: int = 50, seed: int = 0) -> Path:
    """Write CIFAR-10 (10 classes) or CIFAR-100 (100 classes) in torchvision's pickled layout
    (``root/cifar-10-batches-py`` or ``root/cifar-100-python``) and return ``root``.

    CIFAR-10 training images are spread over ``data_batch_1`` .. ``data_batch_5`` as in the
    original; the meta file carries the real class names.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    if variant == "cifar10":
        n_classes, folder, labels_key = 10, root / "cifar-10-batches-py", "labels"
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]
        meta_name, meta = "batches.meta", {"label_names": names, "num_cases_per_batch":
                                           -(-n_train // 5), "num_vis": 3072}
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
    elif variant == "cifar100":
        n_classes, folder, labels_key = 100, root / "cifar-100-python", "fine_labels"
        meta_name = "meta"
        meta = {"fine_label_names": [f"fine_{i:02d}" for i in range(100)],
                "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)]}
        train_files = ["train"]
    else:
        raise ValueError(f"variant must be 'cifar10' or 'cifar100', got {variant!r}")
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int, name: str) -> dict:
        labels = _labels(n, n_classes, rng)
        data = class_images(labels, n_classes, 3, 32, rng).reshape(n, 3072)
        out = {"batch_label": name, labels_key: labels.tolist(), "data": data,
               "filenames": [f"img_{i}.png" for i in range(n)]}
        if variant == "cifar100":
            out["coarse_labels"] = (labels // 5).tolist()
        return out

    chunks = np.array_split(np.arange(n_train), len(train_files))
    for name, chunk in zip(train_files, chunks):
        _pickle(folder / name, batch(len(chunk), name))
    _pickle(folder / ("test_batch" if variant == "cifar10" else "test"), batch(n_test, "test"))
    _pickle(folder / meta_name, meta)
    return root


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_imagefolder(root: str | Path, n_classes: int = 3, n_per_class: int = 8,
                      size: int = 40, n_val_per_class: int = 2, seed: int = 0,
                      ext: str = "png") -> Path:
    """Write RGB images in ImageFolder layout, ``root/{train,val}/class_XX/NNN.<ext>``
    (``ext``: ``png`` or ``jpg``), ``size x size`` pixels, and return ``root``."""
    if ext not in ("png", "jpg"):
        raise ValueError(f"ext must be 'png' or 'jpg', got {ext!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_per_class), ("val", n_val_per_class)):
        labels = np.repeat(np.arange(n_classes), n)
        images = class_images(labels, n_classes, 3, size, rng).transpose(0, 2, 3, 1)
        for i, (label, image) in enumerate(zip(labels, images)):
            folder = root / split / f"class_{label:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:04d}.{ext}")
    return root
