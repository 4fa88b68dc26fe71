"""Data-parallel training on PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

Single node, K processes (one per GPU; on CPU, gloo with one process per core group)::

    torchrun --standalone --nproc_per_node=K -m pareco.train --recipe resnet20-cifar100 --out runs/r20

Several nodes (run on every node, ``--node_rank`` 0..N-1; the endpoint is node 0's address)::

    torchrun --nnodes=N --node_rank=I --nproc_per_node=K \\
        --rdzv_backend=c10d --rdzv_endpoint=node0.example:29500 --rdzv_id=r20 \\
        -m pareco.train --recipe resnet20-cifar100 --out /shared/runs/r20

Continue an interrupted run with the same command plus ``--resume``. Nothing else changes on the
command line: :func:`setup` detects torchrun from its environment (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``) and, when ``WORLD_SIZE > 1``, initializes the process group (NCCL when the device
is CUDA, each process on ``cuda:LOCAL_RANK``; gloo on CPU). With ``WORLD_SIZE`` 1 or without
torchrun, training is the plain single-process code path.

What is distributed, and how:

- **Batch size.** ``train.batch_size`` is the *global* batch: each of the W ranks trains
  ``batch_size / W`` images per step (it must divide evenly), so steps per epoch, the learning-rate
  schedule, ``|H|`` and the refresh period are those of a single-process run. The images of
  global step k are exactly the single-process batch k: a :class:`DistributedSampler` seeded like
  the single-process epoch permutation hands rank r every W-th item. BatchNorm normalizes with
  each rank's own batch statistics (no SyncBN), as in the paper's multi-GPU training.
- **The sandwich.** The model is wrapped in ``DistributedDataParallel``; the ``M + 2``
  backward passes of a step accumulate locally under ``no_sync()`` and only the last one
  all-reduces. Sliced weights receive zero-filled gradients, so every parameter takes part in
  every backward and ``find_unused_parameters`` stays off.
- **Same configurations everywhere.** Rank 0 makes the data-dependent decisions (the GP fit and
  Pareto-aware proposals of ``pareco``/``twostage``; the uniform width draws of ``slim`` also come
  from the shared seed) and broadcasts the ``(M, d)`` float64 α tensor (:func:`decide`,
  :func:`broadcast`); no pickled objects travel.
- **H re-evaluation** is sharded: rank r evaluates rows ``r, r + W, ...`` of H on the same
  held-out batch (every rank draws it from the same seeded generator) and the CE values are
  gathered with ``all_gather`` of a padded tensor (:func:`sharded_rows`). TwoStage's post-hoc
  search evaluates its new configurations the same way.
- **Front and files.** Rank 0 alone builds the front (BN calibration, selection, test
  accuracy) and writes the checkpoints, ``train_log.jsonl``, the weight file, plots, reports and
  the console output; the other ranks wait at a barrier (the process-group timeout is
  ``$PARECO_DIST_TIMEOUT_S``, default 7200 s, to cover a long front build). On a CPU job rank 0
  builds the front with the threads of all the node's processes (:func:`idle_cores_to_main`).
- **Resume.** Every rank loads the same ``train_state.safetensors`` (written by rank 0), so the
  output folder must be on a file system all nodes see (any single-node run qualifies).

Test hook (``tests/test_distributed.py``): when ``$PARECO_DEBUG_DIGEST_DIR`` is set, every rank
writes ``rank<r>.json`` there at the end of training: the α of every configuration trained at
every step and a SHA-256 of its final parameters.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

DIGEST_ENV = "PARECO_DEBUG_DIGEST_DIR"
TIMEOUT_ENV = "PARECO_DIST_TIMEOUT_S"


# ------------------------------------------------------------------------------ process group
def launched() -> bool:
    """Whether this process was started by torchrun with more than one process in the job."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Initialize the process group under torchrun (idempotent); returns this rank's device
    (``cuda:LOCAL_RANK`` for a CUDA device). Without torchrun, returns ``device`` unchanged."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "7200")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return device


def setup_options(opts: Any) -> Any:
    """``opts`` (a :class:`~pareco.training.run.RunOptions`) with this rank's device, and no
    console output on ranks other than 0."""
    device = setup(opts.device)
    if not active():
        return opts
    return replace(opts, device=device, quiet=opts.quiet or not is_main(),
                   progress=False if not is_main() else opts.progress)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


@contextmanager
def idle_cores_to_main(device: torch.device) -> Iterator[None]:
    """Rank 0's CPU work in this block uses the threads of every process on its node.

    The other ranks only wait at a barrier meanwhile (the front build), so on a CPU job rank 0
    takes ``torch.get_num_threads() * LOCAL_WORLD_SIZE`` threads (at most the visible cores) and
    restores its own count on exit. A no-op on other ranks, on CUDA and without torchrun.
    """
    if not (active() and is_main() and device.type == "cpu"):
        yield
        return
    own = torch.get_num_threads()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(own, min(own * local, len(os.sched_getaffinity(0)))))
    try:
        yield
    finally:
        torch.set_num_threads(own)


def wrap(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` in ``DistributedDataParallel`` when distributed, else ``net`` itself."""
    if not active():
        return net
    ids = [device.index] if device.type == "cuda" else None
    # the slimmable nets hold no buffers (BN uses batch statistics or stored per-config stats),
    # so nothing is synced per forward; torch >= 2.14 names the flag forward_sync_buffers
    ddp = nn.parallel.DistributedDataParallel
    flag = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters
            else "broadcast_buffers")
    return ddp(net, device_ids=ids, **{flag: False})


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -------------------------------------------------------------------------------- decisions
def broadcast(t: Tensor) -> Tensor:
    """Rank 0's value of ``t`` (same shape and dtype on every rank), as a CPU tensor."""
    if not active():
        return t
    buf = t.detach().to(_comm_device()).contiguous()
    dist.broadcast(buf, src=0)
    return buf.cpu()


def decide(fn: Callable[[], Tensor], shape: tuple[int, ...]) -> Tensor:
    """``fn()`` run on rank 0 only (a data-dependent decision, e.g. a search proposal) and
    broadcast to every rank as a float64 tensor of ``shape``."""
    if not active():
        return fn()
    if is_main():
        value = torch.as_tensor(fn(), dtype=torch.float64).reshape(shape)
    else:
        value = torch.empty(shape, dtype=torch.float64)
    return broadcast(value)


def sharded_rows(fn: Callable[[range], Tensor], n: int) -> Tensor:
    """``fn(range(n))`` computed in shards: rank r calls ``fn(range(r, n, W))`` (interleaved, so
    narrow and wide configurations spread evenly) and the float64 results are all-gathered into
    the full ``(n,)`` tensor, identical on every rank."""
    if not active():
        return fn(range(n))
    w, r = world_size(), rank()
    per = -(-n // w)
    mine = fn(range(r, n, w)).to(torch.float64).reshape(-1)
    dev = _comm_device()
    padded = torch.zeros(per, dtype=torch.float64, device=dev)
    padded[: len(mine)] = mine.to(dev)
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    out = torch.empty(n, dtype=torch.float64)
    for k, part in enumerate(parts):
        count = len(range(k, n, w))
        out[k::w] = part[:count].cpu()
    return out


def all_mean(values: list[float]) -> Tensor:
    """The mean over ranks of ``values`` (float64, element-wise)."""
    t = torch.tensor(values, dtype=torch.float64)
    if not active():
        return t
    buf = t.to(_comm_device())
    dist.all_reduce(buf)
    return buf.cpu() / world_size()


# ----------------------------------------------------------------------------- test digest
class Digest:
    """Test-only record of the configurations each step trained (see the module doc)."""

    def __init__(self) -> None:
        folder = os.environ.get(DIGEST_ENV)
        self.folder = Path(folder) if folder else None
        self.steps: list[list[list[float] | None]] = []

    def record(self, configs: list[Any]) -> None:
        if self.folder is not None:
            self.steps.append([None if a is None else [float(v) for v in a] for a in configs])

    def write(self, net: nn.Module, tag: str = "") -> None:
        if self.folder is None:
            return
        h = hashlib.sha256()
        for name, value in sorted(net.state_dict().items()):
            h.update(name.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        self.folder.mkdir(parents=True, exist_ok=True)
        doc = {"rank": rank(), "world_size": world_size(), "steps": self.steps,
               "params_sha256": h.hexdigest()}
        (self.folder / f"rank{rank()}{tag}.json").write_text(json.dumps(doc))
