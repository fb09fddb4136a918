"""pytest-benchmark suite for cached feature extraction, against a real PostgreSQL.

Run with ``pytest benches/test_features_bench.py --benchmark-only -p no:timeout``. The server is
the test suite's private one (or DATABASE_URL), with a workload of over 100 distinct queries.

* ``test_feature_extractor_with_cache`` and ``test_prediction_caching``: the original design's
  two benchmarks (a features hit through the cached extractor; a prediction set + get in the
  manager's predictions cache).
* Groups ``features-single`` and ``features-batch-100``: a cached lookup against the real,
  uncached ``pg_stat_statements`` extraction, on the same server in the same run: the figure
  that tells a user what the cache saves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from tests.support.postgres import Workload

from pgcache import CachedFeatureExtractor, PgStatStatementsExtractor
from pgcache.caching.manager import CacheManager
from pgcache.postgres.pools import PoolSettings, make_pool

BATCH = 100


@pytest.fixture(scope="module")
def pool(postgres_url: str) -> Iterator[ConnectionPool[psycopg.Connection[Any]]]:
    with make_pool(PoolSettings(conninfo=postgres_url, min_size=2, max_size=4)) as created:
        yield created


@pytest.fixture
def manager() -> Iterator[CacheManager]:
    with CacheManager() as created:
        yield created


@pytest.fixture
def extractor(pool: ConnectionPool[psycopg.Connection[Any]]) -> PgStatStatementsExtractor:
    return PgStatStatementsExtractor(pool)


@pytest.fixture
def cached(extractor: PgStatStatementsExtractor, manager: CacheManager) -> CachedFeatureExtractor:
    return CachedFeatureExtractor(extractor, manager)


@pytest.fixture
def batch_hashes(pg_workload: Workload) -> list[int]:
    hashes = list(pg_workload.queryids.values())[:BATCH]
    assert len(hashes) == BATCH
    return hashes


def test_feature_extractor_with_cache(
    benchmark: Any, cached: CachedFeatureExtractor, pg_workload: Workload
) -> None:
    queryid = pg_workload.queryids["avg_by_region"]
    cached.extract_query_features(queryid, "current")
    features = benchmark(cached.extract_query_features, queryid, "current")
    assert features.query_hash == queryid
    assert cached.get_cache_metrics().misses == 1


def test_prediction_caching(benchmark: Any, manager: CacheManager) -> None:
    prediction = {"predicted_time_ms": 12.5, "confidence": 0.92, "model_version": "v3"}

    def set_and_get() -> object:
        manager.set_prediction(-42, "current", "v3", prediction)
        return manager.get_prediction(-42, "current", "v3")

    assert benchmark(set_and_get) == prediction


@pytest.mark.benchmark(group="features-single")
def test_cached_feature_lookup_single(
    benchmark: Any, cached: CachedFeatureExtractor, pg_workload: Workload
) -> None:
    queryid = pg_workload.queryids["count_all"]
    cached.extract_query_features(queryid, "current")
    assert benchmark(cached.extract_query_features, queryid, "current").query_hash == queryid


@pytest.mark.benchmark(group="features-single")
def test_uncached_feature_extraction_single(
    benchmark: Any, extractor: PgStatStatementsExtractor, pg_workload: Workload
) -> None:
    queryid = pg_workload.queryids["count_all"]
    assert benchmark(extractor.extract_query_features, queryid, "current").query_hash == queryid


@pytest.mark.benchmark(group="features-batch-100")
def test_cached_feature_lookup_batch_100(
    benchmark: Any, cached: CachedFeatureExtractor, batch_hashes: list[int]
) -> None:
    cached.extract_batch_query_features(batch_hashes, "current")
    result = benchmark(cached.extract_batch_query_features, batch_hashes, "current")
    assert len(result) == BATCH


@pytest.mark.benchmark(group="features-batch-100")
def test_uncached_feature_extraction_batch_100(
    benchmark: Any, extractor: PgStatStatementsExtractor, batch_hashes: list[int]
) -> None:
    result = benchmark(extractor.extract_batch_query_features, batch_hashes, "current")
    assert len(result) == BATCH
