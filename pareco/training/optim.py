"""SGD with weight decay only on conv/linear weights, and the per-step learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pareco.training.recipe import TrainSpec


def build_optimizer(net: nn.Module, spec: TrainSpec) -> torch.optim.SGD:
    """SGD (momentum, nesterov per ``spec``); no weight decay on BN parameters and biases.

    Group 0 holds the decayed weights (tensors with >= 2 dims), group 1 the 1-D ones; the order of
    parameters is ``net.parameters()``'s, so optimizer state maps back to names reproducibly.
    """
    decay = [p for p in net.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": spec.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov,
    )


@dataclass(frozen=True)
class LRSchedule:
    """``lr(step)`` for optimizer steps ``0 .. total_steps - 1``.

    Linear warm-up from ``peak / warmup_steps`` to ``peak`` over the first ``warmup_steps`` steps,
    then ``cosine`` or ``linear`` decay to 0 at ``total_steps`` (or ``constant``). A pure function of
    the step, so resuming needs only the step counter.
    """

    peak: float
    total_steps: int
    warmup_steps: int = 0
    kind: str = "cosine"

    @classmethod
    def from_spec(cls, spec: TrainSpec, steps_per_epoch: int, epochs: int) -> "LRSchedule":
        total = steps_per_epoch * epochs
        warmup = min(total, round(spec.warmup_epochs * steps_per_epoch))
        return cls(spec.lr, total, warmup, spec.schedule)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.peak
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "cosine":
            return self.peak * 0.5 * (1.0 + math.cos(math.pi * t))
        return self.peak * (1.0 - t)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's learning rate for ``step``; returns it."""
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
