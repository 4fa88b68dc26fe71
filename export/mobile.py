"""Mobile deployment: the ORT format through ONNX Runtime's converter, and a usability report.

The ``.ort`` file is written by ``onnxruntime.tools.convert_onnx_models_to_ort`` (fixed
optimizations at the converter's default level, platform-neutral: no NCHWc layout) and checked
by loading it in an ``InferenceSession``. The usability report runs ONNX Runtime's mobile
partition checker (``onnxruntime.tools.mobile_helpers.usability_checker``) for NNAPI (Android)
and CoreML (iOS); the CPU execution provider runs every exported model regardless.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

import onnx
from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
from onnxruntime.tools.mobile_helpers import usability_checker


def to_ort(onnx_path: Path, out_path: Path) -> None:
    """Convert ``onnx_path`` to the ORT format at ``out_path`` (the converter's side files -
    the required-operators config - are not kept)."""
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        scratch = Path(tmp)
        src = scratch / "in" / "model.onnx"
        src.parent.mkdir()
        shutil.copyfile(onnx_path, src)
        log = logging.getLogger("ort_format_model.utils")  # logs the config file at INFO
        level = log.level
        log.setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the converter prints progress
                convert_onnx_models_to_ort(src, output_dir=scratch / "out",
                                           optimization_styles=[OptimizationStyle.Fixed])
        finally:
            log.setLevel(level)
        produced = scratch / "out" / "model.ort"
        if not produced.is_file():
            raise RuntimeError(f"the ORT converter produced no .ort file for {onnx_path.name}")
        shutil.move(produced, out_path)


def usability(model: onnx.ModelProto) -> dict[str, dict[str, str]]:
    """How well NNAPI and CoreML could run ``model``: for each, the checker's verdict
    (``YES``/``MAYBE``/``NO``) with the dynamic batch axis as exported, and with fixed shapes."""
    inferred = onnx.shape_inference.infer_shapes(model)
    checks = {
        "nnapi": usability_checker.check_nnapi_partitions,
        "coreml_neuralnetwork": lambda m, fixed: usability_checker.check_coreml_partitions(
            m, fixed, "coreml_supported_neuralnetwork_ops.md"),
        "coreml_mlprogram": lambda m, fixed: usability_checker.check_coreml_partitions(
            m, fixed, "coreml_supported_mlprogram_ops.md"),
    }
    logging.getLogger("usability_checker").setLevel(logging.WARNING)
    report = {}
    for name, check in checks.items():
        report[name] = {
            "dynamic_batch": check(inferred, True).suitability().name,
            "fixed_shapes": check(inferred, False).suitability().name,
        }
    return report
