"""The one training loop shared by every method (so comparisons are fair).

Each optimizer step trains, on one batch:

- sandwich methods (``policy`` given): the full network on the labels (label smoothing), then the
  smallest configuration ``w0`` and the policy's ``M`` middle configurations against the detached
  softmax of the full network (in-place distillation); gradients of all ``M + 2`` losses
  accumulate before the single optimizer step;
- a single configuration (``alpha`` given, independent training): that sub-network on the labels.

BatchNorm always normalizes with batch statistics (``bn_stats=None``). Batch ``k`` of epoch ``e``
(its images and their augmentation) is a pure function of ``(seed, e, k)``, so a resumed run
continues exactly, whatever the number of data-loading workers.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pareco.data import DataBundle
from pareco.evaluate import evaluate
from pareco.models.base import SlimmableNet
from pareco.training import distributed
from pareco.training.losses import distill_loss, label_loss
from pareco.training.methods import ConfigPolicy
from pareco.training.optim import LRSchedule, build_optimizer
from pareco.training.recipe import RecipeError, TrainSpec


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class StepResult:
    loss: float        # summed loss of every configuration trained in the step
    loss_full: float   # the label loss of the full (or the single) network
    lr: float
    images_per_s: float


class HeldOut:
    """Random batches of ``batch`` images from a held-out split (the validation split), drawn
    with a dedicated generator (its state is part of the resume state)."""

    def __init__(self, dataset: Dataset, batch: int, seed: int) -> None:
        self.dataset, self.batch = dataset, min(batch, len(dataset))  # type: ignore[arg-type]
        self.gen = torch.Generator().manual_seed(seed)

    def draw(self) -> tuple[Tensor, Tensor]:
        idx = torch.randperm(len(self.dataset), generator=self.gen)[: self.batch]  # type: ignore[arg-type]
        items = [self.dataset[int(i)] for i in idx]
        return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


class SeededBatches(Dataset):
    """Item ``k`` is the collated batch ``batches[k]`` of ``dataset``, its augmentation drawn from
    torch's RNG seeded with ``seed + k`` (restored afterwards), so that each batch is a pure
    function of its indices and seed, in the main process or in any worker."""

    def __init__(self, dataset: Dataset, batches: dict[int, list[int]], seed: int) -> None:
        self.dataset, self.batches, self.seed = dataset, batches, seed

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + k)
            items = [self.dataset[i] for i in self.batches[k]]
        return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


class Trainer:
    """Optimizer, schedule, data order and the step function of one run of ``epochs`` epochs."""

    def __init__(self, net: SlimmableNet, data: DataBundle, spec: TrainSpec, epochs: int, *,
                 policy: ConfigPolicy | None = None, alpha: tuple[float, ...] | None = None,
                 seed: int = 0, device: torch.device = torch.device("cpu"),
                 workers: int = 0) -> None:
        if (policy is None) == (alpha is None):
            raise ValueError("pass either a sandwich policy or a single alpha")
        self.net, self.data, self.spec = net, data, spec
        self.policy, self.alpha = policy, alpha
        self.seed, self.device, self.workers = seed, device, workers
        n = len(data.train)  # type: ignore[arg-type]
        self.steps_per_epoch = n // spec.batch_size  # drop the last partial batch (BN statistics)
        if self.steps_per_epoch < 1:
            raise RecipeError(f"train.batch_size={spec.batch_size} exceeds the {n} training "
                              f"images; lower it (--batch-size) or use more data")
        self.epochs = epochs
        self.total_steps = self.steps_per_epoch * epochs
        self.optimizer = build_optimizer(net, spec)
        self.schedule = LRSchedule.from_spec(spec, self.steps_per_epoch, epochs)
        self.step = 0
        self.smallest = net.width_space.smallest
        self.world = distributed.world_size()
        if spec.batch_size % self.world:
            raise ValueError(f"train.batch_size={spec.batch_size} (the global batch) must be "
                             f"divisible by the {self.world} distributed processes")
        self.model = distributed.wrap(net, device)  # DistributedDataParallel under torchrun
        self.digest = distributed.Digest()

    # ------------------------------------------------------------------------------- data
    def epoch_order(self, epoch: int) -> Tensor:
        """The permutation of training items of ``epoch`` (independent of any global RNG)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.data.train), generator=gen)  # type: ignore[arg-type]

    def batches(self, epoch: int, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches ``start .. steps_per_epoch - 1`` of ``epoch``, in order.

        Batch ``k`` of ``epoch`` is the same whether or not the run was resumed and whatever the
        number of worker processes: its items come from :meth:`epoch_order` and its augmentation
        from the RNG seeded with ``(seed, epoch, k)`` (see :class:`SeededBatches`).
        """
        b = self.spec.batch_size
        seed = (self.seed * 1_000_003 + epoch) * 1_000_033
        if self.world == 1:
            order = self.epoch_order(epoch).tolist()
        else:
            # the epoch_order permutation, rank r taking every W-th item: the union of the ranks'
            # batch k is the single-process batch k; each rank trains b / W of its images
            sampler = DistributedSampler(self.data.train, num_replicas=self.world,
                                         rank=distributed.rank(), shuffle=True,
                                         seed=self.seed * 1_000_003, drop_last=True)
            sampler.set_epoch(epoch)
            order = list(sampler)
            b //= self.world
            seed += distributed.rank() * 10_000_019  # each rank its own augmentation stream
        batches = {k: order[k * b:(k + 1) * b] for k in range(start, self.steps_per_epoch)}
        loader = DataLoader(SeededBatches(self.data.train, batches, seed), batch_size=None,
                            sampler=list(batches), num_workers=self.workers,
                            pin_memory=self.device.type == "cuda")
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    # ------------------------------------------------------------------------------- step
    def autocast(self) -> torch.autocast:
        """The training forward's precision context (``train.precision``)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.spec.precision == "bf16")

    def configs(self) -> list[tuple[object, bool]]:
        """``(alpha, on_labels)`` of every configuration trained at the current step."""
        if self.policy is None:
            return [(self.alpha, True)]
        middle = self.policy.middle(self.step)
        if self.world > 1:  # every rank trains rank 0's configurations (DESIGN §10)
            middle = distributed.broadcast(torch.as_tensor(middle, dtype=torch.float64))
        # plain tuples of floats: DistributedDataParallel moves tensor arguments to the device
        return [(None, True), (self.smallest, False),
                *((tuple(row.tolist()), False) for row in middle)]

    def train_step(self, x: Tensor, y: Tensor) -> StepResult:
        """One optimizer step on the batch ``(x, y)``; advances :attr:`step`."""
        configs = self.configs()  # decided before timing the step: search time is logged apart
        self.digest.record([a for a, _ in configs])
        t0 = time.perf_counter()
        lr = self.schedule.apply(self.optimizer, self.step)
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        total, teacher, loss_full = 0.0, None, float("nan")
        for i, (alpha, on_labels) in enumerate(configs):
            # under DDP the gradients of all the sandwich's passes accumulate locally and are
            # all-reduced once, in the last backward pass
            last = i == len(configs) - 1
            with contextlib.nullcontext() if last or self.world == 1 else self.model.no_sync():
                with self.autocast():
                    logits = self.model(x, alpha, None)
                logits = logits.float()
                if on_labels:
                    loss = label_loss(logits, y, self.spec.label_smoothing)
                    teacher = logits.detach().softmax(dim=1)
                else:
                    loss = distill_loss(logits, teacher)
                loss.backward()
            value = float(loss.detach())
            if not math.isfinite(value) and self.world == 1:
                raise TrainingDiverged(f"the loss became {value} at step {self.step}; "
                                       f"lower train.lr (now {lr:g})")
            if on_labels:
                loss_full = value
            total += value
        if self.world > 1:  # the ranks' mean losses: logged, and all ranks stop together
            total, loss_full = distributed.all_mean([total, loss_full]).tolist()
            if not (math.isfinite(total) and math.isfinite(loss_full)):
                raise TrainingDiverged(f"the loss became {total} at step {self.step}; "
                                       f"lower train.lr (now {lr:g})")
        self.optimizer.step()
        self.step += 1
        dt = time.perf_counter() - t0
        return StepResult(total, loss_full, lr, x.shape[0] * self.world / max(dt, 1e-9))

    # ------------------------------------------------------------------------- monitoring
    def monitor(self, images: int = 1000) -> dict[str, float]:
        """Validation accuracy (batch-statistics BN, first ``images`` val images) of the full and
        the smallest configuration (or the single one): a cheap progress signal, not the front."""
        n = min(images, len(self.data.val))  # type: ignore[arg-type]
        val = torch.utils.data.Subset(self.data.val, range(n))
        alphas = {"full": None, "w0": self.smallest} if self.policy else {"alpha": self.alpha}
        return {name: evaluate(self.net, a, None, val, device=self.device, batch_size=250).accuracy
                for name, a in alphas.items()}

    def run(self, on_step: Callable[["Trainer", StepResult], None],
            on_epoch: Callable[["Trainer", int, float], None], bar_factory: Callable) -> None:
        """Train from :attr:`step` to :attr:`total_steps`; ``on_step`` after every step (logging,
        checkpoints), ``on_epoch(trainer, epoch, seconds)`` after every epoch."""
        bar = bar_factory(self.total_steps, self.step)
        try:
            while self.step < self.total_steps:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                t_epoch = time.perf_counter()
                for x, y in self.batches(epoch, start):
                    result = self.train_step(x, y)
                    bar.update(1)
                    bar.set_postfix(loss=f"{result.loss:.3f}", lr=f"{result.lr:.4f}",
                                    img_s=f"{result.images_per_s:.0f}", refresh=False)
                    on_step(self, result)
                on_epoch(self, epoch, time.perf_counter() - t_epoch)
        finally:
            bar.close()
