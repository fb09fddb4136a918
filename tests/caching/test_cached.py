"""pgcache.cached: memoizing sync and async functions and methods in a pgcache.Cache."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from tests.support.caches import MakeCache, double_and_triple

from pgcache import Cache, CacheManager, ManualClock, cached, make_key

# --- hits and misses --------------------------------------------------------------------------


def test_a_hit_returns_the_stored_value_without_calling_the_function(
    make_cache: MakeCache,
) -> None:
    cache = make_cache()
    calls: list[int] = []

    @cached(cache)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert [square(3), square(3), square(4), square(3)] == [9, 9, 16, 9]
    assert calls == [3, 4]
    metrics = cache.metrics()
    assert (metrics.hits, metrics.misses, metrics.size) == (2, 2, 2)


async def test_an_async_hit_returns_the_stored_value_without_calling_the_function(
    make_cache: MakeCache,
) -> None:
    cache = make_cache()
    calls: list[int] = []

    @cached(cache)
    async def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert [await square(3), await square(3), await square(4)] == [9, 9, 16]
    assert calls == [3, 4]
    assert (cache.metrics().hits, cache.metrics().misses) == (1, 2)


def test_a_none_result_is_cached_like_any_other(make_cache: MakeCache) -> None:
    calls = 0

    @cached(make_cache())
    def nothing() -> None:
        nonlocal calls
        calls += 1

    nothing()
    nothing()
    assert calls == 1


async def test_an_async_none_result_is_cached_like_any_other(make_cache: MakeCache) -> None:
    calls = 0

    @cached(make_cache())
    async def nothing() -> None:
        nonlocal calls
        calls += 1

    await nothing()
    await nothing()
    assert calls == 1


def test_a_recursive_function_can_use_its_own_cache_for_other_keys(make_cache: MakeCache) -> None:
    cache = make_cache()

    @cached(cache)
    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(90) == 2_880_067_194_370_816_120
    assert cache.metrics().misses == 91


# --- single-flight ----------------------------------------------------------------------------


def test_fifty_threads_missing_one_key_call_the_function_once(make_cache: MakeCache) -> None:
    calls = 0
    start = threading.Barrier(50, timeout=30)

    @cached(make_cache())
    def extract(query_hash: int) -> str:
        nonlocal calls
        calls += 1
        time.sleep(0.05)  # widens the window in which the other threads miss
        return f"features of {query_hash}"

    results: list[str] = []

    def worker() -> None:
        start.wait()
        results.append(extract(-7))

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert calls == 1
    assert results == ["features of -7"] * 50


async def test_fifty_tasks_missing_one_key_call_the_function_once(make_cache: MakeCache) -> None:
    cache = make_cache()
    calls = 0
    gate = asyncio.Event()

    @cached(cache)
    async def extract(query_hash: int) -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return f"features of {query_hash}"

    tasks = [asyncio.create_task(extract(-7)) for _ in range(50)]
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == ["features of -7"] * 50
    assert calls == 1
    assert cache.metrics().misses == 50  # each task looked and missed; one loaded


async def test_concurrent_async_callers_all_get_the_one_error(make_cache: MakeCache) -> None:
    gate = asyncio.Event()
    calls = 0

    @cached(make_cache())
    async def failing(x: int) -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise ValueError(f"no features for {x}")

    tasks = [asyncio.create_task(failing(1)) for _ in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert calls == 1
    assert all(isinstance(o, ValueError) and str(o) == "no features for 1" for o in outcomes)


# --- errors are not cached --------------------------------------------------------------------


def test_an_error_is_not_cached(make_cache: MakeCache) -> None:
    cache = make_cache()
    attempts = 0

    @cached(cache)
    def flaky(x: int) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("server restarting")
        return x

    with pytest.raises(ConnectionError, match="server restarting"):
        flaky(5)
    assert len(cache) == 0
    assert flaky(5) == 5
    assert attempts == 2


async def test_an_async_error_is_not_cached(make_cache: MakeCache) -> None:
    cache = make_cache()
    attempts = 0

    @cached(cache)
    async def flaky(x: int) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("server restarting")
        return x

    with pytest.raises(ConnectionError, match="server restarting"):
        await flaky(5)
    assert len(cache) == 0
    assert await flaky(5) == 5
    assert attempts == 2


# --- the default key --------------------------------------------------------------------------


def test_list_dict_and_set_arguments_are_accepted_and_cached(make_cache: MakeCache) -> None:
    calls = 0

    @cached(make_cache())
    def total(values: list[int], weights: dict[str, float], tags: set[str]) -> float:
        nonlocal calls
        calls += 1
        return sum(values) * sum(weights.values()) + len(tags)

    assert total([1, 2], {"a": 1.0, "b": 2.0}, {"x", "y"}) == 11.0
    assert total([1, 2], {"b": 2.0, "a": 1.0}, {"y", "x"}) == 11.0
    assert calls == 1


def test_dict_order_does_not_change_the_key() -> None:
    assert make_key(({"a": 1, "b": [2]},), {}) == make_key(({"b": [2], "a": 1},), {})


def test_keyword_order_does_not_change_the_key() -> None:
    assert make_key((), {"a": 1, "b": 2}) == make_key((), {"b": 2, "a": 1})


def test_a_list_and_a_tuple_with_the_same_items_are_different_keys() -> None:
    assert make_key(([1, 2],), {}) != make_key(((1, 2),), {})


def test_nested_unhashable_arguments_are_converted() -> None:
    key = make_key(({"rows": [{"id": 1}, {"id": 2}]}, ([3], {4})), {"opts": {"k": [5]}})
    assert hash(key) == hash(
        make_key(({"rows": [{"id": 1}, {"id": 2}]}, ([3], {4})), {"opts": {"k": [5]}})
    )


def test_a_positional_and_a_keyword_argument_are_different_keys() -> None:
    # As functools.lru_cache: binding to the signature would cost microseconds per call.
    assert make_key((1,), {}) != make_key((), {"x": 1})


def test_an_argument_that_cannot_be_made_hashable_raises_type_error_naming_it(
    make_cache: MakeCache,
) -> None:
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

    calls = 0

    @cached(make_cache())
    def use(a: int, b: object) -> None:
        nonlocal calls
        calls += 1

    with pytest.raises(
        TypeError, match=r"positional argument 1 is .* of unhashable type Unhashable"
    ):
        use(1, Unhashable())
    with pytest.raises(TypeError, match=r"keyword argument 'b' is .* unhashable type Unhashable"):
        use(1, b=Unhashable())
    assert calls == 0


def test_untyped_keys_treat_equal_numbers_as_one_argument(make_cache: MakeCache) -> None:
    calls: list[object] = []

    @cached(make_cache())
    def identity(x: float) -> float:
        calls.append(x)
        return x

    identity(1)
    identity(1.0)
    assert calls == [1]


def test_typed_keys_keep_int_and_float_apart(make_cache: MakeCache) -> None:
    calls: list[object] = []

    @cached(make_cache(), typed=True)
    def identity(x: float) -> float:
        calls.append(x)
        return x

    assert identity(1) == 1
    assert type(identity(1.0)) is float
    identity(1)
    assert calls == [1, 1.0]


def test_typed_keys_keep_types_apart_inside_containers() -> None:
    assert make_key(([1],), {}, typed=True) != make_key(([1.0],), {}, typed=True)
    assert make_key(([1],), {}) == make_key(([1.0],), {})


def test_two_functions_sharing_a_cache_do_not_share_results(make_cache: MakeCache) -> None:
    cache = make_cache()
    double, triple = double_and_triple(cache)

    assert (double(5), triple(5)) == (10, 15)
    assert len(cache) == 2


# --- custom key, ttl, invalidation ------------------------------------------------------------


def test_a_custom_key_replaces_the_default_one(make_cache: MakeCache) -> None:
    cache = make_cache()

    @cached(cache, key=lambda query_hash, verbose=False: query_hash)
    def explain(query_hash: int, verbose: bool = False) -> str:
        return f"plan {query_hash}"

    explain(42, verbose=True)
    assert explain.cache_key(42) == 42
    assert cache.keys() == [42]
    assert explain(42) == "plan 42"
    assert cache.metrics().hits == 1


def test_a_custom_key_can_follow_the_manager_scheme_so_invalidate_query_finds_it() -> None:
    with CacheManager() as manager:

        @cached(manager.cache("explain_plans"), key=lambda query_hash: query_hash)
        def explain(query_hash: int) -> str:
            return f"plan {query_hash}"

        explain(-99)
        assert manager.get_explain_plan(-99) == "plan -99"
        assert manager.invalidate_query(-99) == 1


def test_ttl_overrides_the_cache_ttl_for_stored_results(
    make_cache: MakeCache, clock: ManualClock
) -> None:
    cache = make_cache(ttl=3600)
    calls = 0

    @cached(cache, ttl=timedelta(seconds=10))
    def load(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    load(1)
    clock.advance(9.9)
    load(1)
    assert calls == 1
    clock.advance(0.1)
    load(1)
    assert calls == 2


async def test_ttl_applies_to_async_results(make_cache: MakeCache, clock: ManualClock) -> None:
    calls = 0

    @cached(make_cache(), ttl=10)
    async def load(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    await load(1)
    clock.advance(10)
    await load(1)
    assert calls == 2


def test_without_ttl_the_cache_ttl_applies(make_cache: MakeCache, clock: ManualClock) -> None:
    cache = make_cache(ttl=5)

    @cached(cache)
    def load(x: int) -> int:
        return x

    load(1)
    clock.advance(5)
    assert len(cache.keys()) == 0


def test_invalidate_forgets_one_call_and_says_whether_it_was_stored(
    make_cache: MakeCache,
) -> None:
    calls = 0

    @cached(make_cache())
    def load(x: int, *, scale: int = 1) -> int:
        nonlocal calls
        calls += 1
        return x * scale

    load(2, scale=3)
    load(4)
    assert load.invalidate(2, scale=3) is True
    assert load.invalidate(2, scale=3) is False
    load(2, scale=3)
    load(4)
    assert calls == 3


def test_cache_key_is_the_key_the_result_is_stored_under(make_cache: MakeCache) -> None:
    cache = make_cache()

    @cached(cache)
    def load(rows: list[int]) -> int:
        return len(rows)

    load([1, 2])
    assert cache.get(load.cache_key([1, 2])) == 2


# --- methods ----------------------------------------------------------------------------------


class _Extractor:
    def __init__(self, name: str, cache: Cache[Any, Any]) -> None:
        self.name = name
        self.calls = 0
        self.cache = cache

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Extractor) and other.name == self.name


def test_a_cached_method_keeps_results_per_instance(make_cache: MakeCache) -> None:
    cache = make_cache()

    class Extractor(_Extractor):
        @cached(cache)
        def extract(self, query_hash: int) -> str:
            self.calls += 1
            return f"{self.name}:{query_hash}"

    a, b = Extractor("a", cache), Extractor("b", cache)
    assert [a.extract(1), a.extract(1), b.extract(1)] == ["a:1", "a:1", "b:1"]
    assert (a.calls, b.calls) == (1, 1)


def test_invalidate_on_an_instance_forgets_only_that_instance(make_cache: MakeCache) -> None:
    cache = make_cache()

    class Extractor(_Extractor):
        @cached(cache)
        def extract(self, query_hash: int) -> str:
            self.calls += 1
            return f"{self.name}:{query_hash}"

    a, b = Extractor("a", cache), Extractor("b", cache)
    a.extract(1)
    b.extract(1)
    assert a.extract.invalidate(1) is True
    assert a.extract.cache is cache
    a.extract(1)
    b.extract(1)
    assert (a.calls, b.calls) == (2, 1)
    assert Extractor.extract.cache_key(a, 1) == a.extract.cache_key(1)


async def test_a_cached_async_method_keeps_results_per_instance(make_cache: MakeCache) -> None:
    cache = make_cache()

    class Extractor(_Extractor):
        @cached(cache)
        async def extract(self, query_hash: int) -> str:
            self.calls += 1
            return f"{self.name}:{query_hash}"

    a, b = Extractor("a", cache), Extractor("b", cache)
    assert [await a.extract(1), await a.extract(1), await b.extract(1)] == ["a:1", "a:1", "b:1"]
    assert (a.calls, b.calls) == (1, 1)


def test_a_custom_key_on_a_method_receives_the_instance(make_cache: MakeCache) -> None:
    cache = make_cache()

    class Extractor(_Extractor):
        @cached(cache, key=lambda self, query_hash: (self.name, query_hash))
        def extract(self, query_hash: int) -> str:
            return f"{self.name}:{query_hash}"

    Extractor("a", cache).extract(7)
    assert cache.keys() == [("a", 7)]


def test_static_and_class_methods_work_above_cached(make_cache: MakeCache) -> None:
    cache = make_cache()

    class Plans:
        @staticmethod
        @cached(cache)
        def static(x: int) -> int:
            return x + 1

        @classmethod
        @cached(cache)
        def klass(cls, x: int) -> str:
            return f"{cls.__name__}:{x}"

    assert (Plans.static(1), Plans().static(1)) == (2, 2)
    assert (Plans.klass(1), Plans().klass(1)) == ("Plans:1", "Plans:1")
    assert cache.metrics().hits == 2


# --- the wrapper ------------------------------------------------------------------------------


def test_the_wrapper_keeps_the_function_metadata(make_cache: MakeCache) -> None:
    def load_features(query_hash: int) -> int:
        """Load the features of one query."""
        return query_hash

    wrapper = cached(make_cache())(load_features)
    assert wrapper.__name__ == "load_features"
    assert wrapper.__doc__ == "Load the features of one query."
    assert wrapper.__wrapped__ is load_features
    assert inspect.signature(wrapper) == inspect.signature(load_features)


def test_a_cached_async_function_is_recognised_as_a_coroutine_function(
    make_cache: MakeCache,
) -> None:
    async def load(x: int) -> int:
        return x

    assert inspect.iscoroutinefunction(cached(make_cache())(load))


def test_a_cached_sync_function_is_not_a_coroutine_function(make_cache: MakeCache) -> None:
    def load(x: int) -> int:
        return x

    assert not inspect.iscoroutinefunction(cached(make_cache())(load))


def test_a_cached_async_method_is_recognised_as_a_coroutine_function(
    make_cache: MakeCache,
) -> None:
    class Loader:
        @cached(make_cache())
        async def load(self, x: int) -> int:
            return x

    assert inspect.iscoroutinefunction(Loader.load)
    assert inspect.iscoroutinefunction(Loader().load)


def test_a_bound_method_wraps_the_method_bound_to_its_instance(make_cache: MakeCache) -> None:
    class Loader:
        @cached(make_cache())
        def load(self, x: int) -> int:
            return x

    loader = Loader()
    assert loader.load.__wrapped__ == Loader.__dict__["load"].__wrapped__.__get__(loader)
    assert list(inspect.signature(loader.load).parameters) == ["x"]


def test_a_cached_function_can_be_cached_again_in_another_cache(make_cache: MakeCache) -> None:
    near, far = make_cache(), make_cache()
    calls = 0

    def load(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    inner = cached(far)(load)
    outer = cached(near)(inner)
    assert (outer(1), outer(1)) == (1, 1)
    assert (outer.cache, outer.__wrapped__) == (near, inner)
    assert (len(near), len(far), calls) == (1, 1, 1)


def test_the_wrapper_exposes_its_cache(make_cache: MakeCache) -> None:
    cache = make_cache()
    assert cached(cache)(functools.partial(int, "1")).cache is cache


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"cache": {}},
            TypeError,
            r"^cache must be a pgcache.Cache or None \(a cache of its own\), got \{\}",
        ),
        ({"key": "query_hash"}, TypeError, r"^key must be a callable .*got 'query_hash'"),
        ({"ttl": 0}, ValueError, r"^ttl must be a positive, finite number of seconds, got 0"),
        ({"ttl": "10s"}, TypeError, r"^ttl must be a number of seconds or a datetime.timedelta"),
        ({"typed": 1}, TypeError, r"^typed must be a bool, got 1"),
    ],
)
def test_a_bad_argument_to_cached_raises_one_error_naming_it(
    make_cache: MakeCache, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    kwargs.setdefault("cache", make_cache())
    cache = kwargs.pop("cache")
    with pytest.raises(error, match=message):
        cached(cache, **kwargs)


def test_decorating_something_not_callable_raises_type_error(make_cache: MakeCache) -> None:
    with pytest.raises(TypeError, match=r"cached\(\) decorates a function, got 42"):
        cached(make_cache())(42)  # type: ignore[call-overload]
