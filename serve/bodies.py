"""A request body -> one model-input batch and the file names (runs in a worker thread)."""

from __future__ import annotations

import numpy as np

from serve.errors import ApiError
from serve.images import ImageError, preprocess
from serve.model import Preprocessing
from serve.multipart import MultipartError, TooManyParts, parse_parts
from serve.settings import Settings

_ACCEPTED_PART_TYPES = ("image/", "application/octet-stream")


def prepare_body(body: bytes, boundary: bytes | None, pre: Preprocessing,
                 settings: Settings) -> tuple[np.ndarray, list[str | None]]:
    """float32 ``(N, C, S, S)`` and N file names; ``boundary=None``: the body is one raw image
    (its name is ``None``). Raises :class:`ApiError` (400, 413, 415, 422)."""
    try:
        if boundary is None:
            x = preprocess(body, pre, max_pixels=settings.max_pixels, name="image body")
            return x[None], [None]
        try:
            parts = parse_parts(body, boundary, "file", settings.max_files)
        except TooManyParts as e:
            raise ApiError(413, f"{e.count} files in one request; the limit is "
                                f"{settings.max_files}") from None
        except MultipartError as e:
            raise ApiError(400, str(e)) from None
        if not parts:
            raise ApiError(422, "no image uploaded: send one or more multipart parts named 'file'")
        names = [f"file {i}" + (f" ({p.filename!r})" if p.filename else "")
                 for i, p in enumerate(parts)]
        for name, p in zip(names, parts):
            ctype = (p.content_type or "application/octet-stream").lower()
            if not ctype.startswith(_ACCEPTED_PART_TYPES):
                raise ApiError(415, f"{name}: content type {ctype!r} is not an image type")
        batch = np.stack([preprocess(p.data, pre, max_pixels=settings.max_pixels, name=name)
                          for name, p in zip(names, parts)])
        return batch, [p.filename for p in parts]
    except ImageError as e:
        raise ApiError(e.status, str(e)) from None
