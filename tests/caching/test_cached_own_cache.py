"""@cached without a cache argument: the function gets a cache of its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.support.caches import MakeCache

from pgcache import Cache
from pgcache.caching.cached import CacheInfo, cached


def test_cached_without_parentheses_gives_the_function_a_cache_of_its_own() -> None:
    calls = 0

    @cached
    def square(x: int) -> int:
        nonlocal calls
        calls += 1
        return x * x

    assert (square(3), square(3)) == (9, 9)
    assert calls == 1
    assert isinstance(square.cache, Cache)
    assert (square.cache.ttl, square.cache.max_size) == (None, 10_000)


async def test_an_async_function_can_be_cached_without_parentheses() -> None:
    @cached
    async def square(x: int) -> int:
        return x * x

    assert [await square(3), await square(3)] == [9, 9]
    assert square.cache_info() == CacheInfo(hits=1, misses=1, maxsize=10_000, currsize=1)


def test_cached_with_empty_parentheses_gives_a_cache_of_its_own() -> None:
    @cached()
    def square(x: int) -> int:
        return x * x

    square(2)
    assert square.cache.keys() == [square.cache_key(2)]


def test_ttl_and_max_size_configure_the_cache_of_its_own() -> None:
    @cached(ttl=timedelta(minutes=5), max_size=100)
    def square(x: int) -> int:
        return x * x

    assert (square.cache.ttl, square.cache.max_size) == (300.0, 100)


def test_max_size_none_means_unbounded() -> None:
    @cached(max_size=None)
    def identity(x: int) -> int:
        return x

    for x in range(10_001):
        identity(x)
    assert identity.cache.max_size is None
    assert identity.cache_info().currsize == 10_001


def test_a_bounded_cache_of_its_own_evicts_beyond_max_size() -> None:
    @cached(max_size=2)
    def identity(x: int) -> int:
        return x

    for x in range(3):
        identity(x)
    assert len(identity.cache) == 2


def test_the_cache_of_its_own_is_named_after_the_function() -> None:
    @cached
    def square(x: int) -> int:
        return x * x

    assert square.cache.name == f"{__name__}.{square.__qualname__}"


def test_each_function_decorated_by_one_decorator_gets_its_own_cache() -> None:
    decorator = cached(ttl=60)

    @decorator
    def double(x: int) -> int:
        return 2 * x

    @decorator
    def triple(x: int) -> int:
        return 3 * x

    assert double.cache is not triple.cache
    assert triple.cache.ttl == 60


def test_the_existing_forms_with_a_cache_still_work(make_cache: MakeCache) -> None:
    cache = make_cache()

    @cached(cache=cache, ttl=5)
    def square(x: int) -> int:
        return x * x

    square(2)
    assert square.cache is cache
    assert len(cache) == 1


def test_max_size_together_with_a_cache_is_refused(make_cache: MakeCache) -> None:
    with pytest.raises(TypeError, match=r"max_size=5 sizes a cache of the function's own"):
        cached(make_cache(), max_size=5)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("max_size", "error", "message"),
    [
        (0, ValueError, r"max_size must be between 1 and \d+, or None \(unbounded\), got 0"),
        (2.5, TypeError, r"max_size must be an int or None \(unbounded\), not float"),
    ],
)
def test_a_bad_max_size_raises_one_error_naming_it(
    max_size: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        cached(max_size=max_size)  # type: ignore[call-overload]
