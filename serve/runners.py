"""One inference runner per configuration (no shared, mutable width state).

A runner owns the dense subnet of exactly one configuration, so concurrent calls for different
widths never touch the same object. ``predict(batch)`` takes float32 ``(N, C, H, W)`` and returns
float32 logits ``(N, num_classes)``; it is thread-safe (torch eval-mode forward under
``inference_mode``; ONNX Runtime's ``InferenceSession.run``).

This module imports neither torch nor the exporter at import time: an ONNX Runtime server that
starts from the ONNX cache (:mod:`serve.onnxcache`) never loads them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pareco.ortsession import ort_session_options

if TYPE_CHECKING:
    from pareco.weightfile import ZooModel

BACKENDS = ("onnxruntime", "torch")
LATENCY_QUANTILE = 0.2
"""The quantile of each config's batch-1 timings reported as its latency (a low one: robust to
passing load, which only ever adds time)."""


class Runner(Protocol):
    def predict(self, batch: np.ndarray) -> np.ndarray: ...


class TorchRunner:
    """PyTorch eager on CPU; intra-op threads are process-wide (``torch.set_num_threads``)."""

    def __init__(self, module: Any) -> None:
        self.module = module.eval()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(batch)).numpy()


class OrtRunner:
    """An ONNX Runtime CPU session built in memory from serialized ONNX bytes."""

    def __init__(self, onnx: bytes, threads: int) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(onnx, ort_session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


def torch_runners(zoo: "ZooModel", threads: int) -> dict[str, Runner]:
    """A :class:`TorchRunner` for every calibrated configuration (front and candidates), keyed
    by config id."""
    import torch

    torch.set_num_threads(threads)
    return {c.id: TorchRunner(zoo.extract(c.id)) for c in zoo.configs}


def export_verified(zoo: "ZooModel", probe: np.ndarray, tolerance: float
                    ) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """Every calibrated config (front and candidates) as ONNX bytes (one exporter call, BN folded) and PyTorch's logits on
    ``probe``; raises ``RuntimeError`` if ONNX Runtime differs from PyTorch by more than
    ``tolerance`` (:func:`serve.onnxcache.scaled_difference`) on any of them. Needs torch, onnx,
    onnxscript."""
    import torch

    from export.onnx_io import to_onnx_many
    from serve.onnxcache import scaled_difference

    configs = zoo.configs
    modules = [zoo.extract(c.id) for c in configs]
    shape = (zoo.preprocessing.channels, zoo.preprocessing.image_size, zoo.preprocessing.image_size)
    protos = to_onnx_many(modules, shape)
    onnx, reference = {}, {}
    for c, module, proto in zip(configs, modules, protos):
        data = proto.SerializeToString()
        with torch.inference_mode():
            ref = module(torch.from_numpy(probe)).numpy()
        diff = scaled_difference(OrtRunner(data, 1).predict(probe), ref)
        if not diff <= tolerance:
            raise RuntimeError(f"config {c.id}: ONNX Runtime differs from PyTorch by {diff:.3g} "
                               f"(relative to the logits' scale)")
        onnx[c.id], reference[c.id] = data, ref
    return onnx, reference


def measure_latencies_ms(runners: Mapping[str, Runner], input_shape: tuple[int, int, int], *,
                         rounds: int = 9, per_round: int = 5, quantile: float = LATENCY_QUANTILE,
                         budget_s: float = 3.0, seed: int = 0) -> dict[str, float]:
    """Batch-1 ``predict`` wall time (ms) per runner, robust to passing load.

    After one untimed call each, ``rounds`` rounds run ``per_round`` calls of every runner, in a
    fresh random order per round (so a burst of load hits all configs alike); the result is the
    ``quantile`` (a low one) of each runner's timings. Stops after ``budget_s`` seconds once at
    least 2 rounds are done."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, *input_shape), dtype=np.float32)
    ids = list(runners)
    for cid in ids:
        runners[cid].predict(x)
    times: dict[str, list[float]] = {cid: [] for cid in ids}
    start = time.perf_counter()
    for r in range(rounds):
        if r >= 2 and time.perf_counter() - start > budget_s:
            break
        for i in rng.permutation(len(ids)):
            run = runners[ids[i]].predict
            for _ in range(per_round):
                t0 = time.perf_counter()
                run(x)
                times[ids[i]].append((time.perf_counter() - t0) * 1e3)
    return {cid: float(np.quantile(t, quantile)) for cid, t in times.items()}
