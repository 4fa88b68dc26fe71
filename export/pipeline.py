"""The export run: choose configurations, export and verify each, write the files atomically.

Per configuration (``<id>`` below):

1. extract the dense subnet with the config's BN statistics; its parameter count (weights,
   biases, BN affine) must equal the front's ``params``;
2. fold BN, export ``<id>.onnx`` (all chosen configs in one exporter call,
   :func:`export.onnx_io.to_onnx_many`); strip the exporter's metadata, lowest IR version for
   the opset, ``--batch`` fixed if asked, ``metadata_props`` (:mod:`export.tidy`);
   ``check_model(full_check=True)``;
3. count MACs and parameters from the ONNX graph (:mod:`export.count`): MACs must equal the
   front's ``macs`` exactly; parameters must equal the BN-folded subnet's (see
   :func:`export.count.module_params`);
4. ONNX Runtime vs PyTorch at batch 1 and batch N (or the fixed batch): max abs logit
   difference <= 1e-4;
5. ``--int8``: ``<id>.int8.onnx`` (static QDQ, per channel, ``--int8-layout``), top-1 agreement
   with fp32 and the accuracy of both on ``--eval-images`` test images;
6. ``--ort``: every ``.onnx`` converted in one converter process for ``--target-platform``
   (:mod:`export.mobile`), each ``.ort`` loaded and compared with its source.

Same inputs and package versions give byte-identical files (where ``setarch -R`` works).

Everything is written to a temporary folder next to the output folder and moved in only when
every configuration passed, so a failed run leaves no partial files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from export import count, manifest, mobile, onnx_io, parity, quantize, samples, tidy
from pareco.data import DataError
from pareco.weightfile import FrontConfig, ZooModel, load_zoo_model

PARITY_BATCH = 8
"""Images in the batch > 1 parity check (the batch 1 check uses the first of them)."""
HOST_PROFILE = "host-profile.json"
"""The host profile (:mod:`serve.hostprofile`) of the exported fp32 files, with ``--host-profile``."""


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
    calib_images: int = 256
    eval_images: int | None = 1000
    """Test images the int8 model is compared with fp32 on (``None``: the whole test split)."""
    data_dir: Path | None = None
    opset: int | None = None
    batch: int | None = None
    """Fixed batch size of every file (``None``: a dynamic batch axis)."""
    target_platform: str = "arm"
    int8_layout: str = "float-edges"
    host_profile: bool = False
    """Also time every exported fp32 file here and write :data:`HOST_PROFILE`."""

    def __post_init__(self) -> None:
        if self.target_platform not in mobile.TARGET_PLATFORMS:
            raise ExportError(f"unknown target platform {self.target_platform!r}; expected one "
                              f"of {', '.join(mobile.TARGET_PLATFORMS)}")
        if self.int8_layout not in quantize.LAYOUTS:
            raise ExportError(f"unknown int8 layout {self.int8_layout!r}; expected one of "
                              f"{', '.join(quantize.LAYOUTS)}")
        if self.host_profile and self.batch not in (None, 1):
            raise ExportError(f"--host-profile times batch-1 inference; use it without --batch "
                              f"or with --batch 1, not --batch {self.batch}")
        for name in ("calib_images", "eval_images", "batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ExportError(f"{name} must be >= 1, got {value}")


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
    known = [c.id for c in zoo.configs]
    unknown = [i for i in opts.config_ids if i not in known]
    if unknown:
        others = f", the candidates {', '.join(c.id for c in zoo.candidates)}" if zoo.candidates else ""
        raise ExportError(f"unknown configuration id(s) {', '.join(unknown)}; "
                          f"the front has {', '.join(c.id for c in zoo.front)}{others}")
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
        test = samples.take(bundle, name, "test", opts.eval_images if opts.int8 else PARITY_BATCH,
                            pre)
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


def _finish(model: onnx.ModelProto, props: dict[str, str], opts: Options) -> onnx.ModelProto:
    """The file as shipped: exporter metadata stripped, minimal IR version, fixed batch if
    asked, ``props`` as ``metadata_props``."""
    tidy.strip_exporter_metadata(model)
    tidy.set_minimal_ir_version(model)
    if opts.batch is not None:
        tidy.fix_batch(model, opts.batch)
    tidy.describe(model, props)
    return model


def _check_graph(cfg: FrontConfig, model: onnx.ModelProto, folded: onnx_io.Folded) -> tuple[int, int]:
    """ONNX checker, then MACs and parameters from the graph against the front; returns both."""
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
    return macs, params


def _verify_config(cfg: FrontConfig, dense: nn.Module, model: onnx.ModelProto, work: Path,
                   data: _Data, opts: Options, props: dict[str, str]) -> list[tuple[str, dict]]:
    """Verify one configuration's export and write its ``.onnx`` files into ``work``; return
    ``(file name, manifest fields)`` for each."""
    folded = onnx_io.fold_batchnorm(dense)
    model = _finish(model, {**props, "pareco.precision": "fp32"}, opts)
    macs, params = _check_graph(cfg, model, folded)
    stem = _file_stem(cfg.id)
    onnx.save(model, work / f"{stem}.onnx")
    sess = parity.session(model)
    par = parity.check_parity(sess, dense, data.check.images, data.check.source)
    if par.worst > parity.FP32_TOLERANCE:
        raise VerificationError(f"{cfg.id}: ONNX Runtime differs from PyTorch by {par.worst:.3g} "
                                f"(> {parity.FP32_TOLERANCE:g})")
    common = {"opset": _opset_of(model), "ir_version": model.ir_version,
              "batch": opts.batch or "dynamic", "config": cfg.to_dict(),
              "params": {"before_bn_folding": cfg.params, "after_bn_folding": params},
              "onnx_macs": macs, "onnx_params": params, "folded_batchnorms": folded.folded_bn}
    accuracy: dict[str, Any] = {"front_val": cfg.val_acc, "front_test": cfg.test_acc}
    entries = [(f"{stem}.onnx", {"kind": "onnx", "precision": "fp32", **common,
                                 "parity": par.to_dict(), "accuracy": accuracy})]
    if opts.int8:
        entries.append((f"{stem}.int8.onnx", _int8(work, stem, sess, data, common, accuracy,
                                                   {**props, "pareco.precision": "int8"}, opts)))
    return entries


def _add_ort(work: Path, entries: list[tuple[str, dict]], data: _Data,
             opts: Options) -> list[tuple[str, dict]]:
    """Convert every ``.onnx`` of ``entries`` to ``.ort`` (one converter process), check each
    against its source; return the ``.ort`` entries."""
    names = [name for name, _ in entries]
    ort_names = [name[: -len(".onnx")] + ".ort" for name in names]
    mobile.to_ort_many([(work / a, work / b) for a, b in zip(names, ort_names)],
                       opts.target_platform)
    out = []
    for (name, entry), ort_name in zip(entries, ort_names):
        par = parity.compare_sessions(parity.session(work / ort_name), parity.session(work / name),
                                      data.check.images, data.check.source)
        if entry["precision"] == "fp32" and par.worst > parity.FP32_TOLERANCE:
            raise VerificationError(f"{entry['config']['id']}: the .ort model differs from the "
                                    f".onnx by {par.worst:.3g}")
        out.append((ort_name, {**entry, "kind": "ort", "target_platform": opts.target_platform,
                               "parity": {"vs": name, **par.to_dict()},
                               "mobile": mobile.usability(onnx.load(work / name))}))
    return out


def _int8(work: Path, stem: str, fp32_sess: ort.InferenceSession, data: _Data,
          common: dict[str, Any], accuracy: dict[str, Any], props: dict[str, str],
          opts: Options) -> dict[str, Any]:
    """Quantize ``<stem>.onnx``; compare it with fp32 on the test images; fill ``accuracy``."""
    assert data.calib is not None and data.test is not None
    name = f"{stem}.int8.onnx"
    kept = quantize.quantize_int8(work / f"{stem}.onnx", work / name, data.calib.images,
                                  layout=opts.int8_layout)
    q_model = _finish(onnx.load(work / name), props, opts)
    onnx.checker.check_model(q_model, full_check=True)
    onnx.save(q_model, work / name)
    q_sess = parity.session(q_model)
    fp32 = parity.predict(fp32_sess, data.test.images)
    q = parity.predict(q_sess, data.test.images)
    labels = data.test.labels
    fp32_acc = float((fp32.argmax(1) == labels).mean())
    q_acc = float((q.argmax(1) == labels).mean())
    accuracy.update({"onnx_test": fp32_acc, "int8_test": q_acc, "int8_change": q_acc - fp32_acc,
                     "test_images": len(labels), "test_source": data.test.source})
    small = parity.compare_sessions(q_sess, fp32_sess, data.check.images, data.check.source)
    q_parity = {"vs": f"{stem}.onnx", "top1_agreement": float((fp32.argmax(1) == q.argmax(1)).mean()),
                "max_abs_diff": float(np.abs(q - fp32).max()), "images": len(labels),
                "inputs": data.test.source, "by_batch": small.to_dict()["max_abs_diff"]}
    # onnx_macs / onnx_params stay those of the fp32 graph it quantizes (same network)
    return {"kind": "onnx", "precision": "int8", **common, "opset": _opset_of(q_model),
            "ir_version": q_model.ir_version, "parity": q_parity, "accuracy": accuracy,
            "quantization": {"format": "QDQ", "per_channel": True, "weights": "int8",
                             "activations": "int8", "calibration": "MinMax",
                             "layout": opts.int8_layout, "float_nodes": kept,
                             "calib_images": len(data.calib.images),
                             "calib_source": data.calib.source}}


def _progress(cfg: FrontConfig, entries: list[tuple[str, dict]], seconds: float) -> str:
    """One line per configuration: cost, parity and, with ``--int8``, the int8 results."""
    fp32 = entries[0][1]
    line = (f"  {cfg.id}: {cfg.mflops:.3f} MFLOPs, {cfg.params} params "
            f"({fp32['params']['after_bn_folding']} after BN folding), parity "
            f"{parity.Parity({int(k): v for k, v in fp32['parity']['max_abs_diff'].items()}, '').summary()}")
    if len(entries) > 1:
        q = entries[1][1]
        acc = q["accuracy"]
        line += (f"; int8 on {acc['test_images']} test images: top-1 agreement "
                 f"{100 * q['parity']['top1_agreement']:.1f} %, accuracy {acc['onnx_test']:.4f} -> "
                 f"{acc['int8_test']:.4f} ({100 * acc['int8_change']:+.2f} pt)")
    return line + f", {seconds:.1f} s"


def _write_host_profile(work: Path, chosen: list[FrontConfig], zoo: ZooModel) -> str:
    """Time the fp32 file of every chosen config here (ONNX Runtime CPU, one thread, batch 1,
    as :func:`serve.runners.measure_latencies_ms` does for the server) and write the profile."""
    from serve.hostprofile import profile_document
    from serve.runners import LATENCY_QUANTILE, OrtRunner, measure_latencies_ms

    runners = {c.id: OrtRunner((work / f"{_file_stem(c.id)}.onnx").read_bytes(), 1) for c in chosen}
    pre = zoo.preprocessing
    latency = measure_latencies_ms(runners, (pre.channels, pre.image_size, pre.image_size))
    doc = profile_document(chosen, latency, backend="onnxruntime", threads=1,
                           quantile=LATENCY_QUANTILE)
    (work / HOST_PROFILE).write_text(json.dumps(doc, indent=2) + "\n")
    lat = ", ".join(f"{c.id} {latency[c.id]:.3f}" for c in chosen)
    _log(f"  host profile (ms at batch 1, 1 thread): {lat}; latency front "
         f"{', '.join(doc['latency_front'])}")
    return HOST_PROFILE


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


def _props(zoo: ZooModel, cfg: FrontConfig, opts: Options) -> dict[str, str]:
    pre = zoo.preprocessing
    return tidy.metadata(arch=zoo.meta["arch"]["name"], config=cfg.to_dict(), precision="fp32",
                         input_name=onnx_io.INPUT_NAME, output_name=onnx_io.OUTPUT_NAME,
                         input_shape=_input_shape(zoo, opts), mean=pre.mean, std=pre.std,
                         classes=zoo.classes)


def _input_shape(zoo: ZooModel, opts: Options) -> list[int | str]:
    pre = zoo.preprocessing
    return [opts.batch or tidy.BATCH_DIM, pre.channels, pre.image_size, pre.image_size]


def _export_files(zoo: ZooModel, chosen: list[FrontConfig], data: _Data, work: Path,
                  opts: Options) -> list[dict[str, Any]]:
    """Export, verify and write every chosen configuration into ``work``; return the manifest's
    file entries."""
    pre = zoo.preprocessing
    t0 = time.perf_counter()
    dense = [_extract(zoo, cfg) for cfg in chosen]
    try:
        exported = onnx_io.to_onnx_many(dense, (pre.channels, pre.image_size, pre.image_size),
                                        opset=opts.opset)
    except Exception as e:  # the exporter's own errors are long; keep their first line
        raise VerificationError(f"the ONNX export failed: {_first_line(e)}") from e
    _log(f"  exported in {time.perf_counter() - t0:.1f} s")

    def verify(cfg: FrontConfig, module: nn.Module, model: onnx.ModelProto
               ) -> tuple[list[tuple[str, dict]], float]:
        t0 = time.perf_counter()
        try:
            entries = _verify_config(cfg, module, model, work, data, opts, _props(zoo, cfg, opts))
        except VerificationError:
            raise
        except Exception as e:  # ONNX Runtime or quantizer failures
            raise VerificationError(f"{cfg.id}: {_first_line(e)}") from e
        return entries, time.perf_counter() - t0

    # configurations are independent: verify them on every core (a modest gain, 80.2 -> 72.5 s
    # for the shipped model's --all --ort --int8 on 2 idle cores: most of a check is ONNX
    # Runtime evaluating the test images, which already uses the cores)
    files: list[tuple[str, dict]] = []
    with ThreadPoolExecutor(max(1, min(len(chosen), os.cpu_count() or 1))) as pool:
        jobs = [pool.submit(verify, *job) for job in zip(chosen, dense, exported)]
        try:
            for cfg, job in zip(chosen, jobs):  # results and progress lines in front order
                entries, seconds = job.result()
                files += entries
                _log(_progress(cfg, entries, seconds))
        finally:
            for job in jobs:
                job.cancel()
    if opts.ort:
        t0 = time.perf_counter()
        try:
            ort_files = _add_ort(work, files, data, opts)
        except VerificationError:
            raise
        except Exception as e:  # converter failures
            raise VerificationError(f"ORT format: {_first_line(e)}") from e
        _log(f"  {len(ort_files)} .ort file(s) for {opts.target_platform} converted and checked "
             f"in {time.perf_counter() - t0:.1f} s")
        files += ort_files
    return [manifest.file_entry(work, name, **entry) for name, entry in files]


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
        files = _export_files(zoo, chosen, data, work, opts)
        pre = zoo.preprocessing
        doc = {
            "source": {"path": str(weights), "sha256": manifest.sha256(weights),
                       "arch": zoo.meta["arch"]},
            "software": manifest.software(),
            "input": {"name": onnx_io.INPUT_NAME, "dtype": "float32", "layout": "NCHW",
                      "shape": _input_shape(zoo, opts), "scale": "1/255",
                      "mean": list(pre.mean), "std": list(pre.std)},
            "output": {"name": onnx_io.OUTPUT_NAME, "classes": list(zoo.classes)},
            "inputs_for_checks": data.check.source,
            "ort": ({"target_platform": opts.target_platform,
                     "byte_reproducible": mobile.reproducible()} if opts.ort else None),
            "files": files,
        }
        doc["host_profile"] = _write_host_profile(work, chosen, zoo) if opts.host_profile else None
        manifest.write(work, doc)
        names = [f["path"] for f in files] + ([HOST_PROFILE] if opts.host_profile else [])
        out.mkdir(exist_ok=True)
        names.append(manifest.FILENAME)  # manifest last
        for name in names:
            os.replace(work / name, out / name)
        return out / manifest.FILENAME
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(work, ignore_errors=True)
