"""The query string of ``POST /predict``: strict parsing, and the OpenAPI schema it enforces.

Accepted: ``mflops`` (number >= the cheapest config's MFLOPs), ``latency_ms`` (number >= the
fastest config's measured batch-1 latency), ``top_k`` (integer in [1, number of classes]); at most
one of the two budgets. Anything else is a 422 naming the accepted parameters: unknown names
(``MFLOPS``, ``latency``), empty values (``mflops=``), repeated names, numbers Python would accept
but JSON Schema does not (``1_0``, `` 3``, ``inf``, ``nan``).

The OpenAPI description is ONE form-exploded object parameter (serialized as the usual
``?mflops=3&top_k=2``) whose schema says exactly that: ``additionalProperties: false``, the
minimums, and ``not: {required: [mflops, latency_ms]}`` for the mutually exclusive budgets, so a
schema-driven client cannot build a request this parser rejects (the latency minimum is filled in
once it is measured; before that the endpoint answers 503 anyway).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")  # JSON Schema "number"
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
ACCEPTED = ("mflops", "latency_ms", "top_k")


class QueryError(ValueError):
    """A bad query string (answered 422); the message names the accepted parameters."""


@dataclass(frozen=True)
class PredictQuery:
    mflops: float | None
    latency_ms: float | None
    top_k: int


@dataclass
class QuerySpec:
    """What the query may hold: bounds from the weight file, the latency minimum once measured."""

    min_mflops: float
    min_config: str
    num_classes: int
    min_latency_ms: float | None = None  # set by the server once latencies are measured

    @property
    def default_top_k(self) -> int:
        return min(5, self.num_classes)

    def parse(self, raw: bytes) -> PredictQuery:
        """Parse ``scope["query_string"]``; raises :class:`QueryError` for anything off-schema.
        (The latency minimum is checked by selection, which names the fastest config.)"""
        try:
            pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, strict_parsing=True,
                              max_num_fields=10) if raw else []
        except ValueError as e:
            raise QueryError(f"malformed query string ({e}); accepted parameters: "
                             f"{', '.join(ACCEPTED)}") from None
        values: dict[str, str] = {}
        for name, value in pairs:
            if name not in ACCEPTED:
                raise QueryError(f"unknown query parameter {name!r}; accepted: {', '.join(ACCEPTED)}")
            if name in values:
                raise QueryError(f"query parameter {name!r} given more than once")
            if value == "":
                raise QueryError(f"query parameter {name!r} is empty")
            values[name] = value
        if "mflops" in values and "latency_ms" in values:
            raise QueryError("give either mflops or latency_ms, not both")
        mflops = self._number(values, "mflops")
        if mflops is not None and mflops < self.min_mflops:
            raise QueryError(f"mflops={values['mflops']} is below the smallest configuration: "
                             f"{self.min_config} needs {self.min_mflops!r} MFLOPs (the minimum)")
        latency = self._number(values, "latency_ms")
        if latency is not None and latency <= 0:
            raise QueryError(f"latency_ms must be > 0 (got {values['latency_ms']})")
        top_k = self.default_top_k
        if "top_k" in values:
            if not _INTEGER.fullmatch(values["top_k"]) or not 1 <= int(values["top_k"]) <= self.num_classes:
                raise QueryError(f"top_k must be an integer in [1, {self.num_classes}] "
                                 f"(got {values['top_k'][:40]!r})")
            top_k = int(values["top_k"])
        return PredictQuery(mflops, latency, top_k)

    @staticmethod
    def _number(values: dict[str, str], name: str) -> float | None:
        if name not in values:
            return None
        if not _NUMBER.fullmatch(values[name]):
            raise QueryError(f"query parameter {name!r} must be a finite decimal number "
                             f"(got {values[name][:40]!r})")
        return float(values[name])

    def openapi_parameter(self) -> dict[str, Any]:
        """The OpenAPI 3.1 description of the whole query (see module docstring)."""
        latency: dict[str, Any] = {
            "type": "number",
            "description": "batch-1 model latency budget in ms, as measured on this host at "
                           "start-up (see /configs); the minimum is the fastest configuration"}
        if self.min_latency_ms is None:
            latency["exclusiveMinimum"] = 0
        else:
            latency["minimum"] = self.min_latency_ms
        return {
            "name": "query", "in": "query", "required": False, "style": "form", "explode": True,
            "description": "the budget (at most one of mflops and latency_ms; none: the most "
                           "accurate configuration) and top_k; nothing else is accepted",
            "schema": {
                "type": "object", "additionalProperties": False,
                "not": {"required": ["mflops", "latency_ms"]},
                "properties": {
                    "mflops": {"type": "number", "minimum": self.min_mflops,
                               "description": f"MFLOPs budget (millions of multiply-accumulates "
                                              f"per image); {self.min_config} needs "
                                              f"{self.min_mflops!r}"},
                    "latency_ms": latency,
                    "top_k": {"type": "integer", "minimum": 1, "maximum": self.num_classes,
                              "default": self.default_top_k,
                              "description": "how many classes to return per image"}}}}
