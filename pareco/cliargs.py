"""argparse ``type=`` parsers shared by the command lines (``python -m pareco.train``,
``python -m export``, ``python -m pareco.profile``): a bad value is a usage error that says what
is accepted, e.g. ``argument --epochs: expected a positive integer, got '0'``."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


def int_at_least(lo: int) -> Callable[[str], int]:
    """A parser of integers >= ``lo`` (named "positive" for 1)."""
    what = "a positive integer" if lo == 1 else f"an integer >= {lo}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_weight_file_tool_options(p: argparse.ArgumentParser) -> None:
    """The options of the tools that rework a trained weight file with its training data
    (``python -m pareco.candidates``, ``python -m pareco.refine``): ``--data-dir``,
    ``--no-download``, ``--threads``, ``--quiet``."""
    p.add_argument("--data-dir", type=Path, help="folder holding the dataset (searched first)")
    p.add_argument("--no-download", action="store_true", help="never download the dataset")
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
