"""Decode, validate and preprocess uploaded images (Pillow), off the event loop.

Contract of :func:`preprocess`: bytes of any format Pillow reads -> float32 ``(C, S, S)`` where
``C`` and ``S`` come from the weight file's preprocessing:

1. the first frame; its size (from the header, before any pixel is decoded) must be at most
   ``max_pixels`` pixels and :data:`MAX_SIDE` per side (413 otherwise: the decompression-bomb
   guard; the side limit bounds Pillow's per-row overhead of very tall images);
2. the centre square of side ``min(width, height)`` is resized to ``S x S`` (bilinear) in ONE
   step, so the work and memory after decoding are bounded by the *output*, whatever the aspect
   ratio (a 1 x 30,000 PNG costs what a 30,000-pixel square costs to decode, nothing more);
   JPEGs are decoded at a reduced scale (``draft``) that keeps the short side >= ``S``;
3. pixel values are scaled to [0, 1] by the mode's bit depth: 8-bit modes by 255, 16-bit
   (``I;16*``, and ``I``, as Pillow decodes 16-bit PNG/PGM/TIFF) by 65535, float ``F`` as is;
   values outside [0, 1] are clipped. Alpha (``LA``, ``RGBA``, ``PA``, ``P`` with transparency,
   premultiplied ``La``/``RGBa``) is composited over black. ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``
   are converted to RGB; grey from colour uses ITU-R 601 luma (as Pillow's ``L``);
4. the EXIF orientation is applied (to the centre square: it commutes with the crop);
5. normalized ``(x - mean) / std`` per channel.

Failures raise :class:`ImageError` with an HTTP status: 400 for empty, non-image, truncated or
unsupported data, 413 for too many pixels (Pillow's own ``DecompressionBombError`` too).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from serve.model import Preprocessing

DEFAULT_MAX_PIXELS = 16_000_000  # 4000 x 4000; below Pillow's own 89.5 Mpx warning threshold
MAX_SIDE = 32_768  # pixels; Pillow keeps a pointer per row: a 1 x 16,000,000 image costs 128 MB

_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0,
          "F": 1.0}  # every other mode Pillow decodes to is 8 bits per channel
_OVERSAMPLE = 4  # large squares: shrunk to 4x the output side first, then bilinear
_NEAREST_FIRST = frozenset({"P", "PA", "1", "LA", "RGBA"})
_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}


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
    img = _open(data, name)
    with img:
        _check_size(img, max_pixels, name)
        orientation = _orientation(img)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.seek(0)
                img.draft("L" if pre.channels == 1 else "RGB", (pre.image_size, pre.image_size))
                small = _centre_square(img, pre.image_size)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(413, f"{name}: image too large ({e})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(400, f"{name}: corrupt, truncated or unsupported image "
                                  f"({_reason(e)})") from None
    if orientation in _ORIENTATION:
        small = small.transpose(_ORIENTATION[orientation])
    arr = to_unit_float(small, pre.channels, name)
    mean = np.asarray(pre.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(pre.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((arr - mean) / std, dtype=np.float32)


def _open(data: bytes, name: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageError(413, f"{name}: image too large ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(400, f"{name}: not an image (no format Pillow reads matches these "
                              f"{len(data)} bytes)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(400, f"{name}: not a readable image ({_reason(e)})") from None


def _check_size(img: Image.Image, max_pixels: int, name: str) -> None:
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError(400, f"{name}: image has no pixels ({width}x{height})")
    if max(width, height) > MAX_SIDE:
        raise ImageError(413, f"{name}: image is {width}x{height}; a side above {MAX_SIDE} pixels "
                              f"is refused (extreme aspect ratio, decompression-bomb guard)")
    if width * height > max_pixels:
        raise ImageError(413, f"{name}: image is {width}x{height} = {width * height} pixels, "
                              f"more than the {max_pixels} allowed (decompression-bomb guard)")


def _orientation(img: Image.Image) -> int:
    """The EXIF Orientation tag (1 = as stored); malformed EXIF counts as 1."""
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # malformed EXIF must not reject otherwise valid pixels
        return 1


def _centre_square(img: Image.Image, size: int) -> Image.Image:
    """Decode, then the centre ``min(w, h)`` square resized to ``size x size``, with no copy of
    the full-size image.

    Every mode is resized in its own mode (bit depth kept). A square larger than
    ``_OVERSAMPLE * size`` is first shrunk to about that: box-averaged (``reduce``) in most modes;
    with nearest neighbour for palette and 1-bit images (Pillow resizes them so anyway, and their
    colours are expanded only after) and for straight-alpha modes (Pillow's bilinear resize and
    reduce of RGBA/LA premultiply a full-size copy first: 64 MB for 16 Mpx); ``I;16`` has no
    ``reduce``, and its resize makes no copy."""
    img.load()
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    box: tuple[int, int, int, int] = (left, top, left + side, top + side)
    small = _OVERSAMPLE * size
    if side > small and img.mode in _NEAREST_FIRST:
        img, box = img.resize((small, small), Image.Resampling.NEAREST, box=box), (0, 0, small, small)
    elif side > small and not img.mode.startswith("I;16"):
        img = img.reduce(side // small, box=box)
        box = (0, 0, *img.size)
    if img.mode in ("P", "PA", "1"):  # expand to pixel values, then resize properly
        img = img.crop(box) if box != (0, 0, *img.size) else img
        box = (0, 0, *img.size)
        if img.mode == "1":
            img = img.convert("L")
        elif img.mode == "PA" or "transparency" in img.info:
            img = img.convert("RGBA")
        else:
            img = img.convert("RGB")
    if img.size == (size, size) and box == (0, 0, size, size):
        return img.copy()
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box)


def to_unit_float(img: Image.Image, channels: int, name: str = "image") -> np.ndarray:
    """A small image -> float32 ``(channels, H, W)`` in [0, 1]: scaled by the mode's bit depth,
    alpha composited over black, colour <-> grey as needed (see module)."""
    mode = img.mode
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img, mode = img.convert("RGB"), "RGB"
    try:
        a = np.asarray(img)
    except Exception as e:
        raise ImageError(400, f"{name}: unsupported pixel mode {mode!r} ({_reason(e)})") from None
    if mode not in _SCALE and mode not in ("L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX"):
        raise ImageError(400, f"{name}: unsupported pixel mode {mode!r}")
    x = a.astype(np.float32) / np.float32(_SCALE.get(mode, 255.0))
    if x.ndim == 2:
        x = x[:, :, None]
    if mode in ("LA", "RGBA"):  # straight alpha: composite over black
        x = x[:, :, :-1] * x[:, :, -1:]
    elif mode in ("La", "RGBa", "RGBX"):  # premultiplied (or padding): the colour is the result
        x = x[:, :, :-1]
    np.clip(x, 0.0, 1.0, out=x)
    if channels == 1 and x.shape[2] == 3:
        x = x @ _LUMA
        x = x[:, :, None]
    elif channels == 3 and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return x.transpose(2, 0, 1)


def _reason(e: BaseException) -> str:
    return str(e) or type(e).__name__
