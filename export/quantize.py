"""Static int8 quantization: QDQ format, per-channel weights, calibrated on training images.

Weights and activations are signed int8 (``QuantType.QInt8``, symmetric-friendly; ONNX
Runtime's recommendation for ARM mobile CPUs), MinMax calibration over the given images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)

from export.onnx_io import INPUT_NAME


class _Reader(CalibrationDataReader):
    """Feeds ``images`` to the calibrator in batches of ``batch`` images."""

    def __init__(self, images: np.ndarray, batch: int) -> None:
        self._batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._batches, None)
        return None if x is None else {INPUT_NAME: np.ascontiguousarray(x)}


def quantize_int8(fp32_path: Path, out_path: Path, calib_images: np.ndarray,
                  batch: int = 64) -> None:
    """Write the int8 QDQ model of ``fp32_path`` to ``out_path``, calibrated on ``calib_images``
    (float32 ``(N, C, H, W)``, normalized like the model's input)."""
    if len(calib_images) == 0:
        raise ValueError("int8 calibration needs at least one image")
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # quantize_static's advice to pre-process, on the root logger
    try:
        quantize_static(
            str(fp32_path), str(out_path), _Reader(calib_images, batch),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        logging.disable(previous)
