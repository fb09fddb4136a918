"""Python protocols a cache takes part in (weak references) and those it refuses (pickle, copy).

A cache holds live objects, a lock and a registration with the shared expiry thread: a
copy could not mean anything useful, so ``pickle`` and ``copy`` raise a ``TypeError`` that
says why and what to do instead. A ``ManualClock`` is a plain value: copies are independent
clocks at the same reading.
"""

from __future__ import annotations

import copy
import gc
import pickle
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgcache import Cache, ManualClock


@pytest.fixture
def cache() -> Iterator[Cache[str, int]]:
    c: Cache[str, int] = Cache(cleanup_interval=3600.0)
    c.set("a", 1)
    yield c
    c.close()


# --------------------------------------------------------------------------- weak references


def test_a_cache_can_be_weakly_referenced(cache: Cache[str, int]) -> None:
    ref = weakref.ref(cache)
    assert ref() is cache
    assert ref().get("a") == 1  # type: ignore[union-attr]


def test_a_weak_reference_does_not_keep_the_cache_alive() -> None:
    c: Cache[str, int] = Cache()
    c.set("a", 1)
    died: list[bool] = []
    ref = weakref.ref(c, lambda _: died.append(True))
    del c
    assert ref() is None
    assert died == [True]


def test_caches_can_be_values_of_a_weak_value_dictionary() -> None:
    registry: weakref.WeakValueDictionary[str, Cache[str, int]] = weakref.WeakValueDictionary()
    c: Cache[str, int] = Cache()
    registry["features"] = c
    assert registry["features"] is c
    del c
    gc.collect()
    assert "features" not in registry


def test_a_weak_proxy_forwards_calls(cache: Cache[str, int]) -> None:
    proxy = weakref.proxy(cache)
    proxy.set("b", 2)
    assert cache.get("b") == 2


# --------------------------------------------------------------------------- pickle and copy

REFUSALS: list[tuple[str, Callable[[Any], object]]] = [
    *[
        (f"pickle-protocol-{p}", lambda c, p=p: pickle.dumps(c, protocol=p))
        for p in range(pickle.HIGHEST_PROTOCOL + 1)
    ],
    ("copy", copy.copy),
    ("deepcopy", copy.deepcopy),
    ("deepcopy-inside-a-dict", lambda c: copy.deepcopy({"cache": c})),
]


@pytest.mark.parametrize(("name", "attempt"), REFUSALS, ids=[name for name, _ in REFUSALS])
def test_pickle_and_copy_raise_type_error_saying_why(
    cache: Cache[str, int], name: str, attempt: Callable[[Any], object]
) -> None:
    with pytest.raises(TypeError) as raised:
        attempt(cache)
    message = str(raised.value)
    assert "pgcache.Cache cannot be" in message
    assert "live Python objects" in message
    assert "set_many(cache.items())" in message


def test_a_refused_copy_leaves_the_cache_unchanged_and_usable(cache: Cache[str, int]) -> None:
    with pytest.raises(TypeError):
        copy.copy(cache)
    cache.set("b", 2)
    assert sorted(cache.items()) == [("a", 1), ("b", 2)]


def test_the_suggested_copy_of_the_entries_works(cache: Cache[str, int]) -> None:
    cache.set("b", 2)
    with Cache[str, int]() as copied:
        copied.set_many(cache.items())
        assert sorted(copied.items()) == [("a", 1), ("b", 2)]


def test_a_closed_cache_is_refused_the_same_way() -> None:
    c: Cache[str, int] = Cache()
    c.close()
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(c)


# --------------------------------------------------------------------------- ManualClock


@pytest.mark.parametrize(
    "duplicate",
    [
        copy.copy,
        copy.deepcopy,
        lambda clock: pickle.loads(pickle.dumps(clock)),
    ],
    ids=["copy", "deepcopy", "pickle"],
)
def test_a_manual_clock_copy_is_an_independent_clock_at_the_same_reading(
    duplicate: Callable[[ManualClock], ManualClock],
) -> None:
    clock = ManualClock(12.5)
    twin = duplicate(clock)
    assert type(twin) is ManualClock
    assert twin is not clock
    assert twin.now() == 12.5
    twin.advance(1.0)
    assert (clock.now(), twin.now()) == (12.5, 13.5)
    clock.advance(10.0)
    assert (clock.now(), twin.now()) == (22.5, 13.5)
