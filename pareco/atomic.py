"""Atomic file writes: a crash at any moment leaves the old file or the new one, never a torn one.

    atomic_write(path, lambda tmp: save_file(tensors, tmp))       # any writer that takes a path
    atomic_write_bytes(path, json_text.encode())

The data goes to a temporary file in the destination folder (same filesystem), is flushed to disk
(``fsync``), gets the permissions a plain ``open()`` would give (``0o666`` minus the umask; the
temporary file starts as ``0o600``, and a server may run as another user), and is renamed over
``path`` (``os.replace``). On any error the temporary file is removed and the error re-raised.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` to fill a temporary file, then atomically move it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask
