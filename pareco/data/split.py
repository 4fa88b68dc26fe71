"""The training subset and the fixed-seed validation split carved from the training set."""

from __future__ import annotations

import numbers

import torch

from pareco.data.errors import DataError

DEFAULT_MAX_VAL = 5000
"""``val_size=None`` means ``min(DEFAULT_MAX_VAL, 10% of the training images)`` (at least 1)."""


def check_subset(subset: int | None, n: int) -> int:
    """How many training images to keep: the first ``subset`` of ``n``, or all when ``None``."""
    if subset is None:
        return n
    if isinstance(subset, bool) or not isinstance(subset, numbers.Integral) or not 2 <= subset:
        raise DataError(f"subset must be an integer of at least 2 (training images to keep) or "
                        f"None for all, got {subset!r}")
    if subset > n:
        raise DataError(f"subset={subset} exceeds the {n} training images available; use at "
                        f"most {n} or None for all")
    return int(subset)


def val_count(val_size: int | float | None, n: int) -> int:
    """The number of validation images out of ``n`` training images.

    ``val_size``: an ``int`` count in ``[1, n-1]``, a ``float`` fraction in ``(0, 1)``, or ``None``
    for the default. The result always leaves at least one training image.
    """
    if val_size is None:
        count = max(1, min(DEFAULT_MAX_VAL, n // 10))
    elif isinstance(val_size, bool):
        count = -1
    elif isinstance(val_size, numbers.Integral):
        count = int(val_size)
    elif isinstance(val_size, numbers.Real) and 0.0 < float(val_size) < 1.0:
        count = max(1, round(float(val_size) * n))
    else:
        raise DataError(f"val_size must be an image count (int), a fraction in (0, 1) (float) or "
                        f"None for min({DEFAULT_MAX_VAL}, 10%), got {val_size!r}")
    if not 1 <= count <= n - 1:
        raise DataError(f"val_size={val_size!r} gives {count} validation images, but it must "
                        f"leave between 1 and {n - 1} of the {n} training images for validation")
    return count


def split_indices(n: int, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint ``(train, val)`` index tensors covering ``range(n)``, each sorted ascending.

    Deterministic in ``(n, n_val, seed)`` and independent of torch's global RNG state.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values
