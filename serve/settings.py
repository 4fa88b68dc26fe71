"""Every tunable of the server in one validated place (the CLI and ``create_app`` fill it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from serve.images import DEFAULT_MAX_PIXELS
from serve.runners import BACKENDS


def default_threads() -> int:
    """Intra-op threads per inference call: half the cores (several configs may run at once)."""
    return max(1, (os.cpu_count() or 1) // 2)


@dataclass(frozen=True)
class Settings:
    """Application limits (the HTTP-layer ones are in :class:`serve.http.HttpLimits`).

    ``max_batch``: images per inference call; ``batch_delay_ms``: how long (ms) a micro-batch
    waits to fill; ``max_inflight``: /predict requests in progress at once (reading, decoding,
    queued, running), beyond which a new one is refused with 503 *before* its body is read;
    ``reject_delay_ms``: how long such a refusal is held before it is answered, on average
    (0.5-1.5 x, drawn per refusal: :mod:`serve.admission`; 0 behind a load balancer that fails
    over on 503);
    ``threads``: intra-op threads per inference call; ``max_files``: files per request;
    ``max_body_bytes``: request body limit (413); ``max_pixels``: pixels per image (413);
    ``cache_dir``: the ONNX cache (:mod:`serve.onnxcache`; ``None``: no cache);
    ``slo_ms``: the latency objective of SLO mode (:mod:`serve.slo`; ``None``: choose the config by
    the request's budget alone, and shed only on ``max_inflight`` or a full queue).
    """

    backend: str = "onnxruntime"
    max_batch: int = 32
    batch_delay_ms: float = 2.0
    max_inflight: int = 8
    reject_delay_ms: float = 1000.0
    threads: int | None = None  # None or 0: default_threads()
    max_files: int = 64
    max_body_bytes: int = 16 * 2**20
    max_pixels: int = DEFAULT_MAX_PIXELS
    cache_dir: Path | None = None
    slo_ms: float | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("max_batch", "max_inflight", "max_files", "max_body_bytes",
                          "max_pixels") and value < 1:
                raise ValueError(f"{f.name} must be >= 1, got {value}")
        if self.threads is not None and self.threads < 0:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        for name in ("batch_delay_ms", "reject_delay_ms"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.slo_ms is not None and not 0 < self.slo_ms < float("inf"):
            raise ValueError(f"slo_ms must be a finite number of milliseconds > 0, "
                             f"got {self.slo_ms}")
        if not self.threads:
            object.__setattr__(self, "threads", default_threads())
