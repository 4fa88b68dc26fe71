"""Response models of the HTTP API (they are the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Error(BaseModel):
    """Every 4xx/5xx answer: the status, its reason phrase and a human-readable explanation."""

    status: int = Field(examples=[422])
    error: str = Field(examples=["Unprocessable Content"])
    detail: str = Field(examples=["mflops=1 is below the smallest configuration: c00 needs 2.1 "
                                  "MFLOPs (the minimum)"])


class Label(BaseModel):
    label: str = Field(description="class name")
    index: int = Field(description="class index (the logit's position)")
    probability: float = Field(ge=0, le=1, description="softmax probability")


class ImagePrediction(BaseModel):
    filename: str | None = Field(description="the uploaded part's file name, if any")
    top_k: list[Label] = Field(description="the k most probable classes, most probable first")


class ChosenConfig(BaseModel):
    id: str
    mflops: float = Field(description="millions of multiply-accumulates per image")
    expected_accuracy: float | None = Field(
        description="held-out accuracy of this config (test accuracy, else validation)")
    latency_ms: float = Field(description="batch-1 model latency measured on this host at start-up "
                                          "(a low quantile of interleaved rounds, ms)")


class PredictResponse(BaseModel):
    config: ChosenConfig
    predictions: list[ImagePrediction] = Field(description="one entry per uploaded file, in order")


class ConfigInfo(BaseModel):
    id: str
    alpha: list[float] = Field(description="width multiplier per channel group")
    channels: list[int] = Field(description="channels per group")
    mflops: float
    params: int
    val_acc: float | None
    test_acc: float | None
    latency_ms: float = Field(description="batch-1 model latency measured on this host at start-up")
    on_mflops_front: bool = Field(description="on the weight file's (MFLOPs, accuracy) front: "
                                              "what mflops= budgets choose from")
    on_latency_front: bool = Field(description="on this host's (latency, accuracy) front: what "
                                               "latency_ms= budgets choose from")
    latency_dominated_by: str | None = Field(
        description="a config that is at least as fast and as accurate on this host, and "
                    "strictly better on one (null: none is)")


class ConfigsResponse(BaseModel):
    arch: str
    backend: str
    classes: list[str]
    default: str = Field(description="the config used when no budget is given")
    latency_measured_at: float | None = Field(
        description="when the latency table was measured (unix time, seconds)")
    configs: list[ConfigInfo] = Field(description="the served configs (the MFLOPs front and this "
                                                  "host's latency front), by MFLOPs ascending")
    latency_front: list[str] = Field(description="ids of this host's latency front, fastest first")
    calibrated: int = Field(description="configs the weight file carries BN statistics for, all "
                                        "timed at start-up to find the latency front")
    host: dict[str, Any] = Field(description="the host that measured the latencies: cpu, cores, "
                                             "machine, system")
    runtime: dict[str, Any] = Field(description="the runtime that measured them: backend, "
                                                "version, threads, batch")


class Status(BaseModel):
    status: str = Field(examples=["ok"])
