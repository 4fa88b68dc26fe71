"""Request body size limit as a pure ASGI middleware (answers 413 with the JSON error model).

A declared ``Content-Length`` above the limit is refused before the app runs; otherwise the bytes
actually received are counted and the first chunk past the limit raises :class:`BodyTooLarge`
(an ``HTTPException`` 413, so FastAPI's body parsing re-raises it to the app's handlers). If it
still escapes the app and no response has started, this middleware answers the 413 itself.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the {limit}-byte limit")


class BodyLimitMiddleware:
    """Refuse HTTP request bodies above ``max_bytes``; ``render(exc)`` builds the 413 response."""

    def __init__(self, app: ASGIApp, max_bytes: int,
                 render: Callable[[HTTPException], Response]) -> None:
        self.app, self.max_bytes, self.render = app, max_bytes, render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self.render(BodyTooLarge(self.max_bytes))(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as e:
            if started:
                raise
            await self.render(e)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
