"""Where datasets are looked for: the folders searched, in order, and the download cache.

Order: the ``data_dir`` argument, ``$PARECO_DATA``, dataset-specific system folders (the Debian
package ``dataset-fashion-mnist``), then the user cache (``$XDG_CACHE_HOME/pareco/data`` or
``~/.cache/pareco/data``), which is also where downloads go. Nothing is ever written outside the
cache.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PARECO_DATA"

SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
"""Read-only folders where OS packages install datasets, per dataset name."""


def cache_dir() -> Path:
    """The user cache folder for downloaded datasets (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pareco" / "data"


def search_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """The folders to search for dataset ``name``, in lookup order, without duplicates."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    dirs.extend(SYSTEM_DIRS.get(name, ()))
    dirs.append(cache_dir())
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique
