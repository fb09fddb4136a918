"""Rate limiting per client: the middleware's answers and headers (in-process with a manual
clock, then over real HTTP), the client's address behind trusted proxies, the limit shared by
two service processes through a real redis-server, and the local fallback when Redis is down.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tests.support.processes import pgcache_environment, serve_pgcache

from pgcache import ManualClock
from pgcache.access import parse_trusted_proxies
from pgcache.config import Settings
from pgcache.service.app import serve_in_thread
from pgcache.service.ratelimit import RateLimitMiddleware, RequestLimiter, client_key

# --- the middleware, in-process with a manual clock -----------------------------------------


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def _app(limiter: RequestLimiter) -> Starlette:
    app = Starlette(routes=[Route("/hello", _hello), Route("/healthz", _hello)])
    app.add_middleware(RateLimitMiddleware, limiter=limiter, trusted_proxies=())
    return app


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
async def client(clock: ManualClock) -> Any:
    limiter = RequestLimiter(2.0, 3, clock=clock)
    transport = httpx.ASGITransport(app=_app(limiter), client=("192.0.2.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_allowed_answers_carry_the_policy_and_what_is_left(client: httpx.AsyncClient) -> None:
    response = await client.get("/hello")
    assert response.status_code == 200
    assert response.headers["ratelimit-policy"] == '"default";q=3;w=2'
    assert response.headers["ratelimit"] == '"default";r=2;t=1'
    assert "retry-after" not in response.headers


async def test_beyond_the_burst_the_answer_is_429_json_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    for remaining in (2, 1, 0):
        response = await client.get("/hello")
        assert response.headers["ratelimit"].startswith(f'"default";r={remaining};')
    limited = await client.get("/hello", headers={"X-Request-ID": "flood-1"})
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/json"
    assert limited.json()["error"] == "rate_limited"
    assert limited.headers["retry-after"] == "1"
    assert limited.headers["ratelimit"] == '"default";r=0;t=2'
    assert limited.headers["ratelimit-policy"] == '"default";q=3;w=2'


async def test_the_bucket_refills_at_the_rate(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    for _ in range(3):
        await client.get("/hello")
    assert (await client.get("/hello")).status_code == 429
    clock.advance(0.5)  # one request's worth at 2/s
    assert (await client.get("/hello")).status_code == 200
    assert (await client.get("/hello")).status_code == 429


async def test_health_checks_are_never_limited(client: httpx.AsyncClient) -> None:
    for _ in range(20):
        response = await client.get("/healthz")
        assert response.status_code == 200
        assert "ratelimit" not in response.headers


async def test_clients_are_limited_separately(clock: ManualClock) -> None:
    app = _app(RequestLimiter(1.0, 1, clock=clock))
    for address in ("192.0.2.1", "192.0.2.2"):
        transport = httpx.ASGITransport(app=app, client=(address, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/hello")).status_code == 200
            assert (await http.get("/hello")).status_code == 429


# --- who the client is ------------------------------------------------------------------------

PROXIES = parse_trusted_proxies("10.0.0.0/8,127.0.0.1")


def _scope(peer: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [] if forwarded is None else [(b"x-forwarded-for", forwarded.encode())]
    return {"type": "http", "client": (peer, 5000), "headers": headers}


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", "198.51.100.7", "203.0.113.9"),  # not a proxy: its header is ignored
        ("10.1.2.3", "198.51.100.7", "198.51.100.7"),
        ("10.1.2.3", "6.6.6.6, 198.51.100.7, 10.9.9.9", "198.51.100.7"),  # left of it: forgeable
        ("127.0.0.1", "10.0.0.1, 10.0.0.2", "127.0.0.1"),  # only proxies: the peer
        ("10.1.2.3", "not-an-address, 198.51.100.7", "198.51.100.7"),
        ("10.1.2.3", "198.51.100.7, garbage", "10.1.2.3"),
        ("10.1.2.3", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_the_client_behind_trusted_proxies(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_key(_scope(peer, forwarded), PROXIES) == expected


def test_without_trusted_proxies_x_forwarded_for_is_ignored() -> None:
    assert client_key(_scope("10.1.2.3", "198.51.100.7")) == "10.1.2.3"


@pytest.mark.parametrize(
    ("value", "message"),
    [("100", "like 100/s"), ("0/s", "like 100/s"), ("100/d", "like 100/s"), ("-1/s", "like 100/s")],
)
def test_a_bad_rate_limit_is_one_error_naming_it(value: str, message: str) -> None:
    from pgcache.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"RATE_LIMIT='{re.escape(value)}': .*{message}"):
        Settings.load(rate_limit=value)


def test_rate_limits_per_minute_and_hour_are_per_second_rates() -> None:
    assert Settings.load(rate_limit="6000/m").rate_limit_per_second() == 100.0
    assert Settings.load(rate_limit="36/h").rate_limit_per_second() == 0.01
    assert Settings.load().rate_limit_per_second() is None


def test_the_default_burst_is_one_seconds_worth() -> None:
    limiter = RequestLimiter.from_settings(Settings.load(rate_limit="6000/m"))
    assert limiter is not None
    assert limiter.burst == 100
    assert limiter.policy_header == '"default";q=100;w=1'


# --- over real HTTP ---------------------------------------------------------------------------


def test_the_service_limits_each_client_and_counts_it_in_its_metrics() -> None:
    settings = Settings.load(database_url=None, rate_limit="1/m", rate_limit_burst=3)
    with (
        serve_in_thread(settings) as service,
        httpx.Client(base_url=service.url, timeout=30.0) as http,
    ):
        statuses = [http.get("/api/v1/metrics/cache").status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        assert http.get("/healthz").status_code == 200
        metrics = http.get("/metrics").text
    assert 'pgcache_rate_limit_requests_total{outcome="allowed"} 3.0' in metrics
    assert 'pgcache_rate_limit_requests_total{outcome="limited"} 2.0' in metrics


def test_without_rate_limit_nothing_is_limited_and_no_header_is_sent() -> None:
    with (
        serve_in_thread(Settings.load(database_url=None)) as service,
        httpx.Client(base_url=service.url, timeout=30.0) as http,
    ):
        for _ in range(50):
            response = http.get("/api/v1/metrics/cache")
            assert response.status_code == 200
            assert "ratelimit" not in response.headers


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_with_redis_down_the_local_limiter_decides_and_says_so() -> None:
    settings = Settings.load(
        database_url=None,
        rate_limit="1/m",
        rate_limit_burst=2,
        redis_url=f"redis://127.0.0.1:{_dead_port()}/0",
        redis_connect_timeout=0.2,
        redis_socket_timeout=0.2,
    )
    with (
        serve_in_thread(settings) as service,
        httpx.Client(base_url=service.url, timeout=30.0) as http,
    ):
        statuses = [http.get("/api/v1/metrics/cache").status_code for _ in range(4)]
        metrics = http.get("/metrics").text
    assert statuses == [200, 200, 429, 429]  # neither everything refused nor everything allowed
    fallbacks = re.search(r"^pgcache_rate_limit_fallbacks_total (\S+)$", metrics, re.M)
    assert fallbacks is not None
    assert float(fallbacks[1]) == 4.0


# --- one limit shared by two processes through Redis ----------------------------------------


@pytest.fixture
def two_services(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[list[str]]:
    env = pgcache_environment(
        REDIS_URL=redis_url, REDIS_KEY_PREFIX=key_prefix, RATE_LIMIT="1/m", RATE_LIMIT_BURST="4"
    )
    with (
        serve_pgcache(cwd=tmp_path, env=env) as first,
        serve_pgcache(cwd=tmp_path, env=env) as second,
    ):
        urls = []
        for served in (first, second):
            served.wait_for("Application startup complete")
            host, port = served.listening()
            urls.append(f"http://{host}:{port}")
        yield urls


def test_two_processes_share_each_clients_bucket_through_redis(two_services: list[str]) -> None:
    first, second = two_services
    with httpx.Client(timeout=30.0) as http:
        assert [http.get(f"{first}/api/v1/metrics/cache").status_code for _ in range(3)] == [
            200
        ] * 3
        statuses = [http.get(f"{second}/api/v1/metrics/cache").status_code for _ in range(3)]
        assert statuses == [200, 429, 429]
        limited = http.get(f"{first}/api/v1/metrics/cache")
    assert limited.status_code == 429
    assert limited.headers["ratelimit"].startswith('"default";r=0;')
