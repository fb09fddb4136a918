"""Per-endpoint request counters and latency histograms of an ASGI service, and the middleware
that records them (:class:`RequestMetricsMiddleware`).

An endpoint is a route's method and path template (``GET /api/v1/queries/{query_hash}/features``),
so the number of series is bounded by the routes, whatever clients send; requests that match no
route count under ``other``. Latencies go into fixed buckets (10 per decade, 50 us to 25 s):
:func:`latency_quantile` estimates p50/p99 from them, or from the difference of two snapshots
(the requests of that interval). Counters are plain integers updated on the event loop's
thread, which is the only writer; a reader on that thread sees them consistent, a reader on
another thread a view that may lag by one request. Nothing here exports them (the dashboard's
stream reads :meth:`RequestMetrics.snapshot`).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

OTHER_ENDPOINT: Final = "other"
"""The endpoint of requests that match no route (a bounded label for unbounded paths)."""

LATENCY_BOUNDS: Final[tuple[float, ...]] = tuple(
    round(5e-5 * 10 ** (step / 10), 9) for step in range(58)
)
"""Upper bounds (seconds) of the latency buckets: 50 us, 63 us, 79 us, ... 25 s; one more
bucket above the last holds everything slower."""


@dataclass(frozen=True, slots=True)
class EndpointCounts:
    """One endpoint's counters since the recorder was created.

    ``statuses``: responses per status class (index 1 to 5: 1xx to 5xx; index 0: the client
    went away before an answer began); ``buckets``: requests per latency bucket of
    :data:`LATENCY_BOUNDS` (one more at the end: slower than the last bound).
    """

    requests: int
    statuses: tuple[int, ...]
    buckets: tuple[int, ...]
    seconds_sum: float

    @property
    def server_errors(self) -> int:
        """Answers of status 500 to 599."""
        return self.statuses[5]


class _Endpoint:
    __slots__ = ("buckets", "requests", "seconds_sum", "statuses")

    def __init__(self) -> None:
        self.requests = 0
        self.statuses = [0] * 6
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)
        self.seconds_sum = 0.0


class RequestMetrics:
    """Requests, answers by status class and latency buckets per endpoint (see the module)."""

    def __init__(self) -> None:
        self._endpoints: dict[str, _Endpoint] = {}

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request (``status`` 0: no answer was begun)."""
        counts = self._endpoints.get(endpoint)
        if counts is None:
            counts = self._endpoints[endpoint] = _Endpoint()
        counts.requests += 1
        counts.statuses[status // 100 if 100 <= status < 600 else 0] += 1
        counts.buckets[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += 1
        counts.seconds_sum += seconds

    def snapshot(self) -> dict[str, EndpointCounts]:
        """Every endpoint's counters now, by endpoint name."""
        return {
            name: EndpointCounts(
                requests=counts.requests,
                statuses=tuple(counts.statuses),
                buckets=tuple(counts.buckets),
                seconds_sum=counts.seconds_sum,
            )
            for name, counts in list(self._endpoints.items())
        }


def latency_quantile(buckets: Sequence[int], quantile: float) -> float | None:
    """The latency (seconds) below which ``quantile`` (0 to 1) of the counted requests finished,
    interpolated inside its bucket; ``None`` when no request is counted. A quantile that falls
    in the open last bucket is reported as the last bound (a lower limit)."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = quantile * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index >= len(LATENCY_BOUNDS):
                return LATENCY_BOUNDS[-1]
            lower = LATENCY_BOUNDS[index - 1] if index else 0.0
            upper = LATENCY_BOUNDS[index]
            return lower + (upper - lower) * max(0.0, rank - seen) / count
        seen += count
    return LATENCY_BOUNDS[-1]


def bucket_difference(after: Sequence[int], before: Sequence[int] | None) -> list[int]:
    """Per-bucket counts of the requests between two snapshots of one endpoint."""
    if before is None:
        return list(after)
    return [now - then for now, then in zip(after, before, strict=True)]


def endpoint_name(scope: Mapping[str, object]) -> str:
    """``METHOD /path/{template}`` of the route Starlette matched, ``* /prefix`` for a mount,
    :data:`OTHER_ENDPOINT` when none matched (or the method is not the route's)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return OTHER_ENDPOINT
    methods = getattr(route, "methods", None)
    if methods is None:
        return f"* {path}"
    method = scope.get("method")
    return f"{method} {path}" if method in methods else OTHER_ENDPOINT


class RequestMetricsMiddleware:
    """Pure ASGI middleware: records every HTTP request in ``metrics`` when its answer ends.

    Place it outside the app's routing (Starlette's ``middleware=[...]``): it reads the route
    the router chose from the scope once the request is done. Paths in ``exclude`` (route
    templates, e.g. a stream whose "latency" is its lifetime) are not recorded.
    """

    def __init__(
        self, app: ASGIApp, *, metrics: RequestMetrics, exclude: Collection[str] = ()
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.exclude = frozenset(exclude)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            status = status or 500
            raise
        finally:
            name = endpoint_name(scope)
            if name.partition(" ")[2] not in self.exclude:
                self.metrics.record(name, status, time.perf_counter() - started)
