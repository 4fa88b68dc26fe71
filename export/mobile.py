"""Mobile deployment: the ORT format through ONNX Runtime's converter, and a usability report.

The ``.ort`` files are written by ``onnxruntime.tools.convert_onnx_models_to_ort`` (fixed
optimizations at the converter's default level, for a target platform: :data:`TARGET_PLATFORMS`)
in one child process per export run, and checked by loading them in an ``InferenceSession``.
The usability report runs ONNX Runtime's mobile partition checker (``onnxruntime.tools.mobile_helpers.usability_checker``) for NNAPI (Android)
and CoreML (iOS); the CPU execution provider runs every exported model regardless.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle
from onnxruntime.tools.mobile_helpers import usability_checker


TARGET_PLATFORMS = ("arm", "amd64")
"""``--target-platform`` values: ``arm`` (phones, Apple silicon, ARM boards: int8 QDQ pairs
are fused into QLinearConv/QLinearAdd) and ``amd64`` (x86-64 desktops and servers; may bake in
x86-only layouts). Either file runs on any CPU; they differ in which kernels they pick."""


@functools.cache
def _no_aslr_prefix() -> tuple[str, ...]:
    """``setarch -R`` where it works here, else nothing. The ORT serializer writes some tables
    in hash-map order, and the hash seed is an address: without address-space randomization a
    conversion of the same model is byte-identical from run to run."""
    setarch = shutil.which("setarch")
    if setarch and subprocess.run([setarch, "-R", "true"], capture_output=True).returncode == 0:
        return (setarch, "-R")
    return ()


def reproducible() -> bool:
    """Whether :func:`to_ort_many` writes byte-identical files for identical inputs here."""
    return bool(_no_aslr_prefix())


def to_ort_many(pairs: Sequence[tuple[Path, Path]], target_platform: str = "arm") -> None:
    """Convert each ``(onnx_path, ort_path)`` in one converter process (fixed optimizations,
    optimized for ``target_platform``); the converter's side files are not kept.

    Raises ``ValueError`` for an unknown platform or a repeated file name, ``RuntimeError``
    (with the converter's last output lines) if the conversion fails."""
    if target_platform not in TARGET_PLATFORMS:
        raise ValueError(f"unknown target platform {target_platform!r}; expected one of "
                         f"{', '.join(TARGET_PLATFORMS)}")
    names = [src.name for src, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("to_ort_many needs distinct file names")
    if not pairs:
        return
    # The child's address-space layout must not depend on where or by whom it is run: a fixed-
    # length scratch folder as its working directory, relative paths, no inherited environment,
    # no script folder on sys.path (-P), fixed Python hashing.
    with tempfile.TemporaryDirectory(prefix="pareco-ort-") as tmp:
        scratch = Path(tmp)
        (scratch / "in").mkdir()
        for src, _ in pairs:
            shutil.copyfile(src, scratch / "in" / src.name)
        cmd = [*_no_aslr_prefix(), sys.executable, "-P", "-m",
               "onnxruntime.tools.convert_onnx_models_to_ort", "in", "--output_dir", "out",
               "--optimization_style", OptimizationStyle.Fixed.name,
               "--target_platform", target_platform]
        env = {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=scratch)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise RuntimeError(f"the ORT converter failed: {tail}")
        for src, dst in pairs:
            produced = scratch / "out" / (src.name[: -len(".onnx")] + ".ort")
            if not produced.is_file():
                raise RuntimeError(f"the ORT converter produced no .ort file for {src.name}")
            shutil.move(produced, dst)


def to_ort(onnx_path: Path, out_path: Path, target_platform: str = "arm") -> None:
    """Convert ``onnx_path`` to the ORT format at ``out_path`` (see :func:`to_ort_many`)."""
    if onnx_path.name == out_path.name:
        raise ValueError("the .ort file needs a name other than its .onnx source")
    to_ort_many([(onnx_path, out_path)], target_platform)


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
