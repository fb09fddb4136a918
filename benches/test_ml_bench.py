"""pytest-benchmark suite for the ML client, against the reference service on loopback.

Run with ``pytest benches/test_ml_bench.py --benchmark-only -p no:timeout`` (``make bench``).
One round is ``BATCH`` sequential predictions (``extra_info["ops_per_round"]``), so requests
per second = ops_per_round / round time.

* pooled vs. a new connection per request (``MAX_HTTP_CONNS_PER_HOST=0`` turns keep-alive
  off), sync and async: the original expected pooling to gain 10-20 %;
* a prediction cache hit (:class:`pgcache.ml.CachedPredictor`) vs. the HTTP round trip.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pgcache import Cache
from pgcache.config import Settings
from pgcache.ml.client import AsyncMLClient, MLClient
from pgcache.ml.predictor import CachedPredictor
from pgcache.ml.reference import MLServiceHandle, serve_in_thread
from pgcache.postgres.features import QueryFeatures

BATCH = 20


def _features(query_hash: int = -42) -> QueryFeatures:
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from tests.support.factories import make_features

    return make_features(query_hash=query_hash, collected_at=datetime(2025, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def service() -> Iterator[MLServiceHandle]:
    with serve_in_thread() as handle:
        yield handle


def _settings(url: str, *, pooled: bool) -> Settings:
    return Settings.load(ml_service_url=url, max_http_conns_per_host=5 if pooled else 0)


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "new-connection"])
def test_sync_predict_round_trips(benchmark: Any, service: MLServiceHandle, pooled: bool) -> None:
    features = _features()
    with MLClient(_settings(service.url, pooled=pooled)) as client:

        def batch() -> None:
            for _ in range(BATCH):
                client.predict(features)

        benchmark.extra_info["ops_per_round"] = BATCH
        benchmark(batch)
        assert client.stats().failures == 0


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "new-connection"])
def test_async_predict_round_trips(benchmark: Any, service: MLServiceHandle, pooled: bool) -> None:
    features = _features()
    loop = asyncio.new_event_loop()
    client = AsyncMLClient(_settings(service.url, pooled=pooled))
    try:

        async def sequential() -> None:
            for _ in range(BATCH):
                await client.predict(features)

        benchmark.extra_info["ops_per_round"] = BATCH
        benchmark(lambda: loop.run_until_complete(sequential()))
        assert client.stats().failures == 0
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


class _OneQuery:
    def __init__(self, features: QueryFeatures) -> None:
        self.features = features

    def extract_query_features(self, query_hash: int, scenario: str) -> QueryFeatures:
        return self.features

    def extract_batch_query_features(self, hashes: Any, scenario: str) -> dict[int, QueryFeatures]:
        return {self.features.query_hash: self.features}


def test_prediction_cache_hit(benchmark: Any, service: MLServiceHandle) -> None:
    features = _features()
    with (
        MLClient(_settings(service.url, pooled=True)) as client,
        Cache[Any, Any](ttl=300) as cache,
    ):
        predictor = CachedPredictor(_OneQuery(features), client, cache)
        predictor.predict_query(features.query_hash)

        def batch() -> None:
            for _ in range(BATCH):
                predictor.predict_query(features.query_hash)

        benchmark.extra_info["ops_per_round"] = BATCH
        benchmark(batch)
        assert client.stats().requests == 1


def test_prediction_cache_miss_http_round_trip(benchmark: Any, service: MLServiceHandle) -> None:
    features = _features()
    with (
        MLClient(_settings(service.url, pooled=True)) as client,
        Cache[Any, Any](ttl=300) as cache,
    ):
        predictor = CachedPredictor(_OneQuery(features), client, cache)

        def batch() -> None:
            for _ in range(BATCH):
                cache.clear()
                predictor.predict_query(features.query_hash)

        benchmark.extra_info["ops_per_round"] = BATCH
        benchmark(batch)
        assert client.stats().failures == 0
