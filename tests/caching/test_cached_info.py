"""cache_info() and cache_clear() of a cached function: about its own entries and calls only."""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest
from tests.support.caches import MakeCache, WaitUntil, double_and_triple

from pgcache import ManualClock
from pgcache.caching.cached import CacheInfo, cached


def test_cache_info_has_the_fields_of_functools_lru_cache() -> None:
    assert CacheInfo._fields == functools.lru_cache(len).cache_info()._fields


def test_a_new_function_has_no_hits_no_misses_and_nothing_stored(make_cache: MakeCache) -> None:
    @cached(make_cache(max_size=50))
    def square(x: int) -> int:
        return x * x

    assert square.cache_info() == CacheInfo(hits=0, misses=0, maxsize=50, currsize=0)


def test_a_call_that_runs_the_function_is_a_miss_and_one_answered_from_the_cache_a_hit(
    make_cache: MakeCache,
) -> None:
    @cached(make_cache())
    def square(x: int) -> int:
        return x * x

    square(2)
    square(2)
    square(3)
    square(2)
    assert square.cache_info() == CacheInfo(hits=2, misses=2, maxsize=10_000, currsize=2)


async def test_async_calls_are_counted_the_same_way(make_cache: MakeCache) -> None:
    @cached(make_cache())
    async def square(x: int) -> int:
        return x * x

    await square(2)
    await square(2)
    await square(3)
    assert square.cache_info() == CacheInfo(hits=1, misses=2, maxsize=10_000, currsize=2)


def test_a_call_that_raised_is_a_miss_and_stores_nothing(make_cache: MakeCache) -> None:
    @cached(make_cache())
    def failing(x: int) -> int:
        raise LookupError(x)

    with pytest.raises(LookupError):
        failing(1)
    assert failing.cache_info() == CacheInfo(hits=0, misses=1, maxsize=10_000, currsize=0)


def test_maxsize_is_the_limit_of_the_cache_none_when_unbounded(make_cache: MakeCache) -> None:
    @cached(make_cache(max_size=None))
    def identity(x: int) -> int:
        return x

    assert identity.cache_info().maxsize is None


def test_functions_sharing_a_cache_each_count_only_their_own_calls_and_entries(
    make_cache: MakeCache,
) -> None:
    cache = make_cache()
    double, triple = double_and_triple(cache)

    double(1)
    double(1)
    double(2)
    triple(1)
    cache["someone else's"] = 0
    assert double.cache_info() == CacheInfo(hits=1, misses=2, maxsize=10_000, currsize=2)
    assert triple.cache_info() == CacheInfo(hits=0, misses=1, maxsize=10_000, currsize=1)


def test_expired_results_are_not_in_currsize(make_cache: MakeCache, clock: ManualClock) -> None:
    @cached(make_cache(), ttl=10)
    def identity(x: int) -> int:
        return x

    identity(1)
    clock.advance(10)
    assert identity.cache_info().currsize == 0


def test_threads_waiting_for_one_call_count_as_hits(
    make_cache: MakeCache, wait_until: WaitUntil
) -> None:
    cache = make_cache()
    threads_count = 8

    @cached(cache)
    def slow(x: int) -> int:
        # Returns once every other thread has missed too, so each of them waits for this call.
        assert wait_until(lambda: cache.metrics().misses == threads_count)
        return x

    threads = [threading.Thread(target=slow, args=(1,)) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert slow.cache_info() == CacheInfo(hits=7, misses=1, maxsize=10_000, currsize=1)


async def test_tasks_waiting_for_one_call_count_as_hits(make_cache: MakeCache) -> None:
    gate = asyncio.Event()

    @cached(make_cache())
    async def slow(x: int) -> int:
        await gate.wait()
        return x

    tasks = [asyncio.create_task(slow(1)) for _ in range(8)]
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    assert slow.cache_info() == CacheInfo(hits=7, misses=1, maxsize=10_000, currsize=1)


def test_no_count_is_lost_when_threads_call_at_once(make_cache: MakeCache) -> None:
    @cached(make_cache())
    def identity(x: int) -> int:
        return x

    def hammer() -> None:
        for _ in range(2_000):
            identity(1)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    hits, misses, _, _ = identity.cache_info()
    assert (hits, misses) == (7_999, 1)


def test_a_bound_method_reports_the_counts_of_its_function(make_cache: MakeCache) -> None:
    class Planner:
        @cached(make_cache())
        def plan(self, x: int) -> int:
            return x

    first, second = Planner(), Planner()
    first.plan(1)
    second.plan(1)
    first.plan(1)
    assert first.plan.cache_info() == Planner.plan.cache_info()
    assert Planner.plan.cache_info() == CacheInfo(hits=1, misses=2, maxsize=10_000, currsize=2)


# --- cache_clear ------------------------------------------------------------------------------


def test_cache_clear_removes_only_the_functions_own_entries_from_a_shared_cache(
    make_cache: MakeCache,
) -> None:
    cache = make_cache()
    double, triple = double_and_triple(cache)

    double(1)
    double(2)
    triple(1)
    cache["someone else's"] = 0
    double.cache_clear()
    assert set(cache.keys()) == {triple.cache_key(1), "someone else's"}
    assert double.cache_info().currsize == 0


def test_after_cache_clear_the_function_runs_again(make_cache: MakeCache) -> None:
    calls = 0

    @cached(make_cache())
    def load(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    load(1)
    load.cache_clear()
    load(1)
    assert calls == 2


def test_cache_clear_resets_hits_and_misses(make_cache: MakeCache) -> None:
    @cached(make_cache())
    def identity(x: int) -> int:
        return x

    identity(1)
    identity(1)
    identity.cache_clear()
    assert identity.cache_info() == CacheInfo(hits=0, misses=0, maxsize=10_000, currsize=0)
    identity(1)
    assert identity.cache_info() == CacheInfo(hits=0, misses=1, maxsize=10_000, currsize=1)


async def test_cache_clear_works_for_async_functions(make_cache: MakeCache) -> None:
    @cached(make_cache())
    async def identity(x: int) -> int:
        return x

    await identity(1)
    identity.cache_clear()
    assert identity.cache_info() == CacheInfo(hits=0, misses=0, maxsize=10_000, currsize=0)


def test_cache_clear_on_a_cache_of_its_own_empties_it() -> None:
    @cached(key=lambda x: x)  # its own cache: every entry is its own, whatever the key
    def identity(x: int) -> int:
        return x

    identity(1)
    identity(2)
    assert identity.cache_info().currsize == 2
    identity.cache_clear()
    assert len(identity.cache) == 0


def test_cache_clear_on_a_method_forgets_the_results_of_every_instance(
    make_cache: MakeCache,
) -> None:
    cache = make_cache()

    class Planner:
        @cached(cache)
        def plan(self, x: int) -> int:
            return x

    first, second = Planner(), Planner()
    first.plan(1)
    second.plan(1)
    first.plan.cache_clear()  # as functools.lru_cache: one cache for the function
    assert len(cache) == 0


def test_with_a_custom_key_in_a_shared_cache_currsize_is_unknown(make_cache: MakeCache) -> None:
    @cached(make_cache(), key=lambda x: x)
    def identity(x: int) -> int:
        return x

    identity(1)
    assert identity.cache_info() == CacheInfo(hits=0, misses=1, maxsize=10_000, currsize=None)


def test_with_a_custom_key_in_a_shared_cache_cache_clear_refuses_and_changes_nothing(
    make_cache: MakeCache,
) -> None:
    cache = make_cache()

    @cached(cache, key=lambda x: x)
    def identity(x: int) -> int:
        return x

    identity(1)
    with pytest.raises(TypeError, match=r"cannot tell the entries of .*identity from others"):
        identity.cache_clear()
    assert cache.keys() == [1]
    assert identity.cache_info().misses == 1
