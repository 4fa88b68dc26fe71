"""One training run from recipe to weight file, in resumable phases.

Phases: ``train`` (the shared loop) → ``search`` (TwoStage only: the post-hoc MOBO-RS search) →
``front`` (BN calibration, selection, test accuracy; :func:`pareco.front.build_front`) → the weight
file ``model.safetensors`` (written atomically) → reports. The resume state
``train_state.safetensors`` is written atomically at every epoch end, every
``checkpoint_steps`` steps (or search iterations) if set, every ``checkpoint_seconds``, and at
phase changes; it is deleted once the weight file and reports are written.

Seeds: ``seed`` fixes the initialization, the data order, augmentation and every width choice;
the validation split is carved with the fixed seed 0, so all runs on a dataset share it.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pareco import models
from pareco.data import DataBundle
from pareco.front import build_front
from pareco.models.base import SlimmableNet
from pareco.search import ParetoSearch, cost_functions
from pareco.training import checkpoint as ckpt
from pareco.training import distributed
from pareco.training.history_eval import evaluate_history
from pareco.training.log import LOG_FILE, RunLog
from pareco.training.loop import HeldOut, StepResult, Trainer
from pareco.training.methods import (ParetoPolicy, UniformPolicy, history_budget,
                                     steps_per_refresh)
from pareco.training.posthoc import PosthocSearch
from pareco.training.recipe import Recipe, RecipeError, from_dict
from pareco.training.stop import StopOnSignal
from pareco.weightfile import Preprocessing, save_zoo_model

WEIGHT_FILE = "model.safetensors"
STATE_VERSION = 1
FINAL_CE_BATCHES = 2
KILL_HOOK = "PARECO_TEST_KILL_AT_STEP"
"""Test-only: signal this process right after training step N (and its checkpoint) completes,
with the signal named by ``PARECO_TEST_KILL_SIGNAL`` (default SIGKILL)."""


@dataclass(frozen=True)
class RunOptions:
    """Everything a run needs besides the recipe and the data."""

    seed: int = 0
    device: torch.device = torch.device("cpu")
    resume: bool = False
    checkpoint_steps: int | None = None
    checkpoint_seconds: float = 600.0
    quiet: bool = False
    progress: bool | None = None
    subset: int | None = None


def training_layout(device: torch.device, threads: int | None = None) -> torch.memory_format:
    """The memory format of the network's 4-d weights during a run: ``channels_last`` on the CPU
    with one torch thread (``threads``, default :func:`torch.get_num_threads`), the contiguous
    format otherwise. Measured by ``bench/train_layout.py`` on this project's 2-vCPU host, one
    sandwich step of ResNet20 / quarter-width ResNet20 on Fashion-MNIST, channels_last over
    NCHW: 0.68 / 0.78 x the time with one thread, but 1.06 / 1.30 x with two. It is the layout
    of training and of the search; the front is built on contiguous weights (as a weight file
    loads), and the weight file and the resume state are written contiguous."""
    threads = torch.get_num_threads() if threads is None else threads
    return torch.channels_last if device.type == "cpu" and threads == 1 else torch.contiguous_format


class RunError(RuntimeError):
    """A run that cannot start or continue (e.g. a resume state of another run)."""


def build_net(recipe: Recipe, data: DataBundle, seed: int) -> SlimmableNet:
    """The recipe's architecture for ``data``, initialized from ``seed`` (and torchvision
    weights with ``model.init: torchvision``)."""
    torch.manual_seed(seed)
    try:
        net = models.build(recipe.model.arch, num_classes=data.num_classes,
                           in_channels=data.in_channels, image_size=data.image_size,
                           **recipe.model.build_kwargs)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"model.kwargs: cannot build {recipe.model.arch}: {e}") from None
    if recipe.model.init == "torchvision":
        from pareco.models.torchvision_weights import load_torchvision_weights

        try:
            load_torchvision_weights(net, recipe.model.init_source)
        except (OSError, RuntimeError, TypeError, ValueError) as e:
            raise RunError(f"model.init torchvision ({recipe.model.init_source}): {e}") from None
    return net


class Run:
    """A resumable run writing into ``out``: the sandwich methods, or one independent width."""

    def __init__(self, recipe: Recipe, data: DataBundle, out: Path, opts: RunOptions,
                 alpha: tuple[float, ...] | None = None) -> None:
        self.recipe, self.data, self.out, self.opts, self.alpha = recipe, data, out, opts, alpha
        self.method = recipe.method
        self.state_path = out / ckpt.STATE_FILE
        self.net = build_net(recipe, data, opts.seed).to(
            opts.device, memory_format=training_layout(opts.device))
        space, p = self.net.width_space, recipe.pareco
        seed = opts.seed
        self.heldout = HeldOut(data.val, p.eval_batch, seed + 2)
        policy: UniformPolicy | ParetoPolicy | None = None
        total = len(data.train) // recipe.train.batch_size * recipe.run_epochs  # type: ignore[arg-type]
        # the same |H| budget for PareCO and TwoStage's post-hoc search (fair comparisons);
        # `searched`: configs the search adds per refresh (PareCO's non-uniform middle ones,
        # all M for TwoStage's post-hoc search)
        searched = p.m - p.uniform_middle if self.method == "pareco" else p.m
        self.history_size = history_budget(p.history_size, total, m=p.m, searched=searched,
                                           batch_size=recipe.train.batch_size,
                                           eval_batch=p.eval_batch, max_overhead=p.max_overhead)
        if self.method in ("slim", "twostage"):
            policy = UniformPolicy(space, p.m, seed + 1)
        elif self.method == "pareco":
            # H starts with its two anchors (the smallest and the full config)
            n = steps_per_refresh(total, self.history_size - 2, searched)
            uniform = UniformPolicy(space, p.uniform_middle, seed + 1) if p.uniform_middle else None
            set_from = math.ceil(p.proposals_from * total) if p.proposals_from else 0
            policy = ParetoPolicy(self._search(searched), n, self._ce_fresh_batch, uniform,
                                  proposals=p.proposals, seed=seed + 4, set_from=set_from)
        self.policy = policy
        world = distributed.world_size()
        if recipe.train.batch_size % world:
            raise RunError(f"train.batch_size={recipe.train.batch_size} is the global batch: it "
                           f"must be divisible by the {world} torchrun processes")
        self.trainer = Trainer(self.net, data, recipe.train, recipe.run_epochs, policy=policy,
                               alpha=alpha, seed=seed, device=opts.device,
                               workers=recipe.data.workers)
        self.posthoc = (PosthocSearch(self._search(p.m), self.history_size, self._ce_fixed_batch)
                        if self.method == "twostage" else None)
        self._fixed_batch: tuple[Tensor, Tensor] | None = None
        self.phase = "train"
        self.elapsed = {"train_s": 0.0, "search_s": 0.0, "front_s": 0.0}
        # under torchrun only rank 0 writes the log and the console (distributed.py)
        self.main = distributed.is_main()
        self.log = RunLog(out / LOG_FILE if self.main else Path(os.devnull),
                          quiet=opts.quiet or not self.main,
                          progress=opts.progress if self.main else False)
        self._last_save = time.monotonic()

    # ------------------------------------------------------------------------ components
    def _search(self, m: int) -> ParetoSearch:
        """The MOBO-RS search of this run, proposing ``m`` configurations per refresh."""
        p = self.recipe.pareco
        kwargs = {} if p.beta is None else {"beta": p.beta}
        try:
            costs = cost_functions(self.net, p.cost, p.latency_table)
        except ValueError as e:  # a latency table that is unreadable or of another network
            raise RunError(f"pareco.latency_table: {e}") from None
        return ParetoSearch(self.net.width_space, *costs, m=m,
                            warmup=p.warmup_configs, eps=p.eps, max_steps=p.max_steps,
                            solver=p.solver, targets=p.targets, seed=self.opts.seed, **kwargs)

    def _ce_fresh_batch(self, alphas: Tensor) -> Tensor:
        x, y = self.heldout.draw()  # the same batch on every rank (same seeded generator)
        return distributed.sharded_rows(
            lambda rows: evaluate_history(self.net, alphas, x, y, rows), len(alphas))

    def _ce_fixed_batch(self, alphas: Tensor) -> Tensor:
        if self._fixed_batch is None:  # a pure function of the seed: identical after resume
            self._fixed_batch = HeldOut(self.data.val, self.recipe.pareco.eval_batch,
                                        self.opts.seed + 3).draw()
        x, y = self._fixed_batch
        return distributed.sharded_rows(
            lambda rows: evaluate_history(self.net, alphas, x, y, rows), len(alphas))

    def identity(self) -> dict[str, Any]:
        """What a resume state must match to be continued by this run."""
        return {"recipe": self.recipe.to_dict(), "method": self.method, "seed": self.opts.seed,
                "subset": self.opts.subset, "alpha": None if self.alpha is None else list(self.alpha),
                "train_images": len(self.data.train)}  # type: ignore[arg-type]

    # ---------------------------------------------------------------------- resume state
    def save(self) -> None:
        if not self.main:  # rank 0 writes the state; every rank reads it on resume
            return
        tensors = {f"model/{k}": v for k, v in self.net.state_dict().items()}
        opt_t, opt_doc = ckpt.pack_optimizer(self.trainer.optimizer)
        rng_t, rng_doc = ckpt.pack_rng()
        tensors.update(opt_t)
        tensors.update(rng_t)
        tensors["heldout/rng"] = self.heldout.gen.get_state()
        if self.policy is not None:
            tensors.update({f"policy/{k}": v for k, v in self.policy.state_dict().items()})
        if self.posthoc is not None:
            tensors.update({f"posthoc/{k}": v for k, v in self.posthoc.state_dict().items()})
        doc = {"version": STATE_VERSION, "identity": self.identity(), "phase": self.phase,
               "step": self.trainer.step, "total_steps": self.trainer.total_steps,
               "elapsed": self.elapsed, "log_size": self.log.size(), "optimizer": opt_doc,
               "rng": rng_doc}
        ckpt.save_state(self.state_path, tensors, doc)
        self._last_save = time.monotonic()

    def restore(self) -> None:
        tensors, doc = ckpt.load_state(self.state_path)
        if doc.get("version") != STATE_VERSION:
            raise RunError(f"{self.state_path}: state version {doc.get('version')!r}, "
                           f"this code reads {STATE_VERSION}")
        saved, mine = _with_defaults(doc["identity"]), self.identity()
        diff = _diff(saved, mine)
        if diff:
            raise RunError(f"{self.state_path} belongs to another run ({diff}); resume with the "
                           f"same settings or use another --out")
        self.net.load_state_dict(ckpt.sub_state(tensors, "model/"))
        ckpt.unpack_optimizer(self.trainer.optimizer, tensors, doc["optimizer"])
        ckpt.unpack_rng(tensors, doc["rng"])
        self.heldout.gen.set_state(tensors["heldout/rng"])
        if self.policy is not None:
            self.policy.load_state_dict(ckpt.sub_state(tensors, "policy/"))
        if self.posthoc is not None:
            self.posthoc.load_state_dict(ckpt.sub_state(tensors, "posthoc/"))
        self.trainer.step = int(doc["step"])
        self.phase = doc["phase"]
        self.elapsed = {k: float(v) for k, v in doc["elapsed"].items()}
        self.log.truncate(int(doc["log_size"]))

    # ------------------------------------------------------------------------- execution
    def execute(self) -> dict[str, Any]:
        """Run (or continue) every phase; returns the ``training`` section of the weight file."""
        if self.opts.resume:
            self.restore()
            self.log.event("resume", step=self.trainer.step, phase=self.phase)
            self.log.console(f"resuming {self.out} at step {self.trainer.step}/"
                             f"{self.trainer.total_steps} (phase {self.phase})")
        else:  # a new run: the log of a finished run in this folder goes with its weight file
            self.log.truncate(0)
            self.log.event("start", **self.identity(), steps_per_epoch=self.trainer.steps_per_epoch,
                           total_steps=self.trainer.total_steps,
                           steps_per_refresh=getattr(self.policy, "n", None),
                           history_budget=self.history_size)
        if self.phase == "train":
            self._train()
            self.phase = "search" if self.posthoc is not None else "front"
            self.save()
        if self.phase == "search":
            self._posthoc()
            self.phase = "front"
            self.save()
        return self._front()

    def _train(self) -> None:
        t = self.trainer
        t_start = time.perf_counter()
        base = self.elapsed["train_s"]
        kill_at = int(os.environ.get(KILL_HOOK, "-1"))
        kill_with = signal.Signals[os.environ.get("PARECO_TEST_KILL_SIGNAL", "SIGKILL")]
        stop = StopOnSignal(enabled=distributed.world_size() == 1)
        acc = {"loss": 0.0, "loss_full": 0.0, "n": 0}

        def on_step(tr: Trainer, r: StepResult) -> None:
            self.elapsed["train_s"] = base + time.perf_counter() - t_start
            acc["loss"] += r.loss
            acc["loss_full"] += r.loss_full
            acc["n"] += 1
            event = getattr(self.policy, "last_event", None)
            if event is not None and event["step"] == tr.step - 1:
                self.log.event("refresh", **event)
            self.log.event("step", step=tr.step, loss=r.loss, loss_full=r.loss_full, lr=r.lr,
                           img_s=round(r.images_per_s, 1))
            if tr.step % tr.steps_per_epoch and self._save_due(tr.step):
                self.save()
            if tr.step == kill_at:
                os.kill(os.getpid(), kill_with)
            stop.check(tr.step, self.save)

        def on_epoch(tr: Trainer, epoch: int, seconds: float) -> None:
            if not self.main:
                acc.update(loss=0.0, loss_full=0.0, n=0)
                return
            mon = tr.monitor()
            n = max(1, acc["n"])
            summary = {"epoch": epoch + 1, "epochs": tr.epochs, "step": tr.step,
                       "loss": acc["loss"] / n, "loss_full": acc["loss_full"] / n,
                       "lr": tr.schedule(max(0, tr.step - 1)), "epoch_s": seconds,
                       "val_acc_batchstat": mon, "train_s": self.elapsed["train_s"]}
            if self.policy is not None:
                summary["search"] = self.policy.diagnostics()
            self.log.event("epoch", **summary)
            self.log.console(_epoch_line(summary, tr.spec.batch_size * acc["n"]))
            acc.update(loss=0.0, loss_full=0.0, n=0)
            self.elapsed["train_s"] = base + time.perf_counter() - t_start
            self.save()

        desc = f"{self.method}" + ("" if self.alpha is None else f" w={self.alpha[0]:g}")
        with stop:
            t.run(on_step, on_epoch, lambda total, initial: self.log.bar(total, initial, desc))
        if isinstance(self.policy, ParetoPolicy):
            # a last re-evaluation with the final weights, on FINAL_CE_BATCHES held-out batches
            # (less noise): the front's candidates are H's non-dominated configurations by it
            self.policy.refresh_ce(t.step, batches=FINAL_CE_BATCHES)
        t.digest.write(self.net)

    def _posthoc(self) -> None:
        assert self.posthoc is not None
        t_start, base = time.perf_counter(), self.elapsed["search_s"]
        bar = self.log.bar(self.posthoc.history_size, len(self.posthoc.search.history),
                           "twostage search")
        iteration = 0
        try:
            while not self.posthoc.done:
                stats = self.posthoc.iterate()
                iteration += 1
                bar.n = len(self.posthoc.search.history)
                bar.refresh()
                self.elapsed["search_s"] = base + time.perf_counter() - t_start
                self.log.event("search", history=len(self.posthoc.search.history), **stats)
                if self._save_due(iteration):
                    self.save()
        finally:
            bar.close()
        self.posthoc.finalize(self._ce_fresh_batch, FINAL_CE_BATCHES)
        self.elapsed["search_s"] = base + time.perf_counter() - t_start
        d = self.posthoc.diagnostics()
        self.log.console(f"post-hoc search: |H| = {d['history_size']}, "
                         f"{self.elapsed['search_s']:.1f} s")

    def _save_due(self, counter: int) -> bool:
        every = self.opts.checkpoint_steps
        return (every is not None and counter % every == 0) or \
            time.monotonic() - self._last_save >= self.opts.checkpoint_seconds

    def _front(self) -> dict[str, Any]:
        # measured on the weights laid out as a weight file's loader has them, so that the BN
        # statistics and accuracies it stores are exactly what a reload re-computes
        self.net.to(memory_format=torch.contiguous_format)
        r, space = self.recipe, self.net.width_space
        candidates, ce = torch.empty(0, space.dim, dtype=torch.float64), None
        grid = r.front.uniform_grid
        if isinstance(self.policy, ParetoPolicy):
            candidates, ce = self.policy.search.history, self.policy.ce
        elif self.posthoc is not None:
            candidates, ce = self.posthoc.search.history, self.posthoc.final_ce
        elif self.alpha is not None:
            candidates, grid = torch.tensor([self.alpha], dtype=torch.float64), 0
        self.history = (candidates, ce)
        if not self.main:  # rank 0 builds the front and writes the weight file alone
            return self.training_doc()
        t0 = time.perf_counter()
        self.log.console(f"building the front ({len(candidates)} searched candidates + "
                         f"{grid} uniform widths)")
        with distributed.idle_cores_to_main(self.opts.device):  # the other ranks only wait
            front, candidates, bn = build_front(
                self.net, candidates, self.data, candidate_ce=ce,
                calib_images=r.front.calib_images, val_images=r.front.val_images,
                max_configs=r.front.max_configs, uniform_grid=grid,
                batch_size=r.front.batch_size, device=self.opts.device, seed=self.opts.seed,
                progress=self.log.progress)
        self.elapsed["front_s"] = time.perf_counter() - t0
        training = self.training_doc()
        save_zoo_model(self.out / WEIGHT_FILE, self.net, front, bn,
                       preprocessing=Preprocessing(self.data.image_size, self.data.in_channels,
                                                   tuple(self.data.mean), tuple(self.data.std)),
                       classes=list(self.data.class_names), training=training,
                       candidates=candidates)
        self.log.event("front", configs=[c.to_dict() for c in front],
                       front_s=self.elapsed["front_s"])
        return training

    def training_doc(self) -> dict[str, Any]:
        """The ``training`` section of the weight file."""
        doc: dict[str, Any] = {
            "method": self.method, "recipe": self.recipe.to_dict(),
            "dataset": self.recipe.data.dataset, "seed": self.opts.seed,
            "epochs": self.trainer.epochs, "steps": self.trainer.step,
            "steps_per_epoch": self.trainer.steps_per_epoch,
            "batch_size": self.recipe.train.batch_size,
            "train_images": len(self.data.train), "subset": self.opts.subset,  # type: ignore[arg-type]
            "wall_s": round(sum(self.elapsed.values()), 3),
            **{k: round(v, 3) for k, v in self.elapsed.items()},
            "device": str(self.opts.device), "threads": torch.get_num_threads(),
        }
        if distributed.world_size() > 1:
            doc["processes"] = distributed.world_size()
        if self.alpha is not None:
            doc["width"] = self.alpha[0]
        if self.policy is not None and self.policy.diagnostics():
            doc["search"] = self.policy.diagnostics()
        if self.posthoc is not None:
            doc["search"] = self.posthoc.diagnostics()
        return doc

    def finish(self) -> None:
        """Drop the resume state (the weight file is complete) and close the log."""
        self.log.event("done", **{k: round(v, 3) for k, v in self.elapsed.items()})
        if self.main:
            self.state_path.unlink(missing_ok=True)
        self.log.close()


def _with_defaults(identity: dict) -> dict:
    """A saved identity with its recipe re-resolved, so that recipe keys added since it was
    written (at their defaults) do not make an unchanged run look different."""
    try:
        recipe = from_dict(identity["recipe"]).to_dict()
    except (KeyError, RecipeError):
        return identity
    return {**identity, "recipe": recipe}


def _diff(saved: dict, mine: dict, prefix: str = "") -> str:
    for key in sorted(set(saved) | set(mine)):
        a, b = saved.get(key), mine.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            d = _diff(a, b, f"{prefix}{key}.")
            if d:
                return d
        elif a != b:
            return f"{prefix}{key}: saved {a!r}, now {b!r}"
    return ""


def _epoch_line(s: dict, images: int) -> str:
    mon = "  ".join(f"{k} {v:.3f}" for k, v in s["val_acc_batchstat"].items())
    line = (f"epoch {s['epoch']}/{s['epochs']}  step {s['step']}  loss {s['loss']:.3f} "
            f"(full {s['loss_full']:.3f})  lr {s['lr']:.4f}  {images / s['epoch_s']:.0f} img/s  "
            f"val[{mon}]  {s['epoch_s']:.0f} s")
    search = s.get("search") or {}
    if "history_size" in search:
        line += (f"  |H| {search['history_size']}  H-eval {search['h_eval_s']:.1f} s  "
                 f"search {search['search_s']:.1f} s")
    return line
