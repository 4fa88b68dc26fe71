"""``torchrun --nproc_per_node=2 -m pareco.train`` on CPU (gloo) on a tiny generated Fashion-MNIST.

Each run goes through the real launcher (``python -m torch.distributed.run``) and the real CLI.
With ``$PARECO_DEBUG_DIGEST_DIR`` set, every rank writes the configurations it trained at every
step and a hash of its final parameters (:mod:`pareco.training.distributed`): both ranks must
agree, and rank 0's weight file must be valid.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datagen import write_fashion_mnist
from test_train_cli import check_weight_file, log_events, tiny_args

from pareco.training import distributed
from pareco.training.distributed import DIGEST_ENV

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or
                                not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=320, n_test=96, seed=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], digest: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "pareco.train", *args]
    full_env = {**os.environ, DIGEST_ENV: str(digest), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=240)


def ranks_agree(digest: Path) -> list[dict]:
    docs = [json.loads((digest / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [d["world_size"] for d in docs] == [2, 2]
    assert docs[0]["steps"] == docs[1]["steps"]  # the same configurations at every step
    assert docs[0]["params_sha256"] == docs[1]["params_sha256"]  # the same final parameters
    return docs


def distributed_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    args = tiny_args(data_dir, out, *extra)
    args[args.index("--threads") + 1] = "1"  # one thread per process (2 cores)
    return args


def test_pareco_two_processes(data_dir: Path, tmp_path: Path) -> None:
    out, digest = tmp_path / "pareco", tmp_path / "digest"
    proc = torchrun(distributed_args(data_dir, out, "--method", "pareco"), digest)
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = ranks_agree(digest)
    steps = docs[0]["steps"]
    assert len(steps) == 8
    for configs in steps:  # full, w0 and M = 2 middle configurations
        assert len(configs) == 4 and configs[0] is None
    # the middle configurations change at every refresh (every 3 steps): the search ran
    assert len({json.dumps(c[2:]) for c in steps}) == 3
    training = check_weight_file(out / "model.safetensors", "pareco")
    assert training["steps"] == 8 and training["processes"] == 2
    assert training["search"]["history_size"] == 8
    assert not (out / "train_state.safetensors").exists()
    events = log_events(out / "train_log.jsonl")
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 9))
    assert sum(e["event"] == "start" for e in events) == 1  # rank 0 alone writes the log


def test_twostage_two_processes_resume(data_dir: Path, tmp_path: Path) -> None:
    """Killed after step 4 (its checkpoint written), resumed under torchrun: the ranks agree, the
    post-hoc search runs sharded and the weight file is valid."""
    out, digest = tmp_path / "twostage", tmp_path / "digest"
    args = distributed_args(data_dir, out, "--method", "twostage", "--checkpoint-every", "2")
    proc = torchrun(args, digest, {"PARECO_TEST_KILL_AT_STEP": "4"})
    assert proc.returncode != 0
    assert (out / "train_state.safetensors").is_file()
    proc = torchrun([*args, "--resume"], digest)
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = ranks_agree(digest)
    assert len(docs[0]["steps"]) == 4  # steps 5..8 after the resume
    training = check_weight_file(out / "model.safetensors", "twostage")
    assert training["steps"] == 8 and training["search"]["history_size"] == 8
    events = log_events(out / "train_log.jsonl")
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 9))


def test_front_uses_the_waiting_ranks_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the other ranks wait for rank 0's front, rank 0 takes their CPU threads (capped by
    the visible cores) and gives them back after; nothing changes on other ranks or on CUDA."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per process, as torchrun sets it
    try:
        _check_front_threads(monkeypatch)
    finally:
        torch.set_num_threads(before)


def _check_front_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    own, cores = 1, len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "is_main", lambda: True)
    with distributed.idle_cores_to_main(torch.device("cpu")):
        assert torch.get_num_threads() == min(2, cores)
    assert torch.get_num_threads() == own
    with distributed.idle_cores_to_main(torch.device("cuda")):
        assert torch.get_num_threads() == own
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    with distributed.idle_cores_to_main(torch.device("cpu")):
        assert torch.get_num_threads() == own
