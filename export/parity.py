"""ONNX Runtime against PyTorch: sessions, batched prediction, max-abs-difference parity.

All arrays are float32 ``(N, C, H, W)`` images already normalized like the model's preprocessing;
logits are compared element-wise, so a parity figure is in logit units.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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


def fixed_batch(sess: ort.InferenceSession) -> int | None:
    """The session input's fixed batch size, or ``None`` if its batch axis is dynamic."""
    dim0 = sess.get_inputs()[0].shape[0]
    return dim0 if isinstance(dim0, int) else None


def predict(sess: ort.InferenceSession, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of ``sess`` for ``images``, run ``batch_size`` images at a time (a model with a
    fixed batch size B runs B at a time, the last batch padded by repeating images)."""
    name = sess.get_inputs()[0].name
    fixed = fixed_batch(sess)
    step = fixed or batch_size
    outs = []
    for i in range(0, len(images), step):
        x = images[i:i + step]
        if fixed and len(x) < fixed:
            outs.append(sess.run(None, {name: np.resize(x, (fixed, *x.shape[1:]))})[0][:len(x)])
        else:
            outs.append(sess.run(None, {name: np.ascontiguousarray(x)})[0])
    return np.concatenate(outs)


def batches_to_check(sess: ort.InferenceSession, n: int) -> tuple[int, ...]:
    """The batch sizes a parity check runs: 1 and ``n`` (> 1) for a dynamic batch axis, the
    fixed size alone otherwise."""
    fixed = fixed_batch(sess)
    return (fixed,) if fixed else (1, n)


def take_batch(images: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` images, repeated cyclically if there are fewer (contiguous float32)."""
    return np.ascontiguousarray(np.resize(images, (n, *images.shape[1:])), dtype=np.float32)


@dataclass(frozen=True)
class Parity:
    """Max abs logit difference against a reference, per batch size; where the images came from."""

    max_abs_diff: dict[int, float]
    inputs: str

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())

    def to_dict(self) -> dict:
        return {"max_abs_diff": {str(k): v for k, v in self.max_abs_diff.items()},
                "inputs": self.inputs}

    def summary(self) -> str:
        """E.g. ``"1.2e-06 @1 / 2.0e-06 @8"``."""
        return " / ".join(f"{v:.1e} @{k}" for k, v in self.max_abs_diff.items())


@torch.no_grad()
def check_parity(sess: ort.InferenceSession, module: nn.Module, images: np.ndarray,
                 inputs: str) -> Parity:
    """Compare ``sess`` with the eval-mode ``module`` at the batch sizes of
    :func:`batches_to_check` (``len(images) > 1``). ``inputs`` names where the images came from."""
    if len(images) < 2:
        raise ValueError("parity needs at least 2 images (batch 1 and batch > 1)")
    module.eval()
    name = sess.get_inputs()[0].name

    def diff(x: np.ndarray) -> float:
        ours = sess.run(None, {name: x})[0]
        ref = module(torch.from_numpy(x)).numpy()
        if ours.shape != ref.shape:
            raise ValueError(f"ONNX output shape {ours.shape} differs from PyTorch {ref.shape}")
        return float(np.abs(ours.astype(np.float64) - ref).max())

    return Parity({n: diff(take_batch(images, n)) for n in batches_to_check(sess, len(images))},
                  inputs)


def compare_sessions(sess: ort.InferenceSession, ref: ort.InferenceSession, images: np.ndarray,
                     inputs: str) -> Parity:
    """:func:`check_parity` of one session against another (e.g. ``.ort`` against ``.onnx``)."""
    out = {}
    for n in batches_to_check(sess, len(images)):
        x = take_batch(images, n)
        out[n] = float(np.abs(predict(sess, x) - predict(ref, x)).max())
    return Parity(out, inputs)
