"""The export run: choose configurations, export and verify each, write the files atomically.

Per configuration (``<id>`` below):

1. extract the dense subnet with the config's BN statistics; its parameter count (weights,
   biases, BN affine) must equal the front's ``params``;
2. fold BN, export ``<id>.onnx`` (all chosen configs in one exporter call,
   :func:`export.onnx_io.to_onnx_many`), ``check_model(full_check=True)``;
3. count MACs and parameters from the ONNX graph (:mod:`export.count`): MACs must equal the
   front's ``macs`` exactly; parameters must equal the BN-folded subnet's (see
   :func:`export.count.module_params`);
4. ONNX Runtime vs PyTorch at batch 1 and batch N: max abs logit difference <= 1e-4;
5. ``--int8``: ``<id>.int8.onnx`` (static QDQ, per channel), top-1 agreement with fp32 and the
   test-split accuracy of both; ``--ort``: ``<id>.ort`` (and ``<id>.int8.ort``), loaded and run.

Everything is written to a temporary folder next to the output folder and moved in only when
every configuration passed, so a failed run leaves no partial files.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from export import count, manifest, mobile, onnx_io, parity, quantize, samples
from pareco.data import DataError
from pareco.weightfile import FrontConfig, ZooModel, load_zoo_model

PARITY_BATCH = 8
"""Images in the batch > 1 parity check (the batch 1 check uses the first of them)."""


class ExportError(Exception):
    """Bad input: unknown config, impossible budget, unusable weights, data or output folder."""


class VerificationError(Exception):
    """An exported file failed a check (parity, MAC or parameter count, ONNX checker)."""


@dataclass(frozen=True)
class Options:
    """What to export. Exactly one of ``config_ids``, ``mflops`` and ``all_configs`` is set."""

    config_ids: tuple[str, ...] = ()
    mflops: float | None = None
    all_configs: bool = False
    ort: bool = False
    int8: bool = False
    calib_images: int = 512
    data_dir: Path | None = None
    opset: int | None = None


def select(zoo: ZooModel, opts: Options) -> list[FrontConfig]:
    """The front configurations chosen by ``opts`` (ascending MFLOPs for ``--all``)."""
    if opts.all_configs:
        return list(zoo.front)
    if opts.mflops is not None:
        smallest = zoo.front[0].mflops
        if opts.mflops < smallest:
            raise ExportError(f"no configuration fits {opts.mflops:g} MFLOPs; the smallest "
                              f"({zoo.front[0].id}) needs {smallest:.4f} MFLOPs")
        return [zoo.best_within(opts.mflops)]
    known = [c.id for c in zoo.front]
    unknown = [i for i in opts.config_ids if i not in known]
    if unknown:
        raise ExportError(f"unknown configuration id(s) {', '.join(unknown)}; "
                          f"the front has {', '.join(known)}")
    return [zoo.config(i) for i in dict.fromkeys(opts.config_ids)]


def _file_stem(config_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", config_id)


def _opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class _Data:
    """The images the checks run on."""

    check: samples.Samples                 # parity images (PARITY_BATCH)
    test: samples.Samples | None           # whole test split (int8 only)
    calib: samples.Samples | None          # int8 calibration images


def _load_data(zoo: ZooModel, opts: Options) -> _Data:
    """Test/calibration images of the dataset named in the weight file; without ``--int8`` a
    missing dataset falls back to random parity inputs."""
    name = samples.dataset_name(zoo.meta)
    pre = zoo.preprocessing
    try:
        if name is None:
            raise DataError("the weight file does not name its training dataset "
                            "(metadata training.dataset)")
        bundle = samples.load_bundle(name, pre, opts.data_dir)
        test = samples.take(bundle, name, "test", None if opts.int8 else PARITY_BATCH, pre)
        calib = samples.take(bundle, name, "calib", opts.calib_images, pre) if opts.int8 else None
    except DataError as e:
        if opts.int8:
            raise ExportError(f"--int8 needs the training data: {e} (point --data-dir at it)") from None
        return _Data(samples.random_samples(pre, PARITY_BATCH), None, None)
    check = samples.Samples(test.images[:PARITY_BATCH], test.labels[:PARITY_BATCH], test.source)
    if len(check.images) < 2:
        check = samples.random_samples(pre, PARITY_BATCH)
    return _Data(check, test if opts.int8 else None, calib)


def _extract(zoo: ZooModel, cfg: FrontConfig) -> nn.Module:
    """The dense subnet of ``cfg``, checked against the front's parameter count."""
    dense = zoo.extract(cfg.id)
    dense_params = sum(p.numel() for p in dense.parameters())
    if dense_params != cfg.params:
        raise VerificationError(f"{cfg.id}: the extracted subnet has {dense_params} parameters, "
                                f"the front claims {cfg.params}")
    return dense


def _verify_config(cfg: FrontConfig, dense: nn.Module, model: onnx.ModelProto, work: Path,
                   data: _Data, opts: Options) -> list[dict[str, Any]]:
    """Verify one configuration's export, write its files into ``work``; return its manifest
    entries."""
    folded = onnx_io.fold_batchnorm(dense)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise VerificationError(f"{cfg.id}: the ONNX checker rejects the export: {e}") from None
    macs, params = count.count_macs(model), count.count_params(model)
    expected_params = count.module_params(folded.module)
    if macs != cfg.macs:
        raise VerificationError(f"{cfg.id}: the ONNX graph has {macs} MACs, the front claims {cfg.macs}")
    if params != expected_params:
        raise VerificationError(f"{cfg.id}: the ONNX graph has {params} parameters, the BN-folded "
                                f"subnet {expected_params}")
    stem = _file_stem(cfg.id)
    onnx.save(model, work / f"{stem}.onnx")
    sess = parity.session(model)
    par = parity.check_parity(sess, dense, data.check.images, data.check.source)
    if par.worst > parity.FP32_TOLERANCE:
        raise VerificationError(f"{cfg.id}: ONNX Runtime differs from PyTorch by {par.worst:.3g} "
                                f"(> {parity.FP32_TOLERANCE:g})")
    common = {"opset": _opset_of(model), "config": cfg.to_dict(), "onnx_macs": macs,
              "onnx_params": params, "folded_batchnorms": folded.folded_bn}
    accuracy: dict[str, Any] = {"front_val": cfg.val_acc, "front_test": cfg.test_acc}
    entries = []
    fp32_entry = {"kind": "onnx", "precision": "fp32", **common, "parity": par.to_dict(),
                  "accuracy": accuracy}
    entries.append((f"{stem}.onnx", fp32_entry))

    if opts.int8:
        entries.append((f"{stem}.int8.onnx", _int8(work, stem, sess, data, common, accuracy)))
    if opts.ort:
        for name, entry in list(entries):
            ort_name = name[: -len(".onnx")] + ".ort"
            mobile.to_ort(work / name, work / ort_name)
            ort_sess = parity.session(work / ort_name)
            ref = parity.predict(parity.session(work / name), data.check.images)
            diff = [float(np.abs(parity.predict(ort_sess, data.check.images[:n]) - ref[:n]).max())
                    for n in (1, len(data.check.images))]
            ort_parity = {"vs": name, "batch1": diff[0], "batchN": diff[1],
                          "batch": len(data.check.images), "inputs": data.check.source}
            if entry["precision"] == "fp32" and max(diff) > parity.FP32_TOLERANCE:
                raise VerificationError(f"{cfg.id}: the .ort model differs from the .onnx by "
                                        f"{max(diff):.3g}")
            entries.append((ort_name, {**entry, "kind": "ort", "parity": ort_parity,
                                       "mobile": mobile.usability(onnx.load(work / name))}))
    return [manifest.file_entry(work, name, **entry) for name, entry in entries]


def _int8(work: Path, stem: str, fp32_sess: ort.InferenceSession, data: _Data,
          common: dict[str, Any], accuracy: dict[str, Any]) -> dict[str, Any]:
    """Quantize ``<stem>.onnx``; compare it with fp32 on the test split; fill ``accuracy``."""
    assert data.calib is not None and data.test is not None
    name = f"{stem}.int8.onnx"
    quantize.quantize_int8(work / f"{stem}.onnx", work / name, data.calib.images)
    q_model = onnx.load(work / name)
    onnx.checker.check_model(q_model, full_check=True)
    q_sess = parity.session(work / name)
    fp32 = parity.predict(fp32_sess, data.test.images)
    q = parity.predict(q_sess, data.test.images)
    q1 = parity.predict(q_sess, data.test.images[:1], batch_size=1)  # runs at batch 1 too
    labels = data.test.labels
    fp32_acc = float((fp32.argmax(1) == labels).mean())
    q_acc = float((q.argmax(1) == labels).mean())
    accuracy.update({"onnx_test": fp32_acc, "int8_test": q_acc, "int8_change": q_acc - fp32_acc,
                     "test_images": len(labels), "test_source": data.test.source})
    q_parity = {"vs": f"{stem}.onnx", "top1_agreement": float((fp32.argmax(1) == q.argmax(1)).mean()),
                "max_abs_diff": float(np.abs(q - fp32).max()),
                "batch1_max_abs_diff": float(np.abs(q1 - fp32[:1]).max()),
                "images": len(labels), "inputs": data.test.source}
    # onnx_macs / onnx_params stay those of the fp32 graph it quantizes (same network)
    return {"kind": "onnx", "precision": "int8", **common, "opset": _opset_of(q_model),
            "parity": q_parity, "accuracy": accuracy,
            "quantization": {"format": "QDQ", "per_channel": True, "weights": "int8",
                             "activations": "int8", "calibration": "MinMax",
                             "calib_images": len(data.calib.images),
                             "calib_source": data.calib.source}}


def _prepare_out(out: Path) -> Path:
    """Check ``out`` can receive the files; return a fresh temporary folder next to it."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} exists and is not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists() and not os.access(out, os.W_OK):
            raise PermissionError(f"{out} is not writable")
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise ExportError(f"cannot write to --out {out}: {e.strerror or e}") from None


def run(weights: Path, out: Path, opts: Options) -> Path:
    """Export the configurations chosen by ``opts`` from ``weights`` into ``out``; return the
    manifest's path. Raises :class:`ExportError` (bad input) or :class:`VerificationError`;
    either way ``out`` is left as it was."""
    work = _prepare_out(out)
    threads = torch.get_num_threads()
    # the PyTorch references are small: extra OpenMP threads only contend with ONNX Runtime's
    # (and with other processes), which made each reference forward ~100x slower on 2 cores
    torch.set_num_threads(1)
    try:
        zoo = load_zoo_model(weights)  # WeightFileError on a bad file
        chosen = select(zoo, opts)
        data = _load_data(zoo, opts)
        _log(f"export: {len(chosen)} configuration(s) of {zoo.meta['arch']['name']}; "
             f"checks on {data.check.source}")
        pre = zoo.preprocessing
        t0 = time.perf_counter()
        dense = [_extract(zoo, cfg) for cfg in chosen]
        try:
            exported = onnx_io.to_onnx_many(dense, (pre.channels, pre.image_size, pre.image_size),
                                            opset=opts.opset)
        except Exception as e:  # the exporter's own errors are long; keep their first line
            raise VerificationError(f"the ONNX export failed: {_first_line(e)}") from e
        _log(f"  exported in {time.perf_counter() - t0:.1f} s")
        files = []
        for cfg, module, model in zip(chosen, dense, exported):
            t0 = time.perf_counter()
            try:
                entries = _verify_config(cfg, module, model, work, data, opts)
            except VerificationError:
                raise
            except Exception as e:  # ONNX Runtime, quantizer or converter failures
                raise VerificationError(f"{cfg.id}: {_first_line(e)}") from e
            files += entries
            par = entries[0]["parity"]
            _log(f"  {cfg.id}: {cfg.mflops:.3f} MFLOPs, {cfg.params} params, parity "
                 f"{par['batch1']:.1e} / {par['batchN']:.1e}, {time.perf_counter() - t0:.1f} s")
        doc = {
            "source": {"path": str(weights), "sha256": manifest.sha256(weights),
                       "arch": zoo.meta["arch"]},
            "software": manifest.software(),
            "input": {"name": onnx_io.INPUT_NAME, "dtype": "float32",
                      "shape": ["batch", pre.channels, pre.image_size, pre.image_size],
                      "mean": list(pre.mean), "std": list(pre.std)},
            "output": {"name": onnx_io.OUTPUT_NAME, "classes": list(zoo.classes)},
            "inputs_for_checks": data.check.source,
            "files": files,
        }
        manifest.write(work, doc)
        out.mkdir(exist_ok=True)
        names = [f["path"] for f in files] + [manifest.FILENAME]  # manifest last
        for name in names:
            os.replace(work / name, out / name)
        return out / manifest.FILENAME
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(work, ignore_errors=True)
