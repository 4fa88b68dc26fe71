"""Interleaved latency measurement of many ONNX models with a robust low quantile.

    times = measure(models, ort_runners(threads=1), rounds=7, calls=20)   # key -> seconds/call

Each round visits every model once in a fresh seeded random order, runs one untimed warm-up
call, then times ``calls`` consecutive calls and records their mean. A model's latency is the
``quantile`` (default 0.2: low but not the minimum) of its per-round means. Interleaving spreads
slow phases of a shared host (other processes, frequency changes) over all models instead of
biasing the ones that happened to run during them.

The clock and the runner factory are parameters, so tests drive the procedure with a fake
clock and fake runners, deterministically.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Mapping

import numpy as np
import onnx

from pareco.ortsession import ort_session_options

Runner = Callable[[], None]
"""One inference call of a prepared model (its input is bound in)."""
RunnerFactory = Callable[[onnx.ModelProto], Runner]
Clock = Callable[[], float]
"""Seconds, monotonic (default :func:`time.perf_counter`)."""


def ort_runners(threads: int = 1) -> RunnerFactory:
    """A factory of ONNX Runtime CPU runners on a fixed random input of the model's shape
    (every input dimension must be static or the batch axis, which is set to 1)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    import onnxruntime as ort

    options = ort_session_options(threads)
    rng = np.random.default_rng(0)

    def make(model: onnx.ModelProto) -> Runner:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        feed = {inp.name: rng.standard_normal(shape).astype(np.float32)}
        return lambda: session.run(None, feed)

    return make


def runtime_info(threads: int) -> dict:
    """Host and runtime metadata of a measurement: what a table is only valid for."""
    import onnxruntime as ort

    return {"runtime": "onnxruntime", "runtime_version": ort.__version__,
            "provider": "CPUExecutionProvider", "threads": threads, "batch": 1,
            "host": platform.node(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpu": _cpu_model(), "python": platform.python_version()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(models: Mapping[str, onnx.ModelProto], factory: RunnerFactory, *, rounds: int = 7,
            calls: int = 20, quantile: float = 0.2, seed: int = 0,
            clock: Clock = time.perf_counter) -> dict[str, float]:
    """Seconds per call of every model (see the module doc), keyed like ``models``.

    ``rounds`` >= 1 interleaved rounds of ``calls`` >= 1 timed calls each; ``quantile`` in
    [0, 1] of the per-round means (0: the fastest round, 0.5: the median).
    """
    if rounds < 1 or calls < 1:
        raise ValueError(f"rounds and calls must be >= 1, got {rounds} and {calls}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
    keys = list(models)
    runners = {k: factory(models[k]) for k in keys}
    samples: dict[str, list[float]] = {k: [] for k in keys}
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for i in rng.permutation(len(keys)):
            run = runners[keys[i]]
            run()  # warm-up: caches, lazy allocations
            t0 = clock()
            for _ in range(calls):
                run()
            samples[keys[i]].append((clock() - t0) / calls)
    return {k: float(np.quantile(v, quantile)) for k, v in samples.items()}
