"""The Open Inference Protocol (KServe v2) REST wire format: request -> batch, outputs -> body.

Both JSON tensors (``data``) and the binary tensor extension (``binary_data_size`` parameters, the
JSON header's length in ``Inference-Header-Content-Length``, tensors appended after it; what
``tritonclient`` sends by default) are accepted and produced. Runs in a worker thread.

Accepted request (one input tensor):

- ``input``: FP32 ``[N, C, S, S]``, the preprocessed batch (the model's normalization applied);
- ``image``: BYTES ``[N]`` (or ``[N, 1]``), encoded images (any format Pillow reads); in JSON
  each element is a base64 string, in binary the usual 4-byte little-endian length prefix;

``parameters``: ``mflops`` or ``latency_ms`` (the budget, at most one), ``binary_data_output``.
Outputs: ``probabilities`` FP32 ``[N, K]`` (softmax, class order), optionally with the
classification extension (``"classification": k`` -> BYTES ``"probability:index:label"``, top k).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve.errors import ApiError
from serve.images import ImageError, preprocess
from serve.model import Preprocessing
from serve.settings import Settings

INPUTS = ("input", "image")
OUTPUT = "probabilities"
REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")
PARAMETERS = ("mflops", "latency_ms", "binary_data_output")
HEADER_LENGTH = "inference-header-content-length"


@dataclass(frozen=True)
class RequestedOutput:
    binary: bool
    classification: int | None = None


@dataclass(frozen=True)
class InferRequest:
    """A parsed request: the float32 ``(N, C, S, S)`` batch, the budget, the outputs wanted."""

    id: str | None
    batch: np.ndarray
    mflops: float | None
    latency_ms: float | None
    output: RequestedOutput


def _bad(detail: str, status: int = 400) -> ApiError:
    return ApiError(status, detail)


def _dict(value: Any, what: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a JSON object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise _bad(f"{what}: unknown key(s) {', '.join(map(repr, unknown))}; accepted: "
                   f"{', '.join(allowed)}")
    return value


def _budget(params: dict[str, Any], name: str) -> float | None:
    v = params.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise _bad(f"parameter {name} must be a positive number, got {v!r}", 422)
    return float(v)


def parse_infer(body: bytes, header_length: str | None, pre: Preprocessing, classes: int,
                settings: Settings) -> InferRequest:
    """Parse an infer request body; raises :class:`ApiError` (400, 413, 422) naming what is
    accepted."""
    header, binary = body, b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise _bad(f"Inference-Header-Content-Length {header_length!r} is not a length within "
                       f"the {len(body)}-byte body")
        header, binary = body[:int(header_length)], body[int(header_length):]
    try:
        doc = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(f"the request (or its JSON header) is not valid JSON: {e}") from None
    doc = _dict(doc, "the request", REQUEST_KEYS)
    params = _dict(doc.get("parameters", {}), "parameters", PARAMETERS)
    mflops, latency = _budget(params, "mflops"), _budget(params, "latency_ms")
    if mflops is not None and latency is not None:
        raise _bad("give at most one budget parameter: mflops or latency_ms", 422)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise _bad(f"'inputs' must be a list of exactly one tensor, named one of "
                   f"{', '.join(INPUTS)}")
    batch = _input_batch(inputs[0], binary, pre, settings)
    rid = doc.get("id")
    return InferRequest(None if rid is None else str(rid), batch, mflops, latency,
                        _output(doc.get("outputs"), bool(params.get("binary_data_output")),
                                classes))


def _input_batch(t: Any, binary: bytes, pre: Preprocessing, settings: Settings) -> np.ndarray:
    """The one input tensor -> float32 ``(N, C, S, S)``."""
    t = _dict(t, "the input tensor", ("name", "datatype", "shape", "data", "parameters"))
    name, dtype, shape = t.get("name"), t.get("datatype"), t.get("shape")
    want = {"input": "FP32", "image": "BYTES"}
    if name not in want:
        dims = ", ".join(map(str, pre.shape))
        raise _bad(f"unknown input {name!r}; accepted: 'input' (FP32 [N, {dims}]) or 'image' "
                   f"(BYTES [N], encoded images)")
    if dtype != want[name]:
        raise _bad(f"input {name!r} must have datatype {want[name]}, got {dtype!r}")
    full = [-1, *pre.shape] if name == "input" else [-1]
    if (not isinstance(shape, list) or not all(type(d) is int for d in shape)
            or not (len(shape) == len(full) or (name == "image" and shape[1:] == [1]))
            or any(w != -1 and d != w for d, w in zip(shape, full)) or not shape or shape[0] < 1):
        raise _bad(f"input {name!r} must have shape {full} (N >= 1), got {shape!r}")
    if shape[0] > settings.max_files:
        raise _bad(f"{shape[0]} images in one request; the limit is {settings.max_files}", 413)
    size = _binary_size(t.get("parameters"), name)
    if size is not None and size != len(binary):
        raise _bad(f"input {name!r}: binary_data_size {size} but {len(binary)} bytes follow the "
                   f"JSON header")
    if size is None and "data" not in t:
        raise _bad(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    if name == "input":
        return _fp32(binary if size is not None else t["data"], shape, name)
    blobs = _bytes_elements(binary) if size is not None else _base64_elements(t["data"], name)
    if len(blobs) != shape[0]:
        raise _bad(f"input 'image': shape {shape} but {len(blobs)} elements")
    try:
        return np.stack([preprocess(b, pre, max_pixels=settings.max_pixels, name=f"image {i}")
                         for i, b in enumerate(blobs)])
    except ImageError as e:
        raise ApiError(e.status, str(e)) from None


def _binary_size(params: Any, name: str) -> int | None:
    if params is None:
        return None
    params = _dict(params, f"input {name!r} parameters", ("binary_data_size",))
    size = params.get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise _bad(f"input {name!r}: binary_data_size must be a non-negative integer")
    return size


def _fp32(data: Any, shape: list[int], name: str) -> np.ndarray:
    try:
        x = (np.frombuffer(data, dtype="<f4") if isinstance(data, bytes)
             else np.asarray(data, dtype=np.float32).reshape(-1))
    except (ValueError, TypeError):
        raise _bad(f"input {name!r}: data must be FP32 numbers (little-endian in binary, a flat "
                   f"or nested list in JSON)") from None
    if x.size != math.prod(shape):
        raise _bad(f"input {name!r}: shape {shape} needs {math.prod(shape)} values, got {x.size}")
    if not np.isfinite(x).all():
        raise _bad(f"input {name!r}: data holds NaN or infinite values")
    return np.array(x.reshape(shape), dtype=np.float32)  # a writable copy


def _bytes_elements(buf: bytes) -> list[bytes]:
    """Triton's serialized BYTES tensor: each element a uint32 little-endian length + bytes."""
    out, i = [], 0
    while i < len(buf):
        if i + 4 > len(buf):
            raise _bad("input 'image': truncated BYTES element length")
        (n,), i = struct.unpack_from("<I", buf, i), i + 4
        if i + n > len(buf):
            raise _bad("input 'image': a BYTES element runs past the end of the body")
        out.append(buf[i:i + n])
        i += n
    return out


def _base64_elements(data: Any, name: str) -> list[bytes]:
    """JSON BYTES elements (a flat or ``[N, 1]`` list) as base64 strings -> bytes."""
    flat = data if isinstance(data, list) else [data]
    flat = [e for row in flat for e in (row if isinstance(row, list) else [row])]
    try:
        if all(isinstance(e, str) for e in flat):
            return [base64.b64decode(e, validate=True) for e in flat]
    except binascii.Error:
        pass
    raise _bad(f"input {name!r}: in JSON, BYTES images must be base64 strings (or send them with "
               f"the binary tensor extension)")


def _output(outputs: Any, binary_default: bool, classes: int) -> RequestedOutput:
    if outputs is None:
        return RequestedOutput(binary_default)
    if not isinstance(outputs, list) or len(outputs) != 1:
        raise _bad(f"'outputs' must be a list of one tensor: {OUTPUT!r}")
    o = _dict(outputs[0], "the output", ("name", "parameters"))
    if o.get("name") != OUTPUT:
        raise _bad(f"unknown output {o.get('name')!r}; accepted: {OUTPUT!r}")
    p = _dict(o.get("parameters", {}), "output parameters", ("binary_data", "classification"))
    k = p.get("classification")
    if k is not None and (type(k) is not int or not 1 <= k <= classes):
        raise _bad(f"classification must be an integer in [1, {classes}], got {k!r}")
    return RequestedOutput(bool(p.get("binary_data", binary_default)), k)


def encode_response(req: InferRequest, probs: np.ndarray, order: np.ndarray,
                    labels: tuple[str, ...], head: dict[str, Any]) -> tuple[bytes, int | None]:
    """The response body from ranked probabilities; ``head`` holds model_name, parameters...
    Returns ``(body, JSON header length or None when all JSON)``."""
    out: dict[str, Any] = {"name": OUTPUT}
    if req.output.classification:
        k = req.output.classification
        rows = [[f"{p:f}:{j}:{labels[j]}" for p, j in zip(ps, js)]
                for ps, js in zip(probs[:, :k].tolist(), order[:, :k].tolist())]
        out |= {"datatype": "BYTES", "shape": [len(rows), k]}
        flat = [s for r in rows for s in r]
        blob = b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() for s in flat))
        data: list[Any] = flat
    else:
        full = np.empty_like(probs, dtype=np.float32)
        np.put_along_axis(full, order, probs.astype(np.float32), axis=1)
        out |= {"datatype": "FP32", "shape": list(full.shape)}
        blob, data = full.astype("<f4").tobytes(), full.reshape(-1).tolist()
    doc = head | ({"id": req.id} if req.id is not None else {}) | {"outputs": [out]}
    if not req.output.binary:
        out["data"] = data
        return json.dumps(doc, separators=(",", ":")).encode(), None
    out["parameters"] = {"binary_data_size": len(blob)}
    header = json.dumps(doc, separators=(",", ":")).encode()
    return header + blob, len(header)
