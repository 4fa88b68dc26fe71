"""``multipart/form-data`` bodies already received in full (RFC 7578), parsed with
python-multipart's synchronous ``MultipartParser`` in the worker thread that also decodes.

The whole body is written to the parser at once; a preamble before the first boundary (allowed by
RFC 2046, refused by python-multipart) is skipped first. Header parameters (``name``,
``filename``, ``filename*``, ``boundary``) are parsed with python-multipart's
``parse_options_header``, as Starlette does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_OTHER_PARTS = 1000  # parts not named like the wanted field (Starlette's max_fields default)
_EXTENDED_FILENAME = re.compile(rb"""(?:^|;)\s*filename\*\s*=\s*"?([^;"]*)"?""", re.IGNORECASE)


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


def _filename(disposition: bytes, params: dict[bytes, bytes]) -> str | None:
    """``filename*`` (RFC 5987: ``charset'lang'percent-encoded``; python-multipart drops it) if
    the raw Content-Disposition has one, else ``filename``."""
    match = _EXTENDED_FILENAME.search(disposition)
    if match is not None:
        charset, _, rest = _text(match.group(1).strip()).partition("'")
        _, _, encoded = rest.partition("'")
        try:
            return unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            pass  # a bad extended value: fall back to the plain one
    raw = params.get(b"filename")
    return None if raw is None else _text(raw)


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@dataclass
class _Collector:
    """Parser callbacks: keeps the parts named ``wanted`` (at most ``max_parts``)."""

    wanted: bytes
    max_parts: int
    parts: list[Part] = field(default_factory=list)
    count: int = 0
    others: int = 0
    ended: bool = False
    _headers: dict[bytes, bytes] = field(default_factory=dict)
    _field: bytes = b""
    _value: bytes = b""
    _chunks: list[bytes] = field(default_factory=list)

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_part_data": self._data, "on_part_end": self._end,
                "on_end": self._done}

    def _begin(self) -> None:
        self._headers, self._chunks, self._field, self._value = {}, [], b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field, self._value = b"", b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        self._chunks.append(data[start:end])

    def _end(self) -> None:
        disposition = self._headers.get(b"content-disposition", b"")
        _, params = parse_options_header(disposition)
        if params.get(b"name") != self.wanted:
            self.others += 1
            if self.others > MAX_OTHER_PARTS:
                raise MultipartError(f"too many form fields (more than {MAX_OTHER_PARTS})")
            return
        self.count += 1
        if self.count <= self.max_parts:  # beyond the limit: only counted (for the 413 message)
            ctype = self._headers.get(b"content-type")
            self.parts.append(Part(_filename(disposition, params), None if ctype is None else _text(ctype),
                                   b"".join(self._chunks)))

    def _done(self) -> None:
        self.ended = True


def parse_parts(body: bytes, boundary: bytes, name: str, max_parts: int) -> list[Part]:
    """The parts named ``name``, in order; the others are skipped (at most
    :data:`MAX_OTHER_PARTS`). Raises :class:`MultipartError` or :class:`TooManyParts`."""
    delim = b"--" + boundary
    start = 0
    if not body.startswith(delim):  # a preamble before the first boundary
        i = body.find(b"\r\n" + delim)
        if i < 0:
            raise MultipartError("malformed multipart body: no boundary line found")
        start = i + 2
    collector = _Collector(name.encode(), max_parts)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.write(body[start:] if start else body)
        parser.finalize()
    except (MultipartParseError, ValueError) as e:
        if isinstance(e, MultipartError):
            raise
        raise MultipartError(f"malformed multipart body: {e}") from None
    if not collector.ended:
        raise MultipartError("malformed multipart body: missing closing boundary")
    if collector.count > max_parts:
        raise TooManyParts(collector.count)
    return collector.parts
