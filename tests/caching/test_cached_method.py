"""@cached_method: a cache per instance, taken from the instance (as cachetools' cachedmethod)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import pytest
from tests.support.caches import MakeCache, WaitUntil

from pgcache import Cache
from pgcache.caching.cached import (
    AsyncCachedFunction,
    CachedFunction,
    CacheInfo,
    cached_method,
)


class Planner:
    """Plans per database: each planner has its own cache, shared by its two cached methods."""

    def __init__(self, database: str, cache: Cache[Any, Any]) -> None:
        self.database = database
        self.plans = cache
        self.calls: list[tuple[str, int]] = []

    @cached_method(lambda self: self.plans)
    def explain(self, query_hash: int) -> str:
        self.calls.append(("explain", query_hash))
        return f"{self.database}: plan of {query_hash}"

    @cached_method(lambda self: self.plans)
    def cost(self, query_hash: int) -> float:
        self.calls.append(("cost", query_hash))
        return float(query_hash)

    @cached_method(lambda self: self.plans)
    async def explain_async(self, query_hash: int) -> str:
        self.calls.append(("explain_async", query_hash))
        await asyncio.sleep(0)
        return f"{self.database}: plan of {query_hash}"


def test_each_instance_stores_its_results_in_its_own_cache(make_cache: MakeCache) -> None:
    first, second = Planner("a", make_cache()), Planner("b", make_cache())
    assert [first.explain(1), first.explain(1), second.explain(1)] == [
        "a: plan of 1",
        "a: plan of 1",
        "b: plan of 1",
    ]
    assert (first.calls, second.calls) == ([("explain", 1)], [("explain", 1)])
    assert (len(first.plans), len(second.plans)) == (1, 1)


async def test_each_instance_stores_its_async_results_in_its_own_cache(
    make_cache: MakeCache,
) -> None:
    first, second = Planner("a", make_cache()), Planner("b", make_cache())
    assert [await first.explain_async(1), await first.explain_async(1)] == ["a: plan of 1"] * 2
    assert await second.explain_async(1) == "b: plan of 1"
    assert (len(first.calls), len(second.calls)) == (1, 1)


def test_the_instance_is_not_part_of_the_key(make_cache: MakeCache) -> None:
    first, second = Planner("a", make_cache()), Planner("b", make_cache())
    assert first.explain.cache_key(1) == second.explain.cache_key(1)


def test_an_unhashable_instance_can_have_cached_methods(make_cache: MakeCache) -> None:
    @dataclass  # eq=True without frozen=True: instances are unhashable
    class Settings:
        cache: Cache[Any, Any] = field(default_factory=make_cache)

        @cached_method(lambda self: self.cache)
        def double(self, x: int) -> int:
            return 2 * x

    settings = Settings()
    assert (settings.double(2), settings.double(2)) == (4, 4)
    assert settings.double.cache_info().hits == 1


def test_two_methods_sharing_the_instance_cache_do_not_share_results(
    make_cache: MakeCache,
) -> None:
    planner = Planner("a", make_cache())
    assert (planner.explain(1), planner.cost(1)) == ("a: plan of 1", 1.0)
    assert len(planner.plans) == 2


def test_the_decorator_keeps_no_reference_to_an_instance(make_cache: MakeCache) -> None:
    planner = Planner("a", make_cache())
    planner.explain(1)
    planner.cost(1)
    alive = weakref.ref(planner)
    del planner
    gc.collect()
    assert alive() is None


async def test_the_async_decorator_keeps_no_reference_to_an_instance(
    make_cache: MakeCache,
) -> None:
    planner = Planner("a", make_cache())
    await planner.explain_async(1)
    alive = weakref.ref(planner)
    del planner
    gc.collect()
    assert alive() is None


def test_an_instance_is_freed_without_the_cycle_collector(make_cache: MakeCache) -> None:
    planner = Planner("a", make_cache())
    planner.explain(1)
    alive = weakref.ref(planner)
    gc.disable()
    try:
        del planner
        assert alive() is None
    finally:
        gc.enable()


def test_bound_to_an_instance_it_is_a_cached_function_on_the_instance_cache(
    make_cache: MakeCache,
) -> None:
    planner = Planner("a", make_cache())
    assert isinstance(planner.explain, CachedFunction)
    assert isinstance(planner.explain_async, AsyncCachedFunction)
    assert planner.explain.cache is planner.plans


def test_the_cache_is_taken_from_the_instance_at_each_access(make_cache: MakeCache) -> None:
    planner = Planner("a", make_cache())
    planner.explain(1)
    planner.plans = make_cache()
    planner.explain(1)
    assert planner.calls == [("explain", 1), ("explain", 1)]


def test_calling_through_the_class_uses_the_instance_cache(make_cache: MakeCache) -> None:
    planner = Planner("a", make_cache())
    assert Planner.explain(planner, 1) == planner.explain(1)
    assert planner.calls == [("explain", 1)]


def test_cache_info_counts_the_calls_on_one_instance_cache(make_cache: MakeCache) -> None:
    first, second = Planner("a", make_cache(max_size=5)), Planner("b", make_cache())
    first.explain(1)
    first.explain(1)
    first.cost(1)
    second.explain(2)
    assert first.explain.cache_info() == CacheInfo(hits=1, misses=1, maxsize=5, currsize=1)
    assert second.explain.cache_info() == CacheInfo(hits=0, misses=1, maxsize=10_000, currsize=1)


def test_a_new_instance_starts_with_no_hits_and_no_misses(make_cache: MakeCache) -> None:
    for _ in range(3):
        planner = Planner("a", make_cache())
        planner.explain(1)
        planner.explain(1)
    assert Planner("b", make_cache()).explain.cache_info() == CacheInfo(0, 0, 10_000, 0)


def test_cache_clear_removes_the_method_results_from_this_instance_only(
    make_cache: MakeCache,
) -> None:
    first, second = Planner("a", make_cache()), Planner("b", make_cache())
    first.explain(1)
    first.cost(1)
    second.explain(1)
    first.explain.cache_clear()
    assert first.plans.keys() == [first.cost.cache_key(1)]
    assert len(second.plans) == 1
    assert first.explain.cache_info() == CacheInfo(hits=0, misses=0, maxsize=10_000, currsize=0)


def test_invalidate_forgets_one_call_on_this_instance(make_cache: MakeCache) -> None:
    first, second = Planner("a", make_cache()), Planner("b", make_cache())
    first.explain(1)
    second.explain(1)
    assert first.explain.invalidate(1) is True
    assert (len(first.plans), len(second.plans)) == (0, 1)


def test_threads_calling_one_instance_share_one_call(
    make_cache: MakeCache, wait_until: WaitUntil
) -> None:
    cache = make_cache()
    calls = 0

    class Slow:
        @cached_method(lambda self: cache)
        def load(self, x: int) -> int:
            nonlocal calls
            calls += 1
            assert wait_until(lambda: cache.metrics().misses == 6)
            return x

    slow = Slow()
    threads = [threading.Thread(target=slow.load, args=(1,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert calls == 1


async def test_tasks_calling_one_instance_share_one_call(make_cache: MakeCache) -> None:
    planner = Planner("a", make_cache())
    results = await asyncio.gather(*(planner.explain_async(1) for _ in range(10)))
    assert results == ["a: plan of 1"] * 10
    assert planner.calls == [("explain_async", 1)]


async def test_concurrent_async_calls_on_two_instances_each_get_their_own_result(
    make_cache: MakeCache,
) -> None:
    first, second = Planner("a", make_cache()), Planner("b", make_cache())
    results = await asyncio.gather(first.explain_async(1), second.explain_async(1))
    assert list(results) == ["a: plan of 1", "b: plan of 1"]
    assert (len(first.plans), len(second.plans)) == (1, 1)


def test_a_custom_key_receives_the_instance(make_cache: MakeCache) -> None:
    cache = make_cache()

    class Shared:
        def __init__(self, name: str) -> None:
            self.name = name

        @cached_method(lambda self: cache, key=lambda self, x: (self.name, x))
        def load(self, x: int) -> str:
            return f"{self.name}:{x}"

    Shared("a").load(1)
    assert cache.keys() == [("a", 1)]


def test_the_wrapped_method_and_signatures_are_those_of_the_method(
    make_cache: MakeCache,
) -> None:
    planner = Planner("a", make_cache())
    assert Planner.explain.__wrapped__ is Planner.__dict__["explain"].__wrapped__
    assert Planner.explain.__name__ == "explain"
    assert list(inspect.signature(planner.explain).parameters) == ["query_hash"]
    assert list(inspect.signature(Planner.explain).parameters) == ["self", "query_hash"]


def test_a_cached_async_method_is_recognised_as_a_coroutine_function(
    make_cache: MakeCache,
) -> None:
    planner = Planner("a", make_cache())
    assert inspect.iscoroutinefunction(Planner.explain_async)
    assert inspect.iscoroutinefunction(planner.explain_async)
    assert not inspect.iscoroutinefunction(planner.explain)


def test_a_getter_that_returns_no_cache_raises_type_error_naming_it() -> None:
    class Broken:
        @cached_method(lambda self: {})  # type: ignore[arg-type, return-value]
        def load(self, x: int) -> int:
            return x

    with pytest.raises(TypeError, match=r"the cache of .*Broken.load for .* must be a pgcache"):
        Broken().load(1)


def test_a_cache_argument_that_is_not_callable_raises_type_error(make_cache: MakeCache) -> None:
    with pytest.raises(TypeError, match=r"cache must be a callable taking the instance"):
        cached_method(make_cache())  # type: ignore[arg-type]
