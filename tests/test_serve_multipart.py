"""The multipart parser (python-multipart's ``MultipartParser`` on the buffered body): a corpus
with the expected parts, checked against Starlette's own streaming parser where that one applies.

Before (the hand-written parser): a part with no headers could never be parsed, and CRLF +
``--boundary`` + a suffix inside data was a 400 although it is data.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from serve.multipart import MultipartError, TooManyParts, boundary_of, parse_parts

CD = b'Content-Disposition: form-data; name="file"'


def body(*parts: bytes, boundary: bytes = b"XyZ", close: bool = True) -> bytes:
    out = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return out + (b"--" + boundary + b"--\r\n" if close else b"")


CORPUS = {  # name: (content type, body, expected [(filename, content type, data)])
    "two files (httpx)": None,  # built below
    "quoted boundary": ('multipart/form-data; boundary="XyZ"',
                        body(CD + b'; filename="a.png"\r\nContent-Type: image/png\r\n\r\nAB'),
                        [("a.png", "image/png", b"AB")]),
    "preamble and epilogue": ("multipart/form-data; boundary=XyZ",
                              b"preamble\r\n" + body(CD + b"\r\n\r\nAB") + b"epilogue",
                              [(None, None, b"AB")]),
    "header case": ("multipart/form-data; boundary=XyZ",
                    body(b'content-disposition: form-data; name="file"; filename="b"\r\n'
                         b"CONTENT-TYPE: image/gif\r\n\r\nGIF"), [("b", "image/gif", b"GIF")]),
    "filename*": ("multipart/form-data; boundary=XyZ",
                  body(CD + b"; filename*=UTF-8''%C3%A9t%C3%A9.png\r\n\r\nX"),
                  [("\u00e9t\u00e9.png", None, b"X")]),
    "boundary-like data": ("multipart/form-data; boundary=XyZ",
                           body(CD + b'; filename="c"\r\n\r\nA\r\n--XyZsuffix\r\n--XyZ-x B'),
                           [("c", None, b"A\r\n--XyZsuffix\r\n--XyZ-x B")]),
    "part without headers, then a file": ("multipart/form-data; boundary=XyZ",
                                          body(b"\r\nno name", CD + b'; filename="d"\r\n\r\nD'),
                                          [("d", None, b"D")]),
    "other fields skipped": ("multipart/form-data; boundary=XyZ",
                             body(b'Content-Disposition: form-data; name="note"\r\n\r\nhi',
                                  CD + b'; filename="e"\r\n\r\n'),
                             [("e", None, b"")]),
}
_req = httpx.Request("POST", "http://x/", files=[("file", ("x.png", b"\r\n--\r\n", "image/png")),
                                                  ("file", ("y", b"", "image/gif"))])
CORPUS["two files (httpx)"] = (_req.headers["content-type"], _req.read(),
                               [("x.png", "image/png", b"\r\n--\r\n"), ("y", "image/gif", b"")])


def starlette_parts(ctype: str, data: bytes) -> list[tuple]:
    async def stream():
        yield data

    async def go():
        form = await MultiPartParser(Headers({"content-type": ctype}), stream()).parse()
        out = []
        for v in form.getlist("file"):
            if isinstance(v, UploadFile):
                out.append((v.filename, v.headers.get("content-type"), await v.read()))
            else:
                out.append((None, None, v.encode()))
        return out
    return asyncio.run(go())


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus(name):
    ctype, data, expected = CORPUS[name]
    got = [(p.filename, p.content_type, p.data) for p in
           parse_parts(data, boundary_of(ctype), "file", 10)]
    assert got == expected
    # Starlette refuses a preamble (RFC 2046 allows one) and a part without a name, and ignores
    # filename*; everywhere else both parsers must agree.
    if name not in ("preamble and epilogue", "part without headers, then a file", "filename*"):
        assert got == starlette_parts(ctype, data)


@pytest.mark.parametrize("data", [
    body(CD + b"\r\n\r\nAB", close=False),                      # missing final boundary
    b"--XyZ\r\n" + CD + b"\r\n\r\nabc",                         # no closing delimiter at all
    b"no boundary anywhere",
])
def test_malformed_bodies_are_errors(data):
    with pytest.raises(MultipartError):
        parse_parts(data, b"XyZ", "file", 10)


def test_too_many_parts_are_counted():
    data = body(*(CD + b"\r\n\r\nx" for _ in range(5)))
    with pytest.raises(TooManyParts) as e:
        parse_parts(data, b"XyZ", "file", 3)
    assert e.value.count == 5
