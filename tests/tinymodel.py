"""Tiny weight files for the export / serve / bench tests, written by the real ``save_zoo_model``.

    >>> path = write_tiny_zoo_model(tmp_path / "model.safetensors", size=12)
    >>> load_zoo_model(path).front   # c00 (smallest width) and c01 (full width)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from pareco import models
from pareco.calibrate import calibrate_bn
from pareco.weightfile import Preprocessing, front_config, save_zoo_model


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_tiny_zoo_model(path: Path, size: int = 12, classes: Sequence[str] | None = None,
                         middle: Sequence[float] | None = None, n_images: int = 8,
                         candidates: Sequence[tuple[Sequence[float], float]] = ()) -> Path:
    """A random-weight ResNet20 on ``size``x``size`` grey images with a 2-config front (smallest,
    full) or 3 (with ``middle``), plus ``candidates`` off the front (``(alpha, val_acc)``, ids
    ``k00, k01, ...`` in the given order); BN statistics are calibrated on random images.
    Returns ``path``.

    Validation accuracies (0.7, 0.8, ...) and test accuracies (0.68, 0.78, ...) are made up but
    increase with MFLOPs, as a front requires.
    """
    classes = list(classes or (f"class-{i}" for i in range(10)))
    torch.manual_seed(0)
    with torch_threads(1):  # a tiny model: one thread is fastest on a busy 2-core machine
        net = models.build("resnet20", num_classes=len(classes), in_channels=1, image_size=size)
        images = torch.randn(n_images, 1, size, size)
        alphas = [net.width_space.smallest] + ([list(middle)] if middle else []) + [net.width_space.full]
        front = [front_config(net, f"c{i:02d}", a, val_acc=0.7 + i / 10, test_acc=0.68 + i / 10)
                 for i, a in enumerate(alphas)]
        others = [front_config(net, f"k{i:02d}", a, val_acc=acc)
                  for i, (a, acc) in enumerate(candidates)]
        stats = {c.id: calibrate_bn(net, c.alpha, [images]) for c in front + others}
        save_zoo_model(path, net, front, stats, classes=classes, candidates=others,
                       preprocessing=Preprocessing(size, 1, (0.286,), (0.353,)))
    return path
