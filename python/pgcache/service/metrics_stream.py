"""The live metrics behind the dashboard: one snapshot per second while anyone listens, shared
by every listener.

:class:`MetricsStream` samples the caches, the database pool, the ML client, the request
recorder and the rate limiter once per interval on the event loop (every number comes from
counters read without the caches' locks), turns two consecutive samples into rates
(:func:`metrics_event`), encodes the event once as a server-sent event, keeps the last few
minutes of them, and hands the same bytes to every listener. With no listener it samples
nothing: the first listener after a pause gets a fresh sample at once (its rates span the
pause). A listener resumes after the ``Last-Event-ID`` its browser sends on reconnecting; a new
one first gets the history. This module builds no HTTP route (see
:mod:`pgcache.service.dashboard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pgcache.ml.stats import MLClientStats
from pgcache.observability.requests import (
    EndpointCounts,
    RequestMetrics,
    bucket_difference,
    latency_quantile,
)
from pgcache.observability.snapshot import (
    CacheStatusResponse,
    ConnectionPoolLike,
    MetricsSource,
    MLClientLike,
    caches_by_name,
    hit_rate,
    tier_metrics_of,
)

DEFAULT_INTERVAL: Final = 1.0
"""Seconds between two samples."""
DEFAULT_HISTORY: Final = 300
"""Samples kept for a page that opens (five minutes at one a second)."""
RETRY_MILLISECONDS: Final = 1000
"""How long a browser waits before reconnecting a lost stream (the SSE ``retry`` field)."""

_SNAPSHOT_FIELDS: Final = {
    "features": "feature_cache",
    "predictions": "prediction_cache",
    "fingerprints": "query_results_cache",
    "explain_plans": "explain_plan_cache",
    "anomalies": "anomaly_cache",
}
_CACHE_COUNTERS: Final = ("hits", "misses", "evictions", "rejections", "expirations")
_L2_COUNTERS: Final = ("l2_hits", "l2_misses", "l2_errors")


RateLimitStats = Callable[[], Mapping[str, int]]
"""What the stream reads from a rate limiter: counters ``allowed`` and ``limited``
(``pgcache.RateLimiter.stats`` has that shape)."""


@dataclass(frozen=True, eq=False)
class StreamSources:
    """Where the numbers come from: the cache manager, and what else the service has."""

    manager: MetricsSource
    pool: ConnectionPoolLike | None = None
    ml_client: MLClientLike | None = None
    requests: RequestMetrics | None = None
    rate_limit: RateLimitStats | None = None


@dataclass(frozen=True, eq=False)
class Sample:
    """Every counter at one moment (``monotonic`` for rates, ``wall`` for the charts)."""

    monotonic: float
    wall: float
    status: CacheStatusResponse
    caches: dict[str, dict[str, int | None]]
    requests: dict[str, EndpointCounts] | None
    pool: dict[str, int] | None
    ml: MLClientStats | None
    rate_limit: dict[str, int] | None = field(default=None)


def read_sample(sources: StreamSources) -> Sample:
    """Read every counter of ``sources`` now."""
    status = CacheStatusResponse.from_manager(sources.manager)
    tiers = tier_metrics_of(sources.manager) or {}
    caches: dict[str, dict[str, int | None]] = {}
    for name, cache in caches_by_name(sources.manager).items():
        counters = cache.metrics().to_dict()
        row: dict[str, int | None] = {
            key: _count(counters.get(key)) for key in (*_CACHE_COUNTERS, "bytes")
        }
        tier = tiers.get(name)
        if tier is not None:
            row |= {key: getattr(tier, key) for key in _L2_COUNTERS}
        caches[name] = row
    return Sample(
        monotonic=time.monotonic(),
        wall=time.time(),
        status=status,
        caches=caches,
        requests=None if sources.requests is None else sources.requests.snapshot(),
        pool=None if sources.pool is None else dict(sources.pool.get_stats()),
        ml=None if sources.ml_client is None else sources.ml_client.stats(),
        rate_limit=None if sources.rate_limit is None else dict(sources.rate_limit()),
    )


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _rate(now: int | None, then: int | None, seconds: float | None) -> float | None:
    """Per second between two readings of a counter; None without both (or without time)."""
    if now is None or then is None or not seconds:
        return None
    return round(max(0, now - then) / seconds, 3)


def _hit_rate_between(
    now: Mapping[str, int | None], then: Mapping[str, int | None] | None, hits: str, misses: str
) -> float | None:
    """The hit rate (%) of the lookups between two samples; None if there were none."""
    if then is None:
        return None
    gained = (now.get(hits) or 0) - (then.get(hits) or 0)
    lost = (now.get(misses) or 0) - (then.get(misses) or 0)
    return round(hit_rate(gained, lost), 2) if gained + lost > 0 else None


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _cache_rates(
    current: Sample, previous: Sample | None, seconds: float | None
) -> dict[str, dict[str, Any]]:
    rates: dict[str, dict[str, Any]] = {}
    for name, now in current.caches.items():
        then = None if previous is None else previous.caches.get(name)
        row: dict[str, Any] = {
            "metrics_key": _SNAPSHOT_FIELDS.get(name, name),
            "rejections": now.get("rejections"),
            "bytes": now.get("bytes"),
            "hit_rate_now": _hit_rate_between(now, then, "hits", "misses"),
        }
        lookups_now = (now.get("hits") or 0) + (now.get("misses") or 0)
        lookups_then = None if then is None else (then.get("hits") or 0) + (then.get("misses") or 0)
        row["lookups_per_s"] = _rate(lookups_now, lookups_then, seconds)
        for key in _CACHE_COUNTERS:
            row[f"{key}_per_s"] = _rate(
                now.get(key), None if then is None else then.get(key), seconds
            )
        if "l2_hits" in now:
            row["l2_hit_rate_now"] = _hit_rate_between(now, then, "l2_hits", "l2_misses")
            row["l2_errors_per_s"] = _rate(
                now.get("l2_errors"), None if then is None else then.get("l2_errors"), seconds
            )
        rates[name] = row
    return rates


def _overall(current: Sample, previous: Sample | None, seconds: float | None) -> dict[str, Any]:
    def totals(sample: Sample) -> dict[str, int | None]:
        return {
            "hits": sum(row.get("hits") or 0 for row in sample.caches.values()),
            "misses": sum(row.get("misses") or 0 for row in sample.caches.values()),
        }

    now = totals(current)
    then = None if previous is None else totals(previous)
    lookups_then = None if then is None else (then["hits"] or 0) + (then["misses"] or 0)
    return {
        "hit_rate_now": _hit_rate_between(now, then, "hits", "misses"),
        "lookups_per_s": _rate((now["hits"] or 0) + (now["misses"] or 0), lookups_then, seconds),
    }


def _request_rates(
    current: Sample, previous: Sample | None, seconds: float | None
) -> dict[str, dict[str, Any]] | None:
    if current.requests is None:
        return None
    before = {} if previous is None or previous.requests is None else previous.requests
    rates: dict[str, dict[str, Any]] = {}
    for name, now in sorted(current.requests.items()):
        then = before.get(name)
        # Quantiles of the interval's requests: none without a previous sample or new requests.
        fresh = previous is not None and (then is None or now.requests > then.requests)
        p50 = p99 = None
        if fresh:
            interval = bucket_difference(now.buckets, None if then is None else then.buckets)
            p50, p99 = latency_quantile(interval, 0.50), latency_quantile(interval, 0.99)
        rates[name] = {
            "requests": now.requests,
            "server_errors": now.server_errors,
            "per_s": _rate(now.requests, 0 if then is None else then.requests, seconds),
            "server_errors_per_s": _rate(
                now.server_errors, 0 if then is None else then.server_errors, seconds
            ),
            "p50_ms": _milliseconds(p50),
            "p99_ms": _milliseconds(p99),
        }
    return rates


def _pool(current: Sample, previous: Sample | None, seconds: float | None) -> dict[str, Any] | None:
    if current.pool is None:
        return None
    now = current.pool
    then = None if previous is None else previous.pool

    def per_s(key: str) -> float | None:
        return _rate(now.get(key, 0), None if then is None else then.get(key, 0), seconds)

    size, available = now.get("pool_size", 0), now.get("pool_available", 0)
    return {
        "min": now.get("pool_min", 0),
        "max": now.get("pool_max", 0),
        "size": size,
        "idle": available,
        "in_use": max(0, size - available),
        "waiting": now.get("requests_waiting", 0),
        "timeouts": now.get("requests_errors", 0),
        "connection_errors": now.get("connections_errors", 0),
        "connections_lost": now.get("connections_lost", 0),
        "requests_per_s": per_s("requests_num"),
        "timeouts_per_s": per_s("requests_errors"),
        "connection_errors_per_s": per_s("connections_errors"),
    }


def _ml(current: Sample, previous: Sample | None, seconds: float | None) -> dict[str, Any] | None:
    if current.ml is None:
        return None
    now, then = current.ml, previous.ml if previous is not None else None
    row: dict[str, Any] = {
        "calls": now.calls,
        "retries": now.retries,
        "failures": now.failures,
        "circuit_rejections": now.circuit_rejections,
        "circuit_state": None if now.circuit_state is None else str(now.circuit_state),
        "circuit_times_opened": now.circuit_times_opened,
    }
    for key in ("calls", "retries", "failures", "circuit_rejections"):
        row[f"{key}_per_s"] = _rate(
            getattr(now, key), None if then is None else getattr(then, key), seconds
        )
    return row


def _redis(
    current: Sample, previous: Sample | None, seconds: float | None
) -> dict[str, Any] | None:
    tier = current.status.metrics.shared_tier
    if tier is None:
        return None
    then = None if previous is None else previous.status.metrics.shared_tier

    def errors(sample: Sample) -> int:
        return sum(row.get("l2_errors") or 0 for row in sample.caches.values())

    return {
        "redis": tier.redis,
        "breaker": tier.breaker,
        "subscribed": tier.subscribed,
        "l1_flushes": tier.l1_flushes,
        "invalidations_received": tier.invalidations_received,
        "invalidations_received_per_s": _rate(
            tier.invalidations_received,
            None if then is None else then.invalidations_received,
            seconds,
        ),
        "invalidations_sent_per_s": _rate(
            tier.invalidations_sent, None if then is None else then.invalidations_sent, seconds
        ),
        "errors": errors(current),
        "errors_per_s": _rate(
            errors(current), None if previous is None else errors(previous), seconds
        ),
    }


def _rate_limit(
    current: Sample, previous: Sample | None, seconds: float | None
) -> dict[str, Any] | None:
    if current.rate_limit is None:
        return None
    now = current.rate_limit
    then = None if previous is None else previous.rate_limit
    row: dict[str, Any] = {"allowed": now.get("allowed", 0), "limited": now.get("limited", 0)}
    for key in ("allowed", "limited"):
        row[f"{key}_per_s"] = _rate(
            now.get(key, 0), None if then is None else then.get(key, 0), seconds
        )
    return row


def metrics_event(current: Sample, previous: Sample | None) -> dict[str, Any]:
    """The dashboard's event for ``current``: the numbers of ``/api/v1/metrics/cache``
    (``status``) and, per part, current figures and the rates since ``previous`` (per second;
    hit rates and latency quantiles of that interval; None where there is no previous sample).
    Parts the service does not have (pool, ML client, Redis, rate limiter) are None."""
    seconds = None if previous is None else current.monotonic - previous.monotonic
    return {
        "at": round(current.wall, 3),
        "interval": None if seconds is None else round(seconds, 3),
        "status": current.status.model_dump(mode="json"),
        "caches": _cache_rates(current, previous, seconds),
        "overall": _overall(current, previous, seconds),
        "requests": _request_rates(current, previous, seconds),
        "pool": _pool(current, previous, seconds),
        "ml": _ml(current, previous, seconds),
        "redis": _redis(current, previous, seconds),
        "rate_limit": _rate_limit(current, previous, seconds),
    }


# --- the stream --------------------------------------------------------------------------------

_STARTED: weakref.WeakSet[MetricsStream] = weakref.WeakSet()


def end_streams_soon() -> None:
    """Ask every stream running in this process to end (:meth:`MetricsStream.close_soon`), from
    any thread or a server's exit handler (``uvicorn.Server.handle_exit``): open dashboards then
    no longer hold a graceful shutdown until its timeout."""
    for stream in list(_STARTED):
        stream.close_soon()


class MetricsStream:
    """One sampler for every listener, running only while there is one (see the module).
    :meth:`start` on the event loop, :meth:`close` (idempotent) ends the sampler and every
    listener's stream."""

    def __init__(
        self,
        sources: StreamSources,
        *,
        interval: float = DEFAULT_INTERVAL,
        history: int = DEFAULT_HISTORY,
    ) -> None:
        self._sources = sources
        self._interval = interval
        # Event ids are "<stream>-<n>": a browser reconnecting to a restarted service gets the
        # new history, never a resumption from a number that meant something else.
        self._stream_id = secrets.token_hex(4)
        self._sequence = 0
        self._ring: deque[tuple[int, bytes]] = deque(maxlen=history)
        self._listeners = 0
        self._previous: Sample | None = None
        self._tick: asyncio.Event | None = None
        self._listened = asyncio.Event()  # set while at least one listener is connected
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def listeners(self) -> int:
        """Streams open now."""
        return self._listeners

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_event_id(self) -> str | None:
        """The id of the newest event, or None before the first sample."""
        return f"{self._stream_id}-{self._sequence}" if self._sequence else None

    def start(self) -> None:
        """Take the first sample now, then one every interval while a listener is connected
        (call on the loop)."""
        if self._task is None and not self._closed:
            self._loop = asyncio.get_running_loop()
            self._tick = asyncio.Event()
            self.sample_now()
            self._task = self._loop.create_task(self._run(), name="pgcache-metrics-stream")
            _STARTED.add(self)

    def close(self) -> None:
        """Stop sampling and end every listener's stream (call on the loop; idempotent)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        if self._tick is not None:
            self._tick.set()

    def close_soon(self) -> None:
        """:meth:`close` from any thread (on the stream's loop, if it still runs)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already been closed
                self._loop.call_soon_threadsafe(self.close)

    async def aclose(self) -> None:
        """:meth:`close`, then wait for the sampler to end."""
        self.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def sample_now(self) -> None:
        """Read every counter, publish the event to the listeners and keep it in the history."""
        current = read_sample(self._sources)
        event = metrics_event(current, self._previous)
        self._previous = current
        self._sequence += 1
        event["id"] = self._sequence
        event["listeners"] = self._listeners
        data = json.dumps(event, separators=(",", ":"), allow_nan=False)
        chunk = f"id: {self._stream_id}-{self._sequence}\ndata: {data}\n\n".encode()
        self._ring.append((self._sequence, chunk))
        if self._tick is not None:
            tick, self._tick = self._tick, asyncio.Event()
            tick.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._listened.wait()
            deadline = loop.time()
            while self._listeners and not self._closed:
                deadline += self._interval
                if deadline < loop.time():  # the loop was busy for longer than an interval
                    deadline = loop.time() + self._interval
                await asyncio.sleep(deadline - loop.time())
                if self._listeners:
                    self.sample_now()

    def _joined(self) -> None:
        self._listeners += 1
        if self._listeners == 1 and not self._closed and self._tick is not None:
            previous = self._previous
            if previous is None or time.monotonic() - previous.monotonic >= self._interval:
                self.sample_now()  # the last sample is older than an interval: a fresh one
            self._listened.set()

    def _left(self) -> None:
        self._listeners -= 1
        if not self._listeners:
            self._listened.clear()

    def _resume_after(self, last_event_id: str | None, history: int | None) -> int:
        """The sequence number after which a listener starts."""
        stream, _, number = (last_event_id or "").strip().rpartition("-")
        if stream == self._stream_id and number.isdigit() and int(number) <= self._sequence:
            return int(number)
        if history is None:
            history = len(self._ring)
        return max(0, self._sequence - max(0, history))

    def _events_after(self, sequence: int) -> tuple[int, bytes]:
        if not self._ring or sequence >= self._sequence:
            return sequence, b""
        first = self._ring[0][0]
        chunks = itertools.islice(self._ring, max(0, sequence + 1 - first), None)
        return self._sequence, b"".join(chunk for _, chunk in chunks)

    async def events(
        self, last_event_id: str | None = None, history: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The server-sent events of one listener: the ``retry`` field, then the events after
        ``last_event_id`` (when it is one of this stream's and still kept), else the last
        ``history`` events (None: all kept), then every new event, until :meth:`close` or the
        listener goes away (the iterator is closed). Counted in :attr:`listeners` meanwhile."""
        sequence = self._resume_after(last_event_id, history)
        self._joined()
        try:
            yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
            while not self._closed:
                tick = self._tick
                sequence, chunk = self._events_after(sequence)
                if chunk:
                    yield chunk
                elif tick is None:
                    return
                else:
                    await tick.wait()
        finally:
            self._left()
