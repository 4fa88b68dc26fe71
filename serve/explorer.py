"""``GET /``: the front explorer, a self-contained page (no CDN, no build step).

The page (``serve/static/explorer.html``, ``.js``, ``.css``, shipped as package data) reads
``/configs``, plots accuracy against MFLOPs and against this host's measured latency, lets a
person pick a point or type a budget, sends a dropped or chosen image to ``POST /predict`` and
shows the top-k answer with the config that served it. It links ``/docs`` and ``/metrics``.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

from serve.errors import ApiError

ASSETS = {"explorer.js": "text/javascript", "explorer.css": "text/css"}


def _asset(name: str) -> bytes:
    return resources.files("serve").joinpath("static", name).read_bytes()


def add_explorer_routes(app: FastAPI) -> None:
    """Register ``GET /`` and ``GET /static/{name}`` (the page's script and style sheet)."""
    page = _asset("explorer.html")
    assets = {name: (_asset(name), media) for name, media in ASSETS.items()}

    @app.get("/", response_class=Response, summary="The front explorer (an HTML page)",
             responses={200: {"content": {"text/html": {}}}})
    async def explorer() -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", response_class=Response, include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in assets:
            raise ApiError(404, f"no such asset {name!r}; there are {', '.join(assets)}")
        data, media = assets[name]
        return Response(data, media_type=f"{media}; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})
