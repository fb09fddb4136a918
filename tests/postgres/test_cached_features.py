"""CachedFeatureExtractor and AsyncCachedFeatureExtractor in front of the real extractors.

The base extractor is always the real pg_stat_statements one; a counting proxy around it
records how often (and with what) it is asked, so the tests can see what reaches PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from tests.support.factories import make_features
from tests.support.postgres import Workload, extractor_statement_calls, queryid_of, unknown_queryid

from pgcache import (
    AsyncCachedFeatureExtractor,
    AsyncPgStatStatementsExtractor,
    Cache,
    CachedFeatureExtractor,
    CacheManager,
    FeatureExtractor,
    ManualClock,
    PgStatStatementsExtractor,
    QueryFeatures,
    QueryNotFoundError,
)
from pgcache.keys import feature_key as feature_cache_key
from pgcache.postgres.pools import PoolSettings, make_async_pool

THREADS = 50
TASKS = 50


class CountingExtractor:
    """The real extractor, with a record of every call that reached it."""

    def __init__(self, base: PgStatStatementsExtractor) -> None:
        self.base = base
        self.singles: list[int] = []
        self.batches: list[list[int]] = []
        self._lock = threading.Lock()

    def extract_query_features(self, query_hash: int, scenario: str) -> QueryFeatures:
        with self._lock:
            self.singles.append(query_hash)
        return self.base.extract_query_features(query_hash, scenario)

    def extract_batch_query_features(
        self, hashes: Iterable[int], scenario: str
    ) -> dict[int, QueryFeatures]:
        with self._lock:
            self.batches.append(list(hashes))
        return self.base.extract_batch_query_features(self.batches[-1], scenario)


class AsyncCountingExtractor:
    """The real async extractor, with a record of every call that reached it."""

    def __init__(self, base: AsyncPgStatStatementsExtractor) -> None:
        self.base = base
        self.singles: list[int] = []
        self.batches: list[list[int]] = []

    async def extract_query_features(self, query_hash: int, scenario: str) -> QueryFeatures:
        self.singles.append(query_hash)
        # Yield once more, so that every concurrent caller is already waiting on this flight.
        await asyncio.sleep(0)
        return await self.base.extract_query_features(query_hash, scenario)

    async def extract_batch_query_features(
        self, hashes: Iterable[int], scenario: str
    ) -> dict[int, QueryFeatures]:
        self.batches.append(list(hashes))
        return await self.base.extract_batch_query_features(self.batches[-1], scenario)


@pytest.fixture
def counting(pg_pool: ConnectionPool[psycopg.Connection[Any]]) -> CountingExtractor:
    return CountingExtractor(PgStatStatementsExtractor(pg_pool))


@pytest.fixture
def cache(make_cache: Any) -> Cache[int, QueryFeatures]:
    created: Cache[int, QueryFeatures] = make_cache(max_size=1000)
    return created


@pytest.fixture
def cached(counting: CountingExtractor, cache: Cache[int, QueryFeatures]) -> CachedFeatureExtractor:
    return CachedFeatureExtractor(counting, cache)


@pytest.fixture
async def async_counting(postgres_url: str) -> AsyncIterator[AsyncCountingExtractor]:
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = await make_async_pool(
        PoolSettings(conninfo=postgres_url, min_size=1, max_size=4)
    )
    try:
        yield AsyncCountingExtractor(AsyncPgStatStatementsExtractor(pool))
    finally:
        await pool.close()


@pytest.fixture
def async_cached(
    async_counting: AsyncCountingExtractor, cache: Cache[int, QueryFeatures]
) -> AsyncCachedFeatureExtractor:
    return AsyncCachedFeatureExtractor(async_counting, cache)


@pytest.fixture
def manager(clock: ManualClock) -> Iterator[CacheManager]:
    with CacheManager(max_size=100, cleanup_interval=3600.0, clock=clock) as created:
        yield created


# --- hits and misses -------------------------------------------------------------------------


def test_a_hit_does_not_query_the_database(
    cached: CachedFeatureExtractor, pg_workload: Workload, postgres_url: str
) -> None:
    queryid = pg_workload.queryids["count_all"]
    first = cached.extract_query_features(queryid, "current")
    before = extractor_statement_calls(postgres_url)
    again = [cached.extract_query_features(queryid, "current") for _ in range(10)]
    assert extractor_statement_calls(postgres_url) == before
    assert all(features == first for features in again)


def test_a_miss_asks_the_base_once_and_stores_under_the_features_key(
    cached: CachedFeatureExtractor,
    counting: CountingExtractor,
    cache: Cache[int, QueryFeatures],
    pg_workload: Workload,
) -> None:
    queryid = pg_workload.queryids["by_customer"]
    features = cached.extract_query_features(queryid, "current")
    assert counting.singles == [queryid]
    assert cache.keys() == [feature_cache_key(queryid)] == [queryid]
    assert cache.get(queryid) == features


def test_a_negative_queryid_is_cached_under_its_signed_key(
    cached: CachedFeatureExtractor,
    counting: CountingExtractor,
    cache: Cache[int, QueryFeatures],
    pg_workload: Workload,
) -> None:
    negative = pg_workload.negative_ids[0]
    cached.extract_query_features(negative, "current")
    cached.extract_query_features(negative, "current")
    assert counting.singles == [negative]
    assert cache.keys() == [negative]


def test_every_scenario_is_answered_from_one_entry_labelled_with_its_name(
    cached: CachedFeatureExtractor, counting: CountingExtractor, pg_workload: Workload
) -> None:
    queryid = pg_workload.queryids["count_all"]
    current = cached.extract_query_features(queryid, "current")
    what_if = cached.extract_query_features(queryid, "what-if")
    assert (current.scenario, what_if.scenario) == ("current", "what-if")
    assert what_if.model_dump(exclude={"scenario"}) == current.model_dump(exclude={"scenario"})
    assert counting.singles == [queryid]
    assert cached.extract_query_features(queryid, "current") is current


def test_five_hundred_scenarios_of_one_query_cost_one_database_read_and_one_entry(
    cached: CachedFeatureExtractor,
    cache: Cache[int, QueryFeatures],
    pg_workload: Workload,
    postgres_url: str,
) -> None:
    queryid = pg_workload.queryids["by_customer"]
    before = extractor_statement_calls(postgres_url)
    answers = [cached.extract_query_features(queryid, f"scenario-{n}") for n in range(500)]
    assert extractor_statement_calls(postgres_url) - before == 1
    assert len(cache) == 1
    assert [features.scenario for features in answers] == [f"scenario-{n}" for n in range(500)]


async def test_five_hundred_scenarios_cost_one_database_read_through_the_async_twin(
    async_cached: AsyncCachedFeatureExtractor,
    cache: Cache[int, QueryFeatures],
    pg_workload: Workload,
    postgres_url: str,
) -> None:
    queryid = pg_workload.queryids["sum_by_customer"]
    before = extractor_statement_calls(postgres_url)
    for n in range(500):
        assert (await async_cached.extract_query_features(queryid, f"s{n}")).scenario == f"s{n}"
    assert extractor_statement_calls(postgres_url) - before == 1
    assert len(cache) == 1


def test_a_batch_in_another_scenario_is_answered_from_the_cache(
    cached: CachedFeatureExtractor, counting: CountingExtractor, pg_workload: Workload
) -> None:
    hashes = list(pg_workload.queryids.values())[:3]
    cached.extract_batch_query_features(hashes, "current")
    peak = cached.extract_batch_query_features(hashes, "peak")
    assert len(counting.batches) == 1
    assert {features.scenario for features in peak.values()} == {"peak"}


def test_cache_metrics_count_the_hits_and_misses(
    cached: CachedFeatureExtractor, pg_workload: Workload
) -> None:
    queryid = pg_workload.queryids["count_all"]
    for _ in range(3):
        cached.extract_query_features(queryid, "current")
    metrics = cached.get_cache_metrics()
    assert (metrics.hits, metrics.misses, metrics.size) == (2, 1, 1)


def test_an_entry_expires_after_the_ttl(
    counting: CountingExtractor,
    cache: Cache[int, QueryFeatures],
    clock: ManualClock,
    pg_workload: Workload,
) -> None:
    cached = CachedFeatureExtractor(counting, cache, ttl=timedelta(seconds=30))
    queryid = pg_workload.queryids["count_all"]
    cached.extract_query_features(queryid, "current")
    clock.advance(29)
    cached.extract_query_features(queryid, "current")
    clock.advance(2)
    cached.extract_query_features(queryid, "current")
    assert counting.singles == [queryid, queryid]


def test_the_default_ttl_is_fifteen_minutes_for_a_cache_without_one(
    cached: CachedFeatureExtractor,
    counting: CountingExtractor,
    clock: ManualClock,
    pg_workload: Workload,
) -> None:
    queryid = pg_workload.queryids["count_all"]
    cached.extract_query_features(queryid, "current")
    clock.advance(timedelta(minutes=15) - timedelta(seconds=1))
    cached.extract_query_features(queryid, "current")
    clock.advance(timedelta(seconds=2))
    cached.extract_query_features(queryid, "current")
    assert counting.singles == [queryid, queryid]


def test_a_cached_extractor_is_itself_a_feature_extractor(
    cached: CachedFeatureExtractor,
) -> None:
    assert isinstance(cached, FeatureExtractor)


@pytest.mark.parametrize("ttl", [0, -1.0, timedelta(0)])
def test_a_non_positive_ttl_is_rejected_naming_it(
    counting: CountingExtractor, cache: Cache[int, QueryFeatures], ttl: Any
) -> None:
    with pytest.raises(ValueError, match="ttl="):
        CachedFeatureExtractor(counting, cache, ttl=ttl)


def test_something_that_is_not_a_cache_is_rejected(counting: CountingExtractor) -> None:
    with pytest.raises(TypeError, match=r"cache_or_manager=\{\}: expected a pgcache.Cache"):
        CachedFeatureExtractor(counting, {})  # type: ignore[arg-type]


# --- errors ----------------------------------------------------------------------------------


def test_a_missing_query_is_not_cached(
    cached: CachedFeatureExtractor,
    counting: CountingExtractor,
    cache: Cache[int, QueryFeatures],
    pg_workload: Workload,
) -> None:
    unknown = unknown_queryid(pg_workload, 1)
    for _ in range(2):
        with pytest.raises(QueryNotFoundError, match=str(unknown)):
            cached.extract_query_features(unknown, "current")
    assert counting.singles == [unknown, unknown]
    assert len(cache) == 0


def test_a_query_run_after_a_miss_is_found_on_the_next_call(
    cached: CachedFeatureExtractor, postgres_url: str
) -> None:
    sql = "SELECT count(*) FROM pgcache_workload.customers WHERE region = %s AND id > 41"
    queryid = queryid_of(postgres_url, sql, ("eu",))
    with pytest.raises(QueryNotFoundError):
        cached.extract_query_features(queryid, "current")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql, ("eu",))
    assert cached.extract_query_features(queryid, "current").calls == 1


# --- batches ----------------------------------------------------------------------------------


def test_a_batch_extracts_only_the_misses_in_one_base_call(
    cached: CachedFeatureExtractor, counting: CountingExtractor, pg_workload: Workload
) -> None:
    hashes = list(pg_workload.queryids.values())[:5]
    cached.extract_query_features(hashes[0], "current")
    cached.extract_query_features(hashes[3], "current")
    batch = cached.extract_batch_query_features(hashes, "current")
    assert counting.batches == [[hashes[1], hashes[2], hashes[4]]]
    assert list(batch) == hashes


def test_a_batch_stores_what_it_extracted(
    cached: CachedFeatureExtractor, counting: CountingExtractor, pg_workload: Workload
) -> None:
    hashes = list(pg_workload.queryids.values())[:5]
    first = cached.extract_batch_query_features(hashes, "current")
    second = cached.extract_batch_query_features(hashes, "current")
    assert len(counting.batches) == 1
    assert second == first
    assert [cached.extract_query_features(h, "current") for h in hashes] == list(first.values())
    assert counting.singles == []


def test_a_batch_of_hits_does_not_query_the_database(
    cached: CachedFeatureExtractor, pg_workload: Workload, postgres_url: str
) -> None:
    hashes = list(pg_workload.queryids.values())
    cached.extract_batch_query_features(hashes, "current")
    before = extractor_statement_calls(postgres_url)
    assert set(cached.extract_batch_query_features(hashes, "current")) == set(hashes)
    assert extractor_statement_calls(postgres_url) == before


def test_unknown_hashes_in_a_batch_are_left_out_and_not_cached(
    cached: CachedFeatureExtractor,
    counting: CountingExtractor,
    cache: Cache[int, QueryFeatures],
    pg_workload: Workload,
) -> None:
    known = pg_workload.queryids["count_all"]
    unknown = unknown_queryid(pg_workload, -1)
    assert list(cached.extract_batch_query_features([unknown, known], "current")) == [known]
    cached.extract_batch_query_features([unknown, known], "current")
    assert counting.batches == [[unknown, known], [unknown]]
    assert cache.keys() == [feature_cache_key(known)]


# --- single-flight -------------------------------------------------------------------------------


def test_fifty_threads_missing_one_key_extract_it_once(
    cached: CachedFeatureExtractor, counting: CountingExtractor, pg_workload: Workload
) -> None:
    queryid = pg_workload.queryids["avg_by_region"]
    start = threading.Barrier(THREADS)

    def extract() -> QueryFeatures:
        start.wait()
        return cached.extract_query_features(queryid, "current")

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda _: extract(), range(THREADS)))
    assert counting.singles == [queryid]
    assert all(features is results[0] for features in results)


async def test_fifty_tasks_missing_one_key_extract_it_once(
    async_cached: AsyncCachedFeatureExtractor,
    async_counting: AsyncCountingExtractor,
    pg_workload: Workload,
) -> None:
    queryid = pg_workload.queryids["avg_by_region"]
    results = await asyncio.gather(
        *(async_cached.extract_query_features(queryid, "current") for _ in range(TASKS))
    )
    assert async_counting.singles == [queryid]
    assert all(features is results[0] for features in results)


# --- the async twin -------------------------------------------------------------------------------


async def test_an_async_hit_does_not_query_the_database(
    async_cached: AsyncCachedFeatureExtractor, pg_workload: Workload, postgres_url: str
) -> None:
    queryid = pg_workload.queryids["count_all"]
    first = await async_cached.extract_query_features(queryid, "current")
    before = extractor_statement_calls(postgres_url)
    assert await async_cached.extract_query_features(queryid, "current") == first
    assert extractor_statement_calls(postgres_url) == before


async def test_an_async_batch_extracts_only_the_misses(
    async_cached: AsyncCachedFeatureExtractor,
    async_counting: AsyncCountingExtractor,
    pg_workload: Workload,
) -> None:
    hashes = list(pg_workload.queryids.values())[:4]
    await async_cached.extract_query_features(hashes[1], "current")
    batch = await async_cached.extract_batch_query_features(hashes, "current")
    assert async_counting.batches == [[hashes[0], hashes[2], hashes[3]]]
    assert list(batch) == hashes


async def test_an_async_error_is_not_cached(
    async_cached: AsyncCachedFeatureExtractor,
    async_counting: AsyncCountingExtractor,
    cache: Cache[int, QueryFeatures],
    pg_workload: Workload,
) -> None:
    unknown = unknown_queryid(pg_workload, -1)
    for _ in range(2):
        with pytest.raises(QueryNotFoundError, match=str(unknown)):
            await async_cached.extract_query_features(unknown, "current")
    assert async_counting.singles == [unknown, unknown]
    assert len(cache) == 0


async def test_async_cache_metrics_count_the_hits_and_misses(
    async_cached: AsyncCachedFeatureExtractor, pg_workload: Workload
) -> None:
    queryid = pg_workload.queryids["count_all"]
    for _ in range(3):
        await async_cached.extract_query_features(queryid, "current")
    metrics = async_cached.get_cache_metrics()
    assert (metrics.hits, metrics.misses) == (2, 1)


# --- with a CacheManager --------------------------------------------------------------------------


def test_with_a_manager_the_features_land_in_its_features_cache(
    counting: CountingExtractor, manager: CacheManager, pg_workload: Workload
) -> None:
    cached = CachedFeatureExtractor(counting, manager)
    queryid = pg_workload.queryids["count_all"]
    features = cached.extract_query_features(queryid, "current")
    assert cached.cache is manager.cache("features")
    assert manager.get_features(queryid, "current") == features


def test_with_a_manager_features_it_stored_in_another_scenario_are_answered_relabelled(
    counting: CountingExtractor, manager: CacheManager
) -> None:
    stored = make_features(-31, scenario="peak")
    manager.set_features(-31, "peak", stored)
    cached = CachedFeatureExtractor(counting, manager)
    current = cached.extract_query_features(-31, "current")
    assert current.scenario == "current"
    assert current.model_dump(exclude={"scenario"}) == stored.model_dump(exclude={"scenario"})
    assert cached.extract_query_features(-31, "peak") is stored
    assert counting.singles == []


def test_with_a_manager_invalidating_the_query_forces_a_new_extraction(
    counting: CountingExtractor, manager: CacheManager, pg_workload: Workload
) -> None:
    cached = CachedFeatureExtractor(counting, manager)
    queryid = pg_workload.negative_ids[0]
    cached.extract_query_features(queryid, "current")
    assert manager.invalidate_query(queryid) == 1
    cached.extract_query_features(queryid, "current")
    assert counting.singles == [queryid, queryid]


def test_with_a_manager_the_features_ttl_of_the_manager_applies(
    counting: CountingExtractor, clock: ManualClock, pg_workload: Workload
) -> None:
    with CacheManager(feature_ttl=60, cleanup_interval=3600.0, clock=clock) as manager:
        cached = CachedFeatureExtractor(counting, manager)
        queryid = pg_workload.queryids["count_all"]
        cached.extract_query_features(queryid, "current")
        clock.advance(61)
        cached.extract_query_features(queryid, "current")
    assert counting.singles == [queryid, queryid]


def test_with_a_disabled_manager_every_call_extracts_and_counts_a_miss(
    counting: CountingExtractor, clock: ManualClock, pg_workload: Workload
) -> None:
    with CacheManager(enabled=False, cleanup_interval=3600.0, clock=clock) as manager:
        cached = CachedFeatureExtractor(counting, manager)
        queryid = pg_workload.queryids["count_all"]
        for _ in range(3):
            cached.extract_query_features(queryid, "current")
        cached.extract_batch_query_features([queryid], "current")
        assert counting.singles == [queryid] * 3
        assert counting.batches == [[queryid]]
        assert len(manager.cache("features")) == 0
        assert cached.get_cache_metrics().misses == 4


async def test_async_with_a_manager_the_features_land_in_its_features_cache(
    async_counting: AsyncCountingExtractor, manager: CacheManager, pg_workload: Workload
) -> None:
    cached = AsyncCachedFeatureExtractor(async_counting, manager)
    queryid = pg_workload.queryids["count_all"]
    features = await cached.extract_query_features(queryid, "current")
    assert manager.get_features(queryid, "current") == features
