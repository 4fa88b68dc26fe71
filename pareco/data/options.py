"""Validation of the ``image_size`` and ``augment`` arguments of :func:`~pareco.data.load_data`."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from pareco.data.errors import DataError


def check_image_size(image_size: int | None, default: int) -> int:
    """The side length in pixels of the images a bundle yields (``None``: ``default``)."""
    if image_size is None:
        return default
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) \
            or image_size < 8:
        raise DataError(f"image_size must be an integer of at least 8 pixels or None for the "
                        f"dataset's native {default}, got {image_size!r}")
    return int(image_size)


def check_augment(augment: Mapping[str, Any] | None, defaults: Mapping[str, Any],
                  dataset: str) -> dict[str, Any]:
    """``defaults`` overridden by ``augment``, with keys and value types checked.

    The type of each default fixes the accepted type: ``bool``; ``int`` (>= 0); ``float`` (>= 0,
    ints accepted); ``tuple`` of two floats ``0 < lo <= hi <= 1``.
    """
    if augment is None:
        return dict(defaults)
    if not isinstance(augment, Mapping):
        raise DataError(f"augment must be a dict or None, got {type(augment).__name__}")
    unknown = sorted(set(augment) - set(defaults))
    if unknown:
        raise DataError(f"unknown augment option(s) {', '.join(map(repr, unknown))} for "
                        f"{dataset}; valid options: {', '.join(sorted(defaults))}")
    out = dict(defaults)
    for key, value in augment.items():
        out[key] = _check_value(key, value, defaults[key], dataset)
    return out


def _check_value(key: str, value: Any, default: Any, dataset: str) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        expected = "True or False"
    elif isinstance(default, int):
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
            return int(value)
        expected = "an integer >= 0"
    elif isinstance(default, float):
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= 0:
            return float(value)
        expected = "a number >= 0 (0 disables it)"
    else:
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            lo = hi = -1.0
        if 0.0 < lo <= hi <= 1.0:
            return (lo, hi)
        expected = "a pair (lo, hi) with 0 < lo <= hi <= 1"
    raise DataError(f"augment[{key!r}] for {dataset} must be {expected}, got {value!r}")
