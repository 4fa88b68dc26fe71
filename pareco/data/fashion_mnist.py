"""Fashion-MNIST from its four original IDX files.

A folder holds the dataset if it contains the files directly (the layout of the Debian package
``dataset-fashion-mnist`` in /usr/share/datasets/fashion-mnist) or in ``FashionMNIST/raw/``
(torchvision's layout), each gzip-compressed (``.gz``) or not.
"""

from __future__ import annotations

from pathlib import Path

from pareco.data.errors import DataError
from pareco.data.idx import read_idx
from pareco.data.small import RawImages, SmallSpec

SPEC = SmallSpec(title="Fashion-MNIST", mean=(0.2860,), std=(0.3530,), crop_padding=2)

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")

FILES = {  # role -> IDX file name without .gz
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def find(folder: Path) -> dict[str, Path] | None:
    """The four IDX files (role -> path) in ``folder``, or ``None`` if it holds none of them.

    Raises :class:`DataError` if a layout holds some of the files but not all.
    """
    for sub in (folder, folder / "FashionMNIST" / "raw"):
        found: dict[str, Path] = {}
        for role, name in FILES.items():
            for candidate in (sub / name, sub / f"{name}.gz"):  # uncompressed reads faster
                if candidate.is_file():
                    found[role] = candidate
                    break
        if len(found) == len(FILES):
            return found
        if found:
            missing = [f"{FILES[r]}(.gz)" for r in FILES if r not in found]
            raise DataError(f"Fashion-MNIST in {sub} is incomplete: {', '.join(missing)} "
                            f"missing; restore the files or point data_dir elsewhere")
    return None


def download(cache: Path) -> None:
    """Download the IDX files into ``cache/FashionMNIST/raw`` through torchvision."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(root=str(cache), train=True, download=True)


def read(files: dict[str, Path]) -> RawImages:
    """Read and cross-check the four IDX files returned by :func:`find`."""
    splits = {}
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"], ndim=3)
        labels = read_idx(files[f"{split}_labels"], ndim=1).long()
        if len(labels) != len(images):
            raise DataError(f"{files[f'{split}_labels']} holds {len(labels)} labels but "
                            f"{files[f'{split}_images']} holds {len(images)} images; the files "
                            f"do not belong together")
        if len(labels) and int(labels.max()) >= len(CLASS_NAMES):
            raise DataError(f"{files[f'{split}_labels']} holds label {int(labels.max())}, "
                            f"outside 0..{len(CLASS_NAMES) - 1}; the file is corrupt")
        splits[split] = (images.unsqueeze(1), labels)
    return RawImages(*splits["train"], *splits["test"], class_names=CLASS_NAMES)
