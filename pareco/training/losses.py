"""Losses of the sandwich rule: labels for the full network, in-place distillation for the rest."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def label_loss(logits: Tensor, labels: Tensor, smoothing: float) -> Tensor:
    """Mean cross-entropy against integer ``labels`` with label smoothing ``smoothing``."""
    return F.cross_entropy(logits, labels, label_smoothing=smoothing)


def distill_loss(logits: Tensor, teacher_probs: Tensor) -> Tensor:
    """Mean soft cross-entropy ``-sum_k p_k log softmax(logits)_k`` against the teacher's
    (detached) probabilities ``teacher_probs`` (in-place distillation, US-Nets)."""
    return -(teacher_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
