"""A lean ``multipart/form-data`` parser for a body already received in full (RFC 7578).

The server reads the whole (size-limited) body anyway, so the parts are found with ``bytes.find``
on it (C speed, no per-part temporary files) in the worker thread that also decodes the images.
Header parameters (``name``, ``filename``, ``boundary``) are parsed with python-multipart's
``parse_options_header``, as Starlette does.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.multipart import parse_options_header

MAX_OTHER_PARTS = 1000  # parts not named like the wanted field (Starlette's max_fields default)


class MultipartError(ValueError):
    """A malformed body (answered 400)."""


class TooManyParts(ValueError):
    """More parts named ``name`` than allowed (answered 413); ``count``: how many."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


@dataclass(slots=True)
class Part:
    filename: str | None
    content_type: str | None
    data: bytes


def boundary_of(content_type: str) -> bytes:
    """The ``boundary`` parameter of a ``multipart/form-data`` content type."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("multipart/form-data without a boundary parameter")
    return boundary


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_parts(body: bytes, boundary: bytes, name: str, max_parts: int) -> list[Part]:
    """The parts named ``name``, in order; the others are skipped (at most
    :data:`MAX_OTHER_PARTS`). Raises :class:`MultipartError` or :class:`TooManyParts`."""
    delim = b"--" + boundary
    if body.startswith(delim):
        pos = len(delim)
    else:  # a preamble before the first boundary
        i = body.find(b"\r\n" + delim)
        if i < 0:
            raise MultipartError("malformed multipart body: no boundary line found")
        pos = i + 2 + len(delim)
    sep = b"\r\n" + delim
    wanted = name.encode()
    parts: list[Part] = []
    count = others = 0
    while True:
        if body.startswith(b"--", pos):  # the close delimiter
            if count > max_parts:
                raise TooManyParts(count)
            return parts
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise MultipartError("malformed multipart body: bad boundary line")
        start = eol + 2
        if body.startswith(b"\r\n", start):  # a part without headers
            head, data_start = b"", start + 2
        else:
            end_head = body.find(b"\r\n\r\n", start)
            if end_head < 0:
                raise MultipartError("malformed multipart body: unterminated part headers")
            head, data_start = body[start:end_head], end_head + 4
        end = body.find(sep, data_start)
        if end < 0:
            raise MultipartError("malformed multipart body: missing closing boundary")
        field = filename = ctype = None
        for line in head.split(b"\r\n"):
            key, colon, value = line.partition(b":")
            if not colon:
                raise MultipartError("malformed multipart body: bad part header line")
            key = key.strip().lower()
            if key == b"content-disposition":
                _, params = parse_options_header(value.strip())
                field = params.get(b"name")
                raw_filename = params.get(b"filename")
                filename = None if raw_filename is None else _decode(raw_filename)
            elif key == b"content-type":
                ctype = _decode(value.strip())
        if field == wanted:
            count += 1
            if count <= max_parts:  # beyond the limit: only counted (for the 413 message)
                parts.append(Part(filename, ctype, body[data_start:end]))
        else:
            others += 1
            if others > MAX_OTHER_PARTS:
                raise MultipartError(f"too many form fields (more than {MAX_OTHER_PARTS})")
        pos = end + len(sep)

