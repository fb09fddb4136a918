"""``Cache(max_size=None)``: unbounded, as ``functools.lru_cache(maxsize=None)``.

Nothing is ever evicted; entries still expire. The index has 32-bit slots, so an unbounded
cache holds at most 4,294,966,972 entries and a new key beyond that raises
``OverflowError`` (tested in the Rust core: the Python side cannot fill four billion slots).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pgcache import Cache, ManualClock
from pgcache._validate import MAX_CAPACITY


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def unbounded(clock: ManualClock) -> Iterator[Cache[Any, Any]]:
    c: Cache[Any, Any] = Cache(max_size=None, clock=clock, cleanup_interval=3600.0)
    yield c
    c.close()


def test_max_size_none_is_reported_as_none(unbounded: Cache[Any, Any]) -> None:
    assert unbounded.max_size is None
    assert unbounded.metrics().max_size is None
    assert unbounded.metrics().to_dict()["max_size"] is None
    assert "max_size=None" in repr(unbounded)
    assert "max_size=None" in repr(unbounded.metrics())


def test_the_default_stays_ten_thousand() -> None:
    with Cache[int, int]() as c:
        assert c.max_size == 10_000
        assert c.metrics().max_size == 10_000


def test_max_size_none_given_positionally_is_unbounded() -> None:
    with Cache[int, int](None, None) as c:
        assert c.max_size is None


def test_an_unbounded_cache_never_evicts(unbounded: Cache[Any, Any]) -> None:
    unbounded.set_many((i, i) for i in range(25_000))
    for i in range(25_000, 30_000):
        unbounded[i] = i
    metrics = unbounded.metrics()
    assert (len(unbounded), metrics.size, metrics.evictions) == (30_000, 30_000, 0)
    assert unbounded.get(0) == 0
    assert unbounded.get(29_999) == 29_999


def test_an_unbounded_cache_keeps_lru_order(unbounded: Cache[Any, Any]) -> None:
    for key in "abc":
        unbounded[key] = key
    unbounded.get("a")
    assert unbounded.keys() == ["a", "c", "b"]


def test_entries_of_an_unbounded_cache_still_expire(clock: ManualClock) -> None:
    with Cache[str, int](ttl=10, max_size=None, clock=clock, cleanup_interval=3600.0) as c:
        c.set("short", 1, ttl=1)
        c.set("default", 2)
        clock.advance(1)
        assert c.get("short") is None
        assert c.get("default") == 2
        clock.advance(9)
        assert c.expire() == 1
        assert len(c) == 0
        assert c.metrics().expirations == 2


def test_get_or_set_on_an_unbounded_cache_stores_the_result(unbounded: Cache[Any, Any]) -> None:
    assert unbounded.get_or_set("k", lambda: 42) == 42
    assert unbounded.get_or_set("k", lambda: 0) == 42


def test_the_largest_bound_is_accepted_and_one_more_is_refused_naming_the_limit() -> None:
    with Cache[int, int](max_size=MAX_CAPACITY) as c:
        assert c.max_size == MAX_CAPACITY
    with pytest.raises(ValueError, match=f"max_size must be between 1 and {MAX_CAPACITY}"):
        Cache(max_size=MAX_CAPACITY + 1)


@pytest.mark.parametrize("max_size", [0, -1, 10**400])
def test_out_of_range_max_size_says_none_means_unbounded(max_size: int) -> None:
    with pytest.raises(ValueError, match=r"max_size .*or None \(unbounded\)"):
        Cache(max_size=max_size)


@pytest.mark.parametrize("max_size", [1.5, "10", True, float("inf")])
def test_wrong_type_of_max_size_says_int_or_none(max_size: Any) -> None:
    with pytest.raises(TypeError, match=r"max_size must be an int or None"):
        Cache(max_size=max_size)
