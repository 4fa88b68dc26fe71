"""Accuracy and cross-entropy of one sub-network on a labeled dataset.

    >>> r = evaluate(net, alpha, bn_stats, data.val, batch_size=256)
    >>> r.accuracy, r.cross_entropy, r.n          # fraction in [0, 1], mean nats per image, count

The network runs in eval mode (dropout off) under ``torch.inference_mode``; its training flag is
restored afterwards. ``bn_stats=None`` normalizes each batch with its own statistics (training-style
BN), so pass calibrated statistics (:func:`pareco.calibrate.calibrate_bn`) for a real evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from pareco.slim import BNStats
from pareco.width import AlphaLike

Batches = Iterable[tuple[Tensor, Tensor]]
"""Anything yielding ``(images N x C x H x W, labels N)`` batches, e.g. a ``DataLoader``."""


class EvalResult(NamedTuple):
    """``accuracy``: top-1 fraction in [0, 1]; ``cross_entropy``: mean over images, in nats;
    ``n``: number of images evaluated."""

    accuracy: float
    cross_entropy: float
    n: int


def as_batches(data: Dataset | Batches, batch_size: int = 256) -> Batches:
    """A map-style ``Dataset`` wrapped in an in-order ``DataLoader``; anything else as is."""
    if isinstance(data, Dataset):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    return data


@contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """Put ``net`` in eval mode for the block, restoring its previous mode afterwards."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def evaluate(net: nn.Module, alpha: AlphaLike, bn_stats: BNStats | None,
             loader_or_dataset: Dataset | Batches, *, device: torch.device | str = "cpu",
             batch_size: int = 256) -> EvalResult:
    """Top-1 accuracy and mean cross-entropy of ``net(x, alpha, bn_stats)`` over all items.

    ``loader_or_dataset`` is a map-style dataset of ``(image, int label)`` (batched here with
    ``batch_size``, in order) or any iterable of ``(images, labels)`` batches. Images are moved
    to ``device``; the network must already be there. Raises ``ValueError`` on an empty input.
    """
    correct, loss, n = 0, 0.0, 0
    with eval_mode(net), torch.inference_mode():
        for images, labels in as_batches(loader_or_dataset, batch_size):
            images = images.to(device, non_blocking=True)
            labels = torch.as_tensor(labels).to(device, non_blocking=True)
            logits = net(images, alpha, bn_stats)
            loss += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
            n += labels.shape[0]
    if n == 0:
        raise ValueError("evaluate() got no images")
    return EvalResult(correct / n, loss / n, n)
