"""The live metrics behind the dashboard: rates from two consecutive samples, and one sample a
tick shared by every listener, taken only while there is one (listeners that fall behind skip
to what is kept; closing ends them all). Samples are read from real caches, a real request
recorder and a real pool; time between samples is set on the samples, never waited for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from tests.support.factories import make_features

from pgcache.caching.manager import CacheManager
from pgcache.observability.requests import RequestMetrics
from pgcache.service.metrics_stream import (
    MetricsStream,
    Sample,
    StreamSources,
    end_streams_soon,
    metrics_event,
    read_sample,
)


@pytest.fixture
def manager() -> Iterator[CacheManager]:
    with CacheManager() as caches:
        yield caches


def _later(sample: Sample, seconds: float, previous: Sample) -> Sample:
    return dataclasses.replace(sample, monotonic=previous.monotonic + seconds)


def _data(chunk: bytes) -> list[dict[str, Any]]:
    """The events of a chunk of the stream, in order."""
    return [
        json.loads(line[len(b"data: ") :])
        for line in chunk.splitlines()
        if line.startswith(b"data: ")
    ]


# --- rates -----------------------------------------------------------------------------------


def test_first_event_has_the_figures_and_no_rates(manager: CacheManager) -> None:
    manager.set_anomaly(1, "x")
    manager.get_anomaly(1)
    event = metrics_event(read_sample(StreamSources(manager)), None)
    assert event["interval"] is None
    assert event["status"]["metrics"]["anomaly_cache"]["hits"] == 1
    assert event["caches"]["anomalies"]["lookups_per_s"] is None
    assert event["caches"]["anomalies"]["hit_rate_now"] is None


def test_rates_are_per_second_between_two_samples(manager: CacheManager) -> None:
    sources = StreamSources(manager)
    manager.set_features(1, "current", make_features(1))
    first = read_sample(sources)
    for _ in range(30):
        manager.get_features(1)
    for query_hash in range(2, 12):
        manager.get_features(query_hash)
    second = _later(read_sample(sources), 2.0, first)
    rates = metrics_event(second, first)["caches"]["features"]
    assert rates["lookups_per_s"] == 20.0
    assert rates["hits_per_s"] == 15.0
    assert rates["misses_per_s"] == 5.0
    assert rates["hit_rate_now"] == 75.0


def test_hit_rate_of_an_interval_without_lookups_is_none(manager: CacheManager) -> None:
    sources = StreamSources(manager)
    manager.get_anomaly(1)
    first = read_sample(sources)
    second = _later(read_sample(sources), 1.0, first)
    event = metrics_event(second, first)
    assert event["caches"]["anomalies"]["hit_rate_now"] is None
    assert event["caches"]["anomalies"]["lookups_per_s"] == 0.0
    assert event["overall"]["hit_rate_now"] is None


def test_overall_hit_rate_of_the_interval_weighs_every_lookup(manager: CacheManager) -> None:
    sources = StreamSources(manager)
    manager.set_anomaly(1, "a")
    first = read_sample(sources)
    for _ in range(9):
        manager.get_anomaly(1)  # nine hits in one cache
    manager.get_fingerprint(1)  # one miss in another
    second = _later(read_sample(sources), 1.0, first)
    assert metrics_event(second, first)["overall"]["hit_rate_now"] == 90.0


def test_a_counter_that_went_back_gives_no_negative_rate(manager: CacheManager) -> None:
    counts = {"allowed": 10, "limited": 4}
    sources = StreamSources(manager, rate_limit=lambda: dict(counts))
    first = read_sample(sources)
    counts.update(allowed=3, limited=6)  # a limiter replaced by a new one
    second = _later(read_sample(sources), 1.0, first)
    limit = metrics_event(second, first)["rate_limit"]
    assert limit == {"allowed": 3, "limited": 6, "allowed_per_s": 0.0, "limited_per_s": 2.0}


def test_parts_the_service_lacks_are_none(manager: CacheManager) -> None:
    event = metrics_event(read_sample(StreamSources(manager)), None)
    assert event["requests"] is None
    assert event["pool"] is None
    assert event["ml"] is None
    assert event["redis"] is None
    assert event["rate_limit"] is None


def test_request_latency_is_of_the_interval_only(manager: CacheManager) -> None:
    requests = RequestMetrics()
    sources = StreamSources(manager, requests=requests)
    for _ in range(100):
        requests.record("GET /a", 200, 0.001)
    first = read_sample(sources)
    for _ in range(50):
        requests.record("GET /a", 200, 0.100)
    requests.record("GET /a", 500, 0.100)
    second = _later(read_sample(sources), 0.5, first)
    row = metrics_event(second, first)["requests"]["GET /a"]
    assert row["requests"] == 151
    assert row["per_s"] == 102.0
    assert row["server_errors_per_s"] == 2.0
    assert 100 / 1.26 <= row["p50_ms"] <= 100 * 1.26


def test_pool_figures_come_from_the_pool(
    manager: CacheManager, pg_pool: ConnectionPool[psycopg.Connection[Any]]
) -> None:
    sources = StreamSources(manager, pool=pg_pool)
    with pg_pool.connection():
        pool = metrics_event(read_sample(sources), None)["pool"]
    assert pool["in_use"] >= 1
    assert pool["size"] == pool["in_use"] + pool["idle"]
    assert pool["max"] == 8


# --- the stream ------------------------------------------------------------------------------


class CountingSources:
    """Sources whose rate limiter counts how often a sample was read."""

    def __init__(self, manager: CacheManager) -> None:
        self.reads = 0
        self.sources = StreamSources(manager, rate_limit=self._read)

    def _read(self) -> dict[str, int]:
        self.reads += 1
        return {"allowed": self.reads, "limited": 0}


@pytest.fixture
async def stream(manager: CacheManager) -> AsyncIterator[tuple[MetricsStream, CountingSources]]:
    counting = CountingSources(manager)
    # One sample at start; the test publishes the others (sample_now) instead of waiting.
    metrics = MetricsStream(counting.sources, interval=3600.0, history=3)
    metrics.start()
    yield metrics, counting
    await metrics.aclose()


async def test_every_listener_gets_the_same_bytes_of_one_sample(
    stream: tuple[MetricsStream, CountingSources],
) -> None:
    metrics, counting = stream
    listeners = [metrics.events(history=0) for _ in range(10)]
    for listener in listeners:
        await anext(listener)  # the retry field
    pending = [asyncio.ensure_future(anext(listener)) for listener in listeners]
    await asyncio.sleep(0)
    assert metrics.listeners == 10
    metrics.sample_now()
    chunks = await asyncio.gather(*pending)
    assert len(set(chunks)) == 1
    assert counting.reads == 2  # the first sample and this one, whatever the listeners
    for listener in listeners:
        await listener.aclose()
    assert metrics.listeners == 0


@pytest.fixture
async def eager_stream(
    manager: CacheManager,
) -> AsyncIterator[tuple[MetricsStream, CountingSources]]:
    """A stream whose interval is zero: a sampler that ran would sample on every turn of the
    event loop, so counting reads shows whether it runs, without waiting for time to pass."""
    counting = CountingSources(manager)
    metrics = MetricsStream(counting.sources, interval=0.0)
    metrics.start()
    yield metrics, counting
    await metrics.aclose()


async def _turns(count: int = 20) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_with_no_listener_no_sample_is_taken(
    eager_stream: tuple[MetricsStream, CountingSources],
) -> None:
    metrics, counting = eager_stream
    await _turns()
    assert counting.reads == 1  # the sample at start, none since
    assert metrics.last_event_id is not None
    assert metrics.last_event_id.endswith("-1")


async def test_the_first_listener_gets_a_fresh_sample_at_once(
    eager_stream: tuple[MetricsStream, CountingSources],
) -> None:
    metrics, counting = eager_stream
    listener = metrics.events(history=0)
    await anext(listener)  # the retry field: the listener is counted
    assert counting.reads == 2
    assert [event["id"] for event in _data(await anext(listener))] == [2]
    await listener.aclose()


async def test_sampling_stops_when_the_last_listener_leaves(
    eager_stream: tuple[MetricsStream, CountingSources],
) -> None:
    metrics, counting = eager_stream
    first, second = metrics.events(history=0), metrics.events(history=0)
    await anext(first)
    await anext(second)
    await anext(first)  # the sample taken when the first listener came
    await anext(first)  # one the sampler took
    await first.aclose()
    sampled = counting.reads
    await anext(second)  # the sampler goes on for the one left
    await _turns()
    assert counting.reads > sampled
    await second.aclose()
    await _turns(2)  # the sampler finds nobody listening at its next turn
    sampled = counting.reads
    await _turns()
    assert counting.reads == sampled
    assert metrics.listeners == 0


async def test_a_listener_that_fell_behind_gets_what_is_kept(
    stream: tuple[MetricsStream, CountingSources],
) -> None:
    metrics, _ = stream
    listener = metrics.events(history=0)
    await anext(listener)
    for _ in range(6):
        metrics.sample_now()  # seven samples in all; three are kept
    events = _data(await anext(listener))
    assert [event["id"] for event in events] == [5, 6, 7]
    await listener.aclose()


async def test_a_reconnection_resumes_after_its_last_event_id(
    stream: tuple[MetricsStream, CountingSources],
) -> None:
    metrics, _ = stream
    seen = metrics.last_event_id
    metrics.sample_now()
    metrics.sample_now()
    listener = metrics.events(last_event_id=seen)
    await anext(listener)
    assert [event["id"] for event in _data(await anext(listener))] == [2, 3]
    await listener.aclose()


async def test_close_ends_every_listener(stream: tuple[MetricsStream, CountingSources]) -> None:
    metrics, _ = stream
    listener = metrics.events(history=0)
    await anext(listener)
    waiting = asyncio.ensure_future(anext(listener))
    await asyncio.sleep(0)
    metrics.close()
    with pytest.raises(StopAsyncIteration):
        await waiting
    assert metrics.listeners == 0


async def test_end_streams_soon_closes_the_running_streams(
    stream: tuple[MetricsStream, CountingSources],
) -> None:
    metrics, _ = stream
    end_streams_soon()
    await asyncio.sleep(0)  # the close was queued on this loop before this task resumes
    assert metrics.closed
