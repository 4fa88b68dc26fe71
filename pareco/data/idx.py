"""Reader for the IDX format of (Fashion-)MNIST: big-endian header, then raw uint8 values.

Header: a 4-byte magic number ``0x0000 08 <ndim>`` (``08`` = unsigned byte), then ``ndim``
4-byte dimension sizes. Files may be gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from pareco.data.errors import DataError


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """Read a uint8 IDX file with ``ndim`` dimensions into a uint8 tensor of that shape.

    Raises :class:`DataError` naming the file if it cannot be read, has the wrong magic number,
    or its size does not match its header.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}; delete it and download or reinstall the "
                        f"dataset") from e
    header = 4 + 4 * ndim
    magic = 0x0800 | ndim
    if len(data) < header or struct.unpack(">I", data[:4])[0] != magic:
        raise DataError(f"{path} is not an IDX file of {ndim}-d unsigned bytes (expected magic "
                        f"number {magic:#010x}); delete it and download or reinstall the dataset")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path} is truncated or corrupt: its header promises {expected} bytes "
                        f"but it holds {len(data)}; delete it and download or reinstall the "
                        f"dataset")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())
