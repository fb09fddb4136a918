"""Rate limiting per client: a token bucket (GCRA) per client address, local or shared through
Redis, as Starlette (pure ASGI) middleware with the IETF RateLimit headers.

* :class:`RequestLimiter`: the limit (``RATE_LIMIT``, ``RATE_LIMIT_BURST``) and where it is kept:
  the Rust core's :class:`pgcache._core.RateLimiter` in this process, or, with a Redis
  connection, one atomic script per request so that every instance shares each client's
  bucket. When Redis fails (or its circuit breaker is open) the local limiter decides, and the
  fallback is counted: never everything rejected, never everything allowed unseen.
* :class:`RateLimitMiddleware`: the client is the peer address, or the ``X-Forwarded-For``
  address the nearest untrusted hop gave when the peer is in ``TRUSTED_PROXIES``. Beyond the
  limit: 429 JSON with ``Retry-After``; every limited route's answer carries
  ``RateLimit-Policy: "default";q=<burst>;w=<seconds to refill>`` and
  ``RateLimit: "default";r=<remaining>;t=<seconds until full>`` (draft-ietf-httpapi-ratelimit-
  headers). ``/healthz``, ``/readyz`` and ``/metrics`` are not limited.
* :class:`LimitsCollector`: the counters for Prometheus (and the connection counters of
  :mod:`pgcache.service.serving`).

What it deliberately does not do: authenticate clients (an address is the key), or limit
per endpoint.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgcache._core import ManualClock, RateLimiter
from pgcache.service.problems import error_response
from pgcache.service.serving import CONNECTION_COUNTERS

if TYPE_CHECKING:
    from pgcache.caching.redis_client import RedisConnection
    from pgcache.config import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

POLICY_NAME: Final = "default"
UNLIMITED_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
"""Paths a rate limit never applies to: probes and scrapes must not be starved by clients."""

# GCRA on Redis's own clock (one clock for every instance), in microseconds. KEYS[1]: the
# client's key; ARGV[1]: the interval between requests, ARGV[2]: the burst's tolerance.
# Returns {allowed, wait, remaining, reset}, times in microseconds.
GCRA_SCRIPT: Final = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + interval
local debt = next_tat - now
if debt <= tolerance then
  redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil(debt / 1000))
  return {1, 0, math.floor((tolerance - debt) / interval), debt}
end
return {0, debt - tolerance, 0, tat - now}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one request: allowed or not, seconds to wait, requests left, seconds
    until the client's bucket is full again."""

    allowed: bool
    wait: float
    remaining: int
    reset: float


class RequestLimiter:
    """``rate`` requests per second per client key, ``burst`` at once (default one second's
    worth), kept in this process or, given ``shared`` (a
    :class:`pgcache.caching.redis_client.RedisConnection`), in Redis under
    ``<key_prefix>ratelimit:<key>``. ``clock`` (a ManualClock) is for tests of the local one."""

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        *,
        shared: RedisConnection | None = None,
        key_prefix: str = "pgcache:",
        max_keys: int = 100_000,
        clock: ManualClock | None = None,
    ) -> None:
        self.local = RateLimiter(rate, burst, max_keys=max_keys, clock=clock)
        self.rate = self.local.rate
        self.burst = self.local.burst
        self.shared = shared
        self._key_prefix = f"{key_prefix}ratelimit:"
        self._interval_us = 1e6 / self.rate
        self._tolerance_us = self._interval_us * self.burst
        self._lock = threading.Lock()
        self._counts = {"allowed": 0, "limited": 0, "fallbacks": 0}
        if shared is not None:
            from pgcache.caching.tier_stats import TierCounters

            self._redis_counters = TierCounters()
        window = max(1, math.ceil(self.burst / self.rate))
        self.policy_header = f'"{POLICY_NAME}";q={self.burst};w={window}'

    @classmethod
    def from_settings(
        cls, settings: Settings, shared: RedisConnection | None = None
    ) -> RequestLimiter | None:
        """The limiter ``RATE_LIMIT`` and ``RATE_LIMIT_BURST`` describe; ``None`` when
        ``RATE_LIMIT`` is unset."""
        rate = settings.rate_limit_per_second()
        if rate is None:
            return None
        return cls(
            rate, settings.rate_limit_burst, shared=shared, key_prefix=settings.redis_key_prefix
        )

    def counts(self) -> dict[str, int]:
        """``allowed`` and ``limited`` requests, and ``fallbacks`` (decided locally because the
        shared store failed) since creation."""
        with self._lock:
            return dict(self._counts)

    def _count(self, decision: Decision, fallback: bool = False) -> Decision:
        with self._lock:
            self._counts["allowed" if decision.allowed else "limited"] += 1
            self._counts["fallbacks"] += fallback
        return decision

    def _local(self, key: str) -> Decision:
        found = self.local.decide(key)
        return Decision(found.allowed, found.wait, found.remaining, found.reset)

    async def decide(self, key: str) -> Decision:
        """Count one request of ``key`` if it is allowed; the decision either way."""
        if self.shared is None:
            return self._count(self._local(key))
        entry = self._key_prefix + key
        reply = await self.shared.acall(
            self._redis_counters,
            lambda client: client.eval(
                GCRA_SCRIPT, 1, entry, self._interval_us, self._tolerance_us
            ),
            None,
        )
        if reply is None:
            return self._count(self._local(key), fallback=True)
        allowed, wait_us, remaining, reset_us = (int(value) for value in reply)
        return self._count(Decision(bool(allowed), wait_us / 1e6, remaining, reset_us / 1e6))

    def headers(self, decision: Decision) -> dict[str, str]:
        """The ``RateLimit-Policy`` and ``RateLimit`` headers of an answer (with
        ``Retry-After`` when it was limited)."""
        headers = {
            "RateLimit-Policy": self.policy_header,
            "RateLimit": (
                f'"{POLICY_NAME}";r={decision.remaining};t={max(1, math.ceil(decision.reset))}'
            ),
        }
        if not decision.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(decision.wait)))
        return headers


# --- the client ------------------------------------------------------------------------------


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, networks: Sequence[Network]
) -> bool:
    return address is not None and any(address in network for network in networks)


def client_key(scope: Scope, trusted_proxies: Sequence[Network] = ()) -> str:
    """The address a request counts against: the peer's, or, when the peer is a trusted proxy,
    the rightmost ``X-Forwarded-For`` address that is not a trusted proxy itself (the one the
    nearest untrusted hop reported: every address left of it could be forged)."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if not trusted_proxies or not _trusted(_address(peer), trusted_proxies):
        return str(peer)
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name == b"x-forwarded-for"
    ]
    hops = [hop.strip() for hop in ",".join(forwarded).split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage: the proxy vouches for nothing beyond this point
        if not _trusted(address, trusted_proxies):
            return str(address)
    return str(peer)


# --- the middleware --------------------------------------------------------------------------


class RateLimitMiddleware:
    """Pure ASGI middleware that applies a :class:`RequestLimiter` per client.

    ``limiter``: the limiter; ``None`` means the one the pgcache lifespan opened
    (``app.state.pgcache.rate_limiter``; no limit while there is none). ``trusted_proxies``:
    networks whose ``X-Forwarded-For`` is believed (default: the lifespan's settings').
    ``unlimited``: paths never limited.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RequestLimiter | None = None,
        *,
        trusted_proxies: Iterable[Network] | None = None,
        unlimited: Iterable[str] = UNLIMITED_PATHS,
    ) -> None:
        self.app = app
        self._limiter = limiter
        self._trusted = None if trusted_proxies is None else tuple(trusted_proxies)
        self._unlimited = frozenset(unlimited)
        self._resolved: tuple[object, RequestLimiter | None, Sequence[Network]] | None = None

    def _configured(self, scope: Scope) -> tuple[RequestLimiter | None, Sequence[Network]]:
        limiter, trusted = self._limiter, self._trusted
        if limiter is not None and trusted is not None:
            return limiter, trusted
        state = getattr(getattr(scope.get("app"), "state", None), "pgcache", None)
        resolved = self._resolved
        if resolved is not None and resolved[0] is state:  # read once per lifespan
            return resolved[1], resolved[2]
        if limiter is None:
            found = getattr(state, "rate_limiter", None)
            limiter = found if isinstance(found, RequestLimiter) else None
        if trusted is None:
            settings = getattr(state, "settings", None)
            trusted = settings.trusted_proxy_networks() if settings is not None else ()
        self._resolved = (state, limiter, trusted)
        return limiter, trusted

    async def admit(self, scope: Scope) -> tuple[list[tuple[bytes, bytes]], Response | None]:
        """The rate-limit headers of this HTTP request's answer and, when it is limited, the
        429 answer to send instead (its own headers included); ``([], None)`` when no limit
        applies."""
        if scope.get("path") in self._unlimited:
            return [], None
        limiter, trusted = self._configured(scope)
        if limiter is None:
            return [], None
        decision = await limiter.decide(client_key(scope, trusted))
        headers = limiter.headers(decision)
        if not decision.allowed:
            return [], error_response(
                429,
                "rate_limited",
                f"more than {limiter.burst} requests at once or {limiter.rate:g} per second "
                f"from this client; retry in {headers['Retry-After']} s",
                headers,
            )
        return [(name.lower().encode(), value.encode()) for name, value in headers.items()], None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra, rejected = await self.admit(scope)
        if rejected is not None:
            await rejected(scope, receive, send)
            return
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- metrics ---------------------------------------------------------------------------------


class LimitsCollector(Collector):
    """Counters of the service's limits: ``pgcache_rate_limit_requests_total{outcome}``
    (allowed, limited), ``pgcache_rate_limit_fallbacks_total`` (decided locally because Redis
    failed), gauge ``pgcache_rate_limit_keys`` (clients the local limiter remembers), and
    ``pgcache_connections_refused_total{reason}`` (head_timeout, open_files, concurrency)."""

    def __init__(self, limiter: RequestLimiter | None) -> None:
        self.limiter = limiter

    def collect(self) -> Iterator[Metric]:
        if self.limiter is not None:
            counts = self.limiter.counts()
            requests = CounterMetricFamily(
                "pgcache_rate_limit_requests",
                "Requests the rate limit decided on, by outcome.",
                labels=["outcome"],
            )
            for outcome in ("allowed", "limited"):
                requests.add_metric([outcome], counts[outcome])
            yield requests
            yield CounterMetricFamily(
                "pgcache_rate_limit_fallbacks",
                "Rate-limit decisions made locally because the shared store (Redis) failed.",
                value=counts["fallbacks"],
            )
            yield GaugeMetricFamily(
                "pgcache_rate_limit_keys",
                "Clients the local rate limiter remembers.",
                value=len(self.limiter.local),
            )
        refused = CounterMetricFamily(
            "pgcache_connections_refused",
            "Connections closed or refused by the connection limits, by reason.",
            labels=["reason"],
        )
        for reason in ("head_timeout", "open_files", "concurrency"):
            refused.add_metric([reason], CONNECTION_COUNTERS[reason])
        yield refused
