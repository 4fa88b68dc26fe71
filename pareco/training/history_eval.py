"""Re-evaluating the cross-entropy of the history H on one held-out batch (PareCO's overhead).

Every configuration of H is run on the same batch with the current weights, in inference mode
(no autograd graph, no gradient buffers) and with batch-statistics BN, which reads no stored
statistics and writes none. Configurations run one after another -- their weight slices differ,
so they cannot share one forward -- but the batch is moved to the device once, and the loss is
summed on the device and copied back once. ``rows`` selects a shard of H (distributed training
evaluates disjoint shards on each rank and gathers them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pareco.models.base import SlimmableNet


def evaluate_history(net: SlimmableNet, alphas: Tensor, images: Tensor, labels: Tensor,
                     rows: range | None = None) -> Tensor:
    """Mean cross-entropy of each configuration ``alphas[i]`` (``i in rows``, default all) on
    ``(images, labels)``, as a float64 CPU tensor of ``len(rows)`` values (nats per image)."""
    rows = range(len(alphas)) if rows is None else rows
    device = next(net.parameters()).device
    x = images.to(device, non_blocking=True)
    y = labels.to(device, non_blocking=True)
    out = torch.empty(len(rows), dtype=torch.float64, device=device)
    was_training = net.training
    net.eval()  # the slimmable BN layers ignore the mode; this only affects foreign modules
    try:
        with torch.inference_mode():
            for j, i in enumerate(rows):
                logits = net(x, alphas[i], None)
                out[j] = F.cross_entropy(logits.float(), y).double()
    finally:
        net.train(was_training)
    return out.cpu()
