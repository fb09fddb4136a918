"""The dashboard: ``GET /dashboard`` (one page), its scripts and styles from the package, and
``GET /api/v1/metrics/stream`` (the live metrics as server-sent events).

Every file the page loads is served from ``pgcache/service/static`` (no external network, no
build step); the page's references carry a hash of the file's content, so browsers may keep
the files for good and still never run a stale one. The numbers come from the lifespan's
:class:`pgcache.service.metrics_stream.MetricsStream`; with ``DASHBOARD=false`` there is none
and all of these answer 404. Operator actions on the page call the API's own endpoints with
the token typed into the page; this module grants nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Final

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pgcache.service.lifespan import pgcache_state
from pgcache.service.metrics_stream import DEFAULT_HISTORY, MetricsStream
from pgcache.service.problems import ProblemError, json_endpoint

DASHBOARD_PATH: Final = "/dashboard"
STREAM_PATH: Final = "/api/v1/metrics/stream"
STATIC_PATH: Final = "/dashboard/static"

_MEDIA_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}
# The page's own files and the vendored chart library (its licence is served beside it).
_ASSETS: Final = (
    "dashboard.js",
    "dashboard.css",
    "vendor/uplot/uPlot.iife.min.js",
    "vendor/uplot/uPlot.min.css",
)
_ASSET_REFERENCE_RE: Final = re.compile(r"\{\{asset:([\w./-]+)\}\}")
# The page runs only its own files; style-src allows the style properties the charts set.
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_ASSET_HEADERS: Final = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}
_STREAM_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # proxies such as nginx would otherwise hold the events back
}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    version: str


def _static_file(name: str) -> bytes:
    return files("pgcache.service").joinpath("static", *name.split("/")).read_bytes()


@cache
def _assets() -> dict[str, _Asset]:
    """The page's files, read once from the package, each with a hash of its content."""
    assets: dict[str, _Asset] = {}
    for name in _ASSETS:
        body = _static_file(name)
        suffix = name[name.rfind(".") :]
        version = hashlib.blake2b(body, digest_size=8).hexdigest()
        assets[name] = _Asset(body, _MEDIA_TYPES[suffix], version)
    return assets


@cache
def _page() -> bytes:
    """dashboard.html with each ``{{asset:name}}`` replaced by its versioned relative URL."""
    template = _static_file("dashboard.html").decode()
    assets = _assets()

    def reference(match: re.Match[str]) -> str:
        name = match[1]
        return f"{STATIC_PATH.lstrip('/')}/{name}?v={assets[name].version}"

    return _ASSET_REFERENCE_RE.sub(reference, template).encode()


def _stream_of(request: Request) -> MetricsStream:
    stream = pgcache_state(request).metrics_stream
    if stream is None:
        raise ProblemError(
            404, "dashboard_disabled", "DASHBOARD=false: this service has no dashboard"
        )
    return stream


async def _dashboard(request: Request) -> Response:
    """GET /dashboard: the live page."""
    _stream_of(request)
    return Response(_page(), media_type=_MEDIA_TYPES[".html"], headers=_PAGE_HEADERS)


async def _static(request: Request) -> Response:
    """GET /dashboard/static/{name}: one of the page's files."""
    _stream_of(request)
    name: str = request.path_params["name"]
    asset = _assets().get(name)
    if asset is None:
        raise ProblemError(404, "not_found", f"{name!r} is not one of the dashboard's files")
    return Response(asset.body, media_type=asset.media_type, headers=_ASSET_HEADERS)


def _history(request: Request) -> int | None:
    text = request.query_params.get("history")
    if text is None:
        return None
    if not text.isdigit() or int(text) > DEFAULT_HISTORY:
        raise ProblemError(
            422,
            "invalid_history",
            f"history={text[:20]!r}: expected the number of past events to send first, "
            f"0 to {DEFAULT_HISTORY}",
        )
    return int(text)


async def _metrics_stream(request: Request) -> Response:
    """GET /api/v1/metrics/stream?history=N: one event per second (``text/event-stream``),
    after the last ``N`` (default: all kept) or, on a reconnection, those after the browser's
    ``Last-Event-ID``."""
    stream = _stream_of(request)
    history = _history(request)
    events = stream.events(request.headers.get("last-event-id"), history)
    return StreamingResponse(events, media_type="text/event-stream", headers=_STREAM_HEADERS)


def dashboard_routes() -> list[Route]:
    """The page, its files and the stream; they read ``app.state.pgcache.metrics_stream``."""
    return [
        Route(DASHBOARD_PATH, json_endpoint(_dashboard), methods=["GET"]),
        Route(f"{STATIC_PATH}/{{name:path}}", json_endpoint(_static), methods=["GET"]),
        Route(STREAM_PATH, json_endpoint(_metrics_stream), methods=["GET"]),
    ]
