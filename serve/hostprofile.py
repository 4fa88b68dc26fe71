"""The host profile: the batch-1 latency of configurations on this host and runtime, and the
latency front it implies, as one JSON document (``GET /configs`` serves the same figures;
``python -m export --host-profile`` writes it next to the manifest)::

    {"format": "pareco-host-profile", "version": 1,
     "host": {"cpu": "AMD EPYC ...", "cores": 2, "machine": "x86_64", "system": "Linux"},
     "runtime": {"backend": "onnxruntime", "version": "1.23.2", "threads": 1, "batch": 1},
     "measurement": {"method": "interleaved rounds, low quantile", "quantile": 0.2},
     "configs": [{"id", "mflops", "accuracy", "latency_ms", "on_latency_front",
                  "latency_dominated_by"}],            # by MFLOPs ascending
     "latency_front": ["c00", "k03", ...]}              # fastest first

Latency is only comparable on the host and runtime version that measured it: both are recorded.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

from serve.fronts import Costed, dominated_by, latency_front

FORMAT, VERSION = "pareco-host-profile", 1


@functools.cache
def host_info() -> dict[str, Any]:
    """CPU model name (from ``/proc/cpuinfo`` where there is one), logical cores, machine, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.lower().startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
            "system": platform.system()}


def runtime_info(backend: str, threads: int) -> dict[str, Any]:
    """The inference runtime that timed the configs (version of onnxruntime or torch)."""
    import importlib.metadata

    dist = "onnxruntime" if backend == "onnxruntime" else "torch"
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"backend": backend, "version": version, "threads": threads, "batch": 1}


def profile_document(configs: Sequence[Costed], latency_ms: Mapping[str, float], *,
                     backend: str, threads: int, quantile: float) -> dict[str, Any]:
    """The document above for ``configs`` timed as ``latency_ms`` (ms per config id)."""
    front = latency_front(configs, latency_ms)
    fast = {c.id for c in front}
    rows = []
    for c in sorted(configs, key=lambda c: (c.macs, c.id)):
        better = dominated_by(c, configs, latency_ms)
        rows.append({"id": c.id, "mflops": c.macs / 1e6, "accuracy": c.accuracy,
                     "latency_ms": latency_ms[c.id], "on_latency_front": c.id in fast,
                     "latency_dominated_by": None if better is None else better.id})
    return {"format": FORMAT, "version": VERSION, "host": host_info(),
            "runtime": runtime_info(backend, threads),
            "measurement": {"method": "interleaved rounds, low quantile", "quantile": quantile},
            "configs": rows, "latency_front": [c.id for c in front]}
