"""ONNX Runtime against PyTorch: sessions, batched prediction, max-abs-difference parity.

All arrays are float32 ``(N, C, H, W)`` images already normalized like the model's preprocessing;
logits are compared element-wise, so a parity figure is in logit units.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

FP32_TOLERANCE = 1e-4
"""Maximum allowed |ONNX Runtime - PyTorch| logit difference for an fp32 export."""


def session(model: onnx.ModelProto | str | os.PathLike) -> ort.InferenceSession:
    """A CPU InferenceSession for an in-memory model or a ``.onnx`` / ``.ort`` file."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    # idle worker threads must not spin: the PyTorch reference runs right after on the same cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def predict(sess: ort.InferenceSession, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of ``sess`` for ``images``, run ``batch_size`` images at a time."""
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: np.ascontiguousarray(images[i:i + batch_size])})[0]
            for i in range(0, len(images), batch_size)]
    return np.concatenate(outs)


@dataclass(frozen=True)
class Parity:
    """Max abs logit difference ORT vs PyTorch at batch 1 and at batch ``batch`` (> 1)."""

    batch1: float
    batchN: float
    batch: int
    inputs: str

    @property
    def worst(self) -> float:
        return max(self.batch1, self.batchN)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def check_parity(sess: ort.InferenceSession, module: nn.Module, images: np.ndarray,
                 inputs: str) -> Parity:
    """Compare ``sess`` with the eval-mode ``module`` on ``images[:1]`` and on all of ``images``
    in one batch (``len(images) > 1``). ``inputs`` names where the images came from."""
    if len(images) < 2:
        raise ValueError("parity needs at least 2 images (batch 1 and batch > 1)")
    module.eval()
    name = sess.get_inputs()[0].name

    def diff(x: np.ndarray) -> float:
        ours = sess.run(None, {name: np.ascontiguousarray(x)})[0]
        ref = module(torch.from_numpy(x)).numpy()
        if ours.shape != ref.shape:
            raise ValueError(f"ONNX output shape {ours.shape} differs from PyTorch {ref.shape}")
        return float(np.abs(ours.astype(np.float64) - ref).max())

    return Parity(diff(images[:1]), diff(images), len(images), inputs)
