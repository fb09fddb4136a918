"""Per-endpoint request metrics: counting, bounded endpoint names, latency quantiles from the
fixed buckets. (Recording through the middleware over real HTTP: tests/service/test_dashboard.py.)
"""

from __future__ import annotations

import pytest
from starlette.responses import Response
from starlette.routing import Mount, Route

from pgcache.observability.requests import (
    LATENCY_BOUNDS,
    OTHER_ENDPOINT,
    RequestMetrics,
    bucket_difference,
    endpoint_name,
    latency_quantile,
)


async def _endpoint(request: object) -> Response:
    return Response()


def test_bounds_grow_ten_to_a_decade_from_50_microseconds() -> None:
    assert LATENCY_BOUNDS[0] == 5e-5
    assert LATENCY_BOUNDS[10] == pytest.approx(5e-4)
    assert LATENCY_BOUNDS[-1] == pytest.approx(5e-5 * 10**5.7)
    assert list(LATENCY_BOUNDS) == sorted(set(LATENCY_BOUNDS))


def test_record_counts_requests_statuses_and_buckets() -> None:
    metrics = RequestMetrics()
    metrics.record("GET /a", 200, 0.001)
    metrics.record("GET /a", 503, 0.002)
    metrics.record("GET /a", 0, 0.5)
    counts = metrics.snapshot()["GET /a"]
    assert counts.requests == 3
    assert counts.statuses == (1, 0, 1, 0, 0, 1)
    assert counts.server_errors == 1
    assert sum(counts.buckets) == 3
    assert counts.seconds_sum == pytest.approx(0.503)


def test_snapshot_is_a_copy() -> None:
    metrics = RequestMetrics()
    metrics.record("GET /a", 200, 0.001)
    before = metrics.snapshot()
    metrics.record("GET /a", 200, 0.001)
    assert before["GET /a"].requests == 1


def test_quantile_of_no_requests_is_none() -> None:
    assert latency_quantile([0] * (len(LATENCY_BOUNDS) + 1), 0.5) is None


def test_quantile_falls_inside_the_bucket_of_the_requests() -> None:
    metrics = RequestMetrics()
    for _ in range(99):
        metrics.record("GET /a", 200, 0.010)
    metrics.record("GET /a", 200, 0.200)
    buckets = metrics.snapshot()["GET /a"].buckets
    p50 = latency_quantile(buckets, 0.50)
    p99 = latency_quantile(buckets, 0.99)
    assert p50 is not None
    assert p99 is not None
    assert 0.010 / 1.26 <= p50 <= 0.010 * 1.26
    assert p99 <= 0.010 * 1.26
    assert 0.200 / 1.26 <= (latency_quantile(buckets, 1.0) or 0) <= 0.200 * 1.26


def test_quantile_beyond_the_last_bound_is_the_last_bound() -> None:
    metrics = RequestMetrics()
    metrics.record("GET /a", 200, 60.0)
    assert latency_quantile(metrics.snapshot()["GET /a"].buckets, 0.5) == LATENCY_BOUNDS[-1]


def test_bucket_difference_is_the_requests_between_two_snapshots() -> None:
    metrics = RequestMetrics()
    metrics.record("GET /a", 200, 0.001)
    before = metrics.snapshot()["GET /a"].buckets
    metrics.record("GET /a", 200, 1.0)
    after = metrics.snapshot()["GET /a"].buckets
    between = bucket_difference(after, before)
    assert sum(between) == 1
    assert latency_quantile(between, 0.5) == pytest.approx(1.0, rel=0.26)
    assert bucket_difference(after, None) == list(after)


def test_endpoint_name_is_the_method_and_route_template() -> None:
    route = Route("/api/v1/queries/{query_hash}/features", _endpoint, methods=["GET"])
    scope = {"route": route, "method": "GET"}
    assert endpoint_name(scope) == "GET /api/v1/queries/{query_hash}/features"


def test_endpoint_name_of_a_method_the_route_does_not_take_is_other() -> None:
    route = Route("/healthz", _endpoint, methods=["GET"])
    assert endpoint_name({"route": route, "method": "BREW"}) == OTHER_ENDPOINT


def test_endpoint_name_without_a_route_is_other() -> None:
    assert endpoint_name({"method": "GET", "path": "/anything/at/all"}) == OTHER_ENDPOINT


def test_endpoint_name_of_a_mount_is_its_prefix() -> None:
    mount = Mount("/static", routes=[])
    assert endpoint_name({"route": mount, "method": "GET"}) == "* /static"
