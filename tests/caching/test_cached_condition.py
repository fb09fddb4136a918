"""condition=: results for which condition(result) is false are returned but not stored."""

from __future__ import annotations

import asyncio
import threading

import pytest
from tests.support.caches import MakeCache, WaitUntil

from pgcache.caching.cached import CacheInfo, cached, cached_method


def _found(result: str | None) -> bool:
    return result is not None


def test_a_result_the_condition_rejects_is_returned_and_not_stored(make_cache: MakeCache) -> None:
    cache = make_cache()
    calls = 0

    @cached(cache, condition=_found)
    def lookup(query_hash: int) -> str | None:
        nonlocal calls
        calls += 1
        return None

    assert (lookup(1), lookup(1)) == (None, None)
    assert calls == 2
    assert len(cache) == 0


def test_a_result_the_condition_accepts_is_stored(make_cache: MakeCache) -> None:
    calls = 0

    @cached(make_cache(), condition=_found)
    def lookup(query_hash: int) -> str | None:
        nonlocal calls
        calls += 1
        return f"plan {query_hash}"

    assert (lookup(1), lookup(1)) == ("plan 1", "plan 1")
    assert calls == 1


async def test_the_condition_sees_the_awaited_result_of_an_async_function(
    make_cache: MakeCache,
) -> None:
    cache = make_cache()
    seen: list[object] = []

    def store_if_found(result: str | None) -> bool:
        seen.append(result)
        return result is not None

    @cached(cache, condition=store_if_found)
    async def lookup(query_hash: int) -> str | None:
        return None if query_hash < 0 else f"plan {query_hash}"

    assert (await lookup(-1), await lookup(2)) == (None, "plan 2")
    assert seen == [None, "plan 2"]
    assert cache.keys() == [lookup.cache_key(2)]


def test_threads_waiting_for_a_rejected_result_all_receive_it(
    make_cache: MakeCache, wait_until: WaitUntil
) -> None:
    cache = make_cache()
    calls = 0

    @cached(cache, condition=_found)
    def lookup(query_hash: int) -> str | None:
        nonlocal calls
        calls += 1
        # Returns once every other thread has missed too, so each of them waits for this call.
        assert wait_until(lambda: cache.metrics().misses == 6)
        return None

    results: list[str | None] = []
    threads = [threading.Thread(target=lambda: results.append(lookup(1))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert calls == 1
    assert results == [None] * 6
    assert len(cache) == 0


async def test_tasks_waiting_for_a_rejected_result_all_receive_it(make_cache: MakeCache) -> None:
    cache = make_cache()
    gate = asyncio.Event()
    calls = 0

    @cached(cache, condition=_found)
    async def lookup(query_hash: int) -> str | None:
        nonlocal calls
        calls += 1
        await gate.wait()
        return None

    tasks = [asyncio.create_task(lookup(1)) for _ in range(6)]
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [None] * 6
    assert calls == 1
    assert len(cache) == 0


def test_a_call_whose_result_was_rejected_counts_as_a_miss(make_cache: MakeCache) -> None:
    @cached(make_cache(), condition=_found)
    def lookup(query_hash: int) -> str | None:
        return None

    lookup(1)
    lookup(1)
    assert lookup.cache_info() == CacheInfo(hits=0, misses=2, maxsize=10_000, currsize=0)


def test_an_error_raised_by_the_condition_propagates_and_stores_nothing(
    make_cache: MakeCache,
) -> None:
    cache = make_cache()

    def broken(result: object) -> bool:
        raise ValueError("cannot judge")

    @cached(cache, condition=broken)
    def lookup(query_hash: int) -> int:
        return query_hash

    with pytest.raises(ValueError, match="cannot judge"):
        lookup(1)
    assert len(cache) == 0


def test_the_condition_applies_to_a_cache_of_its_own() -> None:
    @cached(condition=_found)
    def lookup(query_hash: int) -> str | None:
        return None

    lookup(1)
    assert len(lookup.cache) == 0


def test_the_condition_applies_to_per_instance_methods(make_cache: MakeCache) -> None:
    class Lookup:
        def __init__(self) -> None:
            self.cache = make_cache()

        @cached_method(lambda self: self.cache, condition=_found)
        def find(self, query_hash: int) -> str | None:
            return None if query_hash < 0 else "found"

    lookup = Lookup()
    lookup.find(-1)
    lookup.find(1)
    assert lookup.cache.keys() == [lookup.find.cache_key(1)]


def test_a_condition_that_is_not_callable_raises_type_error_naming_it(
    make_cache: MakeCache,
) -> None:
    # cachetools' condition= is a threading.Condition; here it judges results.
    with pytest.raises(TypeError, match=r"^condition must be a callable taking a result"):
        cached(make_cache(), condition=threading.Condition())  # type: ignore[call-overload]
