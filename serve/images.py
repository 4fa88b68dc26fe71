"""Decode, validate and preprocess uploaded images (Pillow), off the event loop.

Contract of :func:`preprocess`: bytes of any format Pillow reads -> a float32 array
``(C, S, S)`` where ``C`` and ``S`` come from the weight file's preprocessing: the first frame is
converted to ``L`` (C=1) or ``RGB`` (C=3), its shorter side resized to ``S`` (bilinear) and the
centre ``S x S`` cropped, pixels scaled to [0, 1] and normalized ``(x - mean) / std`` per channel.

Failures raise :class:`ImageError` with an HTTP status: 400 for empty, non-image or truncated
data, 413 for images whose pixel count exceeds ``max_pixels`` (the decompression-bomb guard, checked
from the header before any pixel is decoded; Pillow's own ``DecompressionBombError`` maps to 413
too).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pareco.weightfile import Preprocessing

DEFAULT_MAX_PIXELS = 16_000_000  # 4000 x 4000; below Pillow's own 89.5 Mpx warning threshold


class ImageError(ValueError):
    """An upload that cannot be turned into model input; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def preprocess(data: bytes, pre: Preprocessing, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               name: str = "image") -> np.ndarray:
    """One upload -> normalized float32 ``(C, S, S)``; raises :class:`ImageError` (see module)."""
    if not data:
        raise ImageError(400, f"{name}: empty file")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageError(413, f"{name}: image too large ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(400, f"{name}: not an image (no format Pillow reads matches these "
                              f"{len(data)} bytes)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(400, f"{name}: not a readable image ({_reason(e)})") from None
    with img:
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageError(400, f"{name}: image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageError(413, f"{name}: image is {width}x{height} = {width * height} pixels, "
                                  f"more than the {max_pixels} allowed (decompression-bomb guard)")
        mode = "L" if pre.channels == 1 else "RGB"
        try:
            img.seek(0)
            img.draft(mode, (pre.image_size, pre.image_size))  # JPEG: decode at reduced scale
            img.load()
            rgb = img.convert(mode)
        except Image.DecompressionBombError as e:
            raise ImageError(413, f"{name}: image too large ({e})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(400, f"{name}: corrupt or truncated image ({_reason(e)})") from None
    _apply_exif_orientation(rgb)
    arr = np.asarray(_resize_center_crop(rgb, pre.image_size), dtype=np.float32) / 255.0
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    mean = np.asarray(pre.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(pre.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((arr - mean) / std)


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Shorter side -> ``size`` (bilinear), then the centre ``size x size`` square."""
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def _apply_exif_orientation(img: Image.Image) -> None:
    """Rotate/flip in place as the EXIF Orientation tag says (phone photos); bad EXIF is ignored."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # malformed EXIF must not reject otherwise valid pixels
        pass


def _reason(e: BaseException) -> str:
    return str(e) or type(e).__name__
