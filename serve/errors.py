"""Every error is JSON :class:`serve.schemas.Error`; a client that went away is not an error.

``ClientDisconnect`` (the client closed the connection while its body was being read) is
answered with the non-standard status :data:`CLIENT_CLOSED` (499, nginx's convention): nothing
reaches the client, no traceback is logged, and the metrics count it as a disconnect, not as an
HTTP error.
"""

from __future__ import annotations

import http

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from serve.schemas import Error

RETRY_AFTER_S = 1
CLIENT_CLOSED = 499


class ApiError(Exception):
    """An error answered as :class:`Error` JSON with ``status`` (and extra ``headers``)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def unavailable(detail: str) -> ApiError:
    """A 503 with ``Retry-After``."""
    return ApiError(503, detail, {"Retry-After": str(RETRY_AFTER_S)})


def error_body(status: int, detail: str) -> bytes:
    """The :class:`Error` JSON bytes (also used outside FastAPI: the HTTP protocol layer)."""
    phrase = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else ""
    return Error(status=status, error=phrase, detail=detail).model_dump_json().encode()


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """The :class:`Error` JSON answer."""
    return Response(error_body(status, detail), status_code=status, headers=headers,
                    media_type="application/json")


def install_error_handlers(app: FastAPI) -> None:
    """API errors, Starlette HTTP errors, FastAPI validation errors -> JSON; disconnects -> 499."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        detail = "; ".join(f"{' '.join(map(str, e.get('loc', ())))}: {e.get('msg')}"
                           for e in exc.errors())
        return error_response(422, detail)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_request: Request, _exc: ClientDisconnect) -> Response:
        return Response(status_code=CLIENT_CLOSED)


__all__ = ["ApiError", "CLIENT_CLOSED", "error_body", "error_response",
           "install_error_handlers", "unavailable"]
