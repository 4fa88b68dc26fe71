"""One inference runner per front configuration (no shared, mutable width state).

A runner owns the dense subnet of exactly one configuration, so concurrent calls for different
widths never touch the same object. ``predict(batch)`` takes float32 ``(N, C, H, W)`` and returns
float32 logits ``(N, num_classes)``; it is thread-safe (torch eval-mode forward under
``inference_mode``; ONNX Runtime's ``InferenceSession.run``).
"""

from __future__ import annotations

import statistics
import time
from typing import Protocol

import numpy as np
import torch
from torch import nn

from pareco.weightfile import ZooModel

BACKENDS = ("onnxruntime", "torch")


class Runner(Protocol):
    def predict(self, batch: np.ndarray) -> np.ndarray: ...


class TorchRunner:
    """PyTorch eager on CPU; intra-op threads are process-wide (``torch.set_num_threads``)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module.eval()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(batch)).numpy()


class OrtRunner:
    """An ONNX Runtime CPU session built in memory from the dense subnet (BN folded)."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, int, int], threads: int) -> None:
        import onnxruntime as ort

        from export.onnx_io import to_onnx

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Several sessions run at once (one per configuration): idle pool threads must not spin.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        proto = to_onnx(module, input_shape)
        self.session = ort.InferenceSession(proto.SerializeToString(), opts,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


def build_runners(zoo: ZooModel, backend: str, threads: int) -> dict[str, Runner]:
    """A runner for every front configuration, keyed by config id."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    pre = zoo.preprocessing
    shape = (pre.channels, pre.image_size, pre.image_size)
    if backend == "torch":
        torch.set_num_threads(threads)
        return {c.id: TorchRunner(zoo.extract(c.id)) for c in zoo.front}
    return {c.id: OrtRunner(zoo.extract(c.id), shape, threads) for c in zoo.front}


def measure_latency_ms(runner: Runner, input_shape: tuple[int, int, int], *, warmup: int = 3,
                       repeats: int = 20, budget_s: float = 1.0) -> float:
    """Median wall time (ms) of ``predict`` at batch 1 after ``warmup`` calls.

    Runs ``repeats`` timed calls, or fewer (at least 5) once ``budget_s`` seconds are spent.
    """
    x = np.random.default_rng(0).standard_normal((1, *input_shape), dtype=np.float32)
    for _ in range(warmup):
        runner.predict(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 5 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        runner.predict(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
