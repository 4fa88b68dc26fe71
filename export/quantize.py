"""Static int8 quantization: QDQ format, per-channel weights, calibrated on training images.

Weights and activations are signed int8 (``QuantType.QInt8``, symmetric-friendly; ONNX
Runtime's recommendation for ARM mobile CPUs), MinMax calibration over the given images.

Layouts (:data:`LAYOUTS`): ``float-edges`` (the default) keeps the first and the last compute
layer (stem convolution, classifier) in float, so the graph takes float input and returns float
logits from a float classifier - the common mobile layout, which other runtimes (OpenCV DNN, ...)
run correctly; ``all`` quantizes every Conv/Gemm, including the classifier and its output.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)

from export.onnx_io import INPUT_NAME


LAYOUTS = ("float-edges", "all")
_COMPUTE = ("Conv", "Gemm", "MatMul")


def edge_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the first and the last Conv/Gemm/MatMul node of ``model`` (graph order, which
    ONNX requires to be topological). Raises ``ValueError`` if there is none or one is unnamed."""
    nodes = [n for n in model.graph.node if n.op_type in _COMPUTE]
    if not nodes:
        raise ValueError("the model has no Conv/Gemm/MatMul node to keep in float")
    if not (nodes[0].name and nodes[-1].name):
        raise ValueError("the first/last compute nodes must be named to be kept in float")
    return list(dict.fromkeys([nodes[0].name, nodes[-1].name]))  # a one-layer model: one edge


class _Reader(CalibrationDataReader):
    """Feeds ``images`` to the calibrator in batches of ``batch`` images (``fixed``: every batch
    has exactly ``batch`` images; a short last one is dropped, or repeated if it is the only one)."""

    def __init__(self, images: np.ndarray, batch: int, fixed: bool) -> None:
        chunks = [images[i:i + batch] for i in range(0, len(images), batch)]
        if fixed:
            full = [c for c in chunks if len(c) == batch]
            chunks = full or [np.resize(images, (batch, *images.shape[1:]))]
        self._batches = iter(chunks)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._batches, None)
        return None if x is None else {INPUT_NAME: np.ascontiguousarray(x)}


def quantize_int8(fp32_path: Path, out_path: Path, calib_images: np.ndarray,
                  batch: int = 64, layout: str = "float-edges") -> list[str]:
    """Write the int8 QDQ model of ``fp32_path`` to ``out_path``, calibrated on ``calib_images``
    (float32 ``(N, C, H, W)``, normalized like the model's input); return the names of the
    nodes kept in float. A model with a fixed batch size is calibrated at that size."""
    if len(calib_images) == 0:
        raise ValueError("int8 calibration needs at least one image")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown int8 layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    model = onnx.load(fp32_path)
    keep = edge_layers(model) if layout == "float-edges" else []
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    fixed = dim0.HasField("dim_value")
    reader = _Reader(calib_images, dim0.dim_value if fixed else batch, fixed)
    with _root_warnings_off():  # quantize_static's advice to pre-process, on the root logger
        quantize_static(
            str(fp32_path), str(out_path), reader,
            quant_format=QuantFormat.QDQ, per_channel=True, nodes_to_exclude=keep,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return keep


_quiet_lock = threading.Lock()
_quiet = {"depth": 0, "saved": logging.NOTSET}


@contextlib.contextmanager
def _root_warnings_off() -> Iterator[None]:
    """``logging.disable(WARNING)`` while any thread is inside; the previous level after the last
    one leaves (the export quantizes configurations in parallel threads)."""
    with _quiet_lock:
        if _quiet["depth"] == 0:
            _quiet["saved"] = logging.root.manager.disable
            logging.disable(logging.WARNING)
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                logging.disable(_quiet["saved"])
