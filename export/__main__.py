"""``python -m export``: front configurations of a weight file to verified ONNX / ORT / int8 files.

    python -m export --weights zoo/resnet20-fmnist/model.safetensors --all --out dist/
    python -m export --weights W --mflops 20 --out dist/ --ort --int8 --calib-images 512
    python -m export --weights W --all --out dist/ --ort --int8 --batch 1 --opset 18
    python -m export --weights W --config c03 k07 --out dist/ --host-profile

Exit status: 0 on success; 2 on bad input (arguments, weight file, unknown config id, budget
below the smallest config, missing data for --int8, unwritable --out), with one line on stderr;
1 when an exported file fails a check (parity, MAC/parameter count, ONNX checker). In both
failure cases nothing is written to --out.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import onnx

from export import tidy
from export.mobile import TARGET_PLATFORMS
from export.pipeline import ExportError, Options, VerificationError, run
from export.quantize import LAYOUTS
from pareco.cliargs import positive_int
from pareco.weightfile import WeightFileError


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MFLOPs, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"the MFLOPs budget must be a positive number, got {text!r}")
    return value


MIN_OPSET = 18
"""The lowest opset the torch exporter writes (onnx's version converter cannot lower these graphs
further: it has no Relu 14 -> 13 adapter and mis-converts ReduceMean 18 -> 17)."""


def _opset(text: str) -> int:
    latest = onnx.defs.onnx_opset_version()
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ONNX opset number, got {text!r}") from None
    if not MIN_OPSET <= value <= latest:
        raise argparse.ArgumentTypeError(f"opset must be between {MIN_OPSET} and {latest}, "
                                         f"got {value}")
    return value


def _eval_images(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m export", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True, help="the model.safetensors weight file")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", nargs="+", metavar="ID",
                       help="configuration id(s): of the front (c..) or the other calibrated "
                            "candidates (k.., e.g. from a server's latency front)")
    which.add_argument("--mflops", type=_budget, metavar="X",
                       help="the most accurate configuration with MFLOPs <= X")
    which.add_argument("--all", action="store_true", help="every configuration of the front")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--ort", action="store_true",
                   help="also write the ORT format (.ort) for mobile runtimes")
    p.add_argument("--int8", action="store_true",
                   help="also write a static int8 QDQ model calibrated on training images")
    p.add_argument("--calib-images", type=positive_int, metavar="N",
                   help="training images for int8 calibration (default 256; needs --int8)")
    p.add_argument("--data-dir", type=Path, metavar="D",
                   help="where the training dataset lies (needed by --int8 unless found in the "
                        "default locations; also gives real images for the parity check)")
    p.add_argument("--eval-images", type=_eval_images, metavar="N",
                   help="test images the int8 model is compared with fp32 on: a positive number "
                        "or 'all' (default 1000; needs --int8)")
    p.add_argument("--int8-layout", choices=LAYOUTS, metavar="L",
                   help="float-edges (default): the first and last layers stay float - float "
                        "input and logits, runs right in other runtimes too; all: every Conv/Gemm "
                        "quantized (ONNX Runtime only; needs --int8)")
    p.add_argument("--target-platform", choices=TARGET_PLATFORMS, metavar="P",
                   help="CPU the .ort files are optimized for: arm (default: phones, Apple "
                        "silicon) or amd64 (x86-64 desktops); needs --ort")
    p.add_argument("--batch", type=positive_int, metavar="B",
                   help="fix the batch size of every file to B (NNAPI and CoreML need fixed "
                        "shapes; default: a dynamic batch axis)")
    latest = onnx.defs.onnx_opset_version()
    p.add_argument("--opset", type=_opset, metavar="K",
                   help=f"ONNX opset, {MIN_OPSET}..{latest} (default: the exporter's); the IR "
                        f"version written is the lowest the opset allows (opset {MIN_OPSET}: IR "
                        f"{tidy.minimal_ir_version({'': MIN_OPSET})}), for older runtimes")
    p.add_argument("--host-profile", action="store_true",
                   help="also time every exported fp32 file on this host (ONNX Runtime CPU, one "
                        "thread, batch 1) and write host-profile.json: latencies and the latency "
                        "front, as the server measures them")
    return p


def parse_options(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Options]:
    args = build_parser().parse_args(argv)
    for flag, needs in (("calib_images", "int8"), ("eval_images", "int8"),
                        ("int8_layout", "int8"), ("target_platform", "ort")):
        if getattr(args, flag) is not None and not getattr(args, needs):
            raise _UsageError(f"--{flag.replace('_', '-')} needs --{needs}")
    defaults = Options()
    opts = Options(
        config_ids=tuple(args.config or ()), mflops=args.mflops, all_configs=args.all,
        ort=args.ort, int8=args.int8,
        calib_images=defaults.calib_images if args.calib_images is None else args.calib_images,
        eval_images=(defaults.eval_images if args.eval_images is None
                     else None if args.eval_images == "all" else args.eval_images),
        data_dir=args.data_dir, opset=args.opset, batch=args.batch,
        target_platform=args.target_platform or defaults.target_platform,
        int8_layout=args.int8_layout or defaults.int8_layout, host_profile=args.host_profile,
    )
    return args, opts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (see the module docstring)."""
    try:
        args, opts = parse_options(argv)
        path = run(args.weights, args.out, opts)
    except _UsageError as e:
        print(f"python -m export: error: {e} (see --help)", file=sys.stderr)
        return 2
    except (ExportError, WeightFileError) as e:
        print(f"python -m export: error: {e}", file=sys.stderr)
        return 2
    except VerificationError as e:
        print(f"python -m export: check failed: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
