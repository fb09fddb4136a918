"""Keys and values that fight back: raising ``__eq__``, ``__del__`` that uses the cache, keys
whose ``__eq__`` use another cache, absurd numbers.

The guarantees: bad input changes nothing (a batch hashes and compares every key before it
stores or reorders anything); no Python object is released while the store lock is held, on
error paths too; two threads that would wait for each other forever get a ``RuntimeError``
instead; every numeric argument that is out of range is named in the error.

Tests that would hang on failure run in a subprocess with a timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.scripts import run_python

from pgcache import Cache, ManualClock

#: Least-recently-used eviction where the cache offers a choice of policy: the tests that
#: compare evictions must not depend on the default policy.
LRU: dict[str, Any] = (
    {"policy": "lru"} if "policy=" in getattr(Cache, "__text_signature__", "") else {}
)


class BoomError(Exception):
    """What a hostile ``__eq__`` raises."""


class CollidingKey:
    """Every instance hashes alike, so looking one up compares it with stored ones."""

    def __init__(self, name: str, *, raises: bool = False) -> None:
        self.name = name
        self.raises = raises

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        if self.raises or (isinstance(other, CollidingKey) and other.raises):
            raise BoomError(f"{self.name} == {getattr(other, 'name', other)}")
        return isinstance(other, CollidingKey) and self.name == other.name

    def __repr__(self) -> str:
        return f"CollidingKey({self.name!r})"


@pytest.fixture
def cache() -> Iterator[Cache[Any, Any]]:
    c: Cache[Any, Any] = Cache(max_size=100, clock=ManualClock(), cleanup_interval=3600.0)
    yield c
    c.close()


def state(c: Cache[Any, Any]) -> tuple[list[tuple[Any, Any]], tuple[int, int, int, int, int]]:
    """Everything a failed call must leave as it was: entries in LRU order and the counters."""
    m = c.metrics()
    return c.items(), (m.hits, m.misses, m.evictions, m.expirations, m.size)


# --------------------------------------------------------------------------- set_many


def test_set_many_never_releases_a_value_under_the_lock_when_a_key_eq_raises() -> None:
    # The reproduction: the value, made by a generator, is the batch's only reference
    # to it; its __del__ uses the cache. Released under the lock, it waited for itself forever.
    result = run_python(
        """
        from pgcache import Cache

        cache = Cache()

        class BadKey:
            def __hash__(self):
                return 7
            def __eq__(self, other):
                raise ValueError("no comparing")

        class V:
            def __del__(self):
                print("del sees", cache.get("x"), flush=True)

        cache[BadKey()] = 1
        cache["x"] = "x"
        try:
            cache.set_many((BadKey(), V()) for _ in range(1))
        except ValueError as e:
            print("raised", e, flush=True)
        print("len", len(cache), flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["del sees x", "raised no comparing", "len 2"]


def test_set_many_with_a_key_eq_that_raises_against_a_stored_key_stores_nothing(
    cache: Cache[Any, Any],
) -> None:
    cache["a"] = 1
    cache[CollidingKey("stored")] = 2
    before = state(cache)
    with pytest.raises(BoomError):
        cache.set_many([("x", 1), ("a", 10), (CollidingKey("bad", raises=True), 3)])
    assert state(cache) == before
    assert "x" not in cache


def test_set_many_with_two_batch_keys_whose_eq_raises_stores_nothing(
    cache: Cache[Any, Any],
) -> None:
    cache["a"] = 1
    before = state(cache)
    batch = [("x", 1), (CollidingKey("one", raises=True), 2), (CollidingKey("two"), 3)]
    with pytest.raises(BoomError):
        cache.set_many(batch)
    assert state(cache) == before


def test_set_many_with_an_unhashable_key_stores_nothing(cache: Cache[Any, Any]) -> None:
    cache["a"] = 1
    before = state(cache)
    with pytest.raises(TypeError, match="unhashable"):
        cache.set_many([("x", 1), ([], 2)])
    assert state(cache) == before


def test_set_many_with_a_malformed_pair_stores_nothing(cache: Cache[Any, Any]) -> None:
    cache["a"] = 1
    before = state(cache)
    with pytest.raises((TypeError, ValueError)):
        cache.set_many([("x", 1), ("y", 2, 3)])  # type: ignore[list-item]
    assert state(cache) == before


def test_set_many_still_stores_in_order_with_the_last_duplicate_winning(
    cache: Cache[Any, Any],
) -> None:
    first, again = CollidingKey("k"), CollidingKey("k")
    cache.set_many([(first, 1), ("other", 2), (again, 3)])
    assert dict(cache.items()) == {first: 3, "other": 2}
    stored_key = next(key for key in cache if isinstance(key, CollidingKey))
    assert stored_key is first, "the first key object is kept, as in a dict"


def test_set_many_duplicates_evict_as_setting_each_pair_in_turn_would() -> None:
    with (
        Cache[int, str](max_size=1, **LRU) as one_by_one,
        Cache[int, str](max_size=1, **LRU) as batch,
    ):
        for key, value in [(0, "a"), (1, "b"), (0, "c")]:
            one_by_one[key] = value
        batch.set_many([(0, "a"), (1, "b"), (0, "c")])
        assert batch.items() == one_by_one.items() == [(0, "c")]
        assert batch.metrics() == one_by_one.metrics()


# --------------------------------------------------------------------------- get_many


def test_get_many_with_a_key_eq_that_raises_changes_nothing(cache: Cache[Any, Any]) -> None:
    cache["a"] = 1
    cache["b"] = 2
    cache[CollidingKey("stored")] = 3
    before = state(cache)
    with pytest.raises(BoomError):
        cache.get_many(["a", "missing", CollidingKey("bad", raises=True)])
    assert state(cache) == before, "no hit, miss or reordering was recorded"


def test_get_many_with_an_unhashable_key_changes_nothing(cache: Cache[Any, Any]) -> None:
    cache["a"] = 1
    before = state(cache)
    with pytest.raises(TypeError, match="unhashable"):
        cache.get_many(["a", {}])
    assert state(cache) == before


def test_get_many_counts_every_occurrence_as_before(cache: Cache[Any, Any]) -> None:
    for key in "abc":
        cache[key] = key.upper()
    assert cache.get_many(["a", "zz", "a", "b"]) == {"a": "A", "b": "B"}
    m = cache.metrics()
    assert (m.hits, m.misses) == (3, 1)


# --------------------------------------------------------------------------- __del__ on error paths


class DelUsesCache:
    """A value whose ``__del__`` uses the cache: released under the lock, it would hang."""

    def __init__(self, cache: Cache[Any, Any], seen: list[object]) -> None:
        self.cache = cache
        self.seen = seen

    def __del__(self) -> None:
        self.seen.append(self.cache.get("probe", "absent"))


def test_keys_dropped_by_a_failed_get_many_may_use_the_cache(cache: Cache[Any, Any]) -> None:
    seen: list[object] = []

    class Key(CollidingKey):
        def __del__(self) -> None:
            seen.append(cache.get("probe", "absent"))

    cache[CollidingKey("stored")] = 1
    with pytest.raises(BoomError):
        cache.get_many(Key("bad", raises=True) for _ in "x")
    assert seen == ["absent"]


def test_a_factory_result_that_cannot_be_stored_may_use_the_cache(
    cache: Cache[Any, Any],
) -> None:
    seen: list[object] = []
    armed = False

    class Key(CollidingKey):
        __hash__ = CollidingKey.__hash__

        def __eq__(self, other: object) -> bool:
            if armed:
                raise BoomError("at store time")
            return super().__eq__(other)

    cache[Key("stored")] = 1

    def factory() -> DelUsesCache:
        nonlocal armed
        armed = True
        return DelUsesCache(cache, seen)

    with pytest.raises(BoomError):
        cache.get_or_set(Key("new"), factory)
    armed = False
    assert seen == ["absent"]
    assert cache.get_or_set(Key("new"), lambda: "loaded again") == "loaded again"


def test_values_released_while_iterating_may_use_the_cache(cache: Cache[Any, Any]) -> None:
    seen: list[object] = []
    cache["probe"] = "present"
    for key in "abc":
        cache[key] = DelUsesCache(cache, seen)
    for key in cache:
        if key != "probe":
            del cache[key]
    assert seen == ["present"] * 3


# --------------------------------------------------------------------------- two caches


def test_keys_whose_eq_use_each_others_cache_raise_runtime_error_instead_of_deadlock() -> None:
    result = run_python(
        """
        import threading
        from pgcache import Cache

        a, b = Cache(), Cache()
        both_inside = threading.Barrier(2)
        armed = False

        class Key:
            def __init__(self, other_cache, n):
                self.other_cache, self.n = other_cache, n
            def __hash__(self):
                return 7
            def __eq__(self, other):
                if armed:
                    both_inside.wait()             # each thread holds its own cache's lock
                    self.other_cache.get("x")      # and now waits for the other's
                return self is other

        a[Key(b, 0)] = "a0"
        b[Key(a, 0)] = "b0"
        armed = True
        outcomes = {}

        def look_up(name, cache, other):
            try:
                outcomes[name] = cache.get(Key(other, 1), "absent")
            except RuntimeError as e:
                outcomes[name] = "RuntimeError: " + str(e)

        threads = [
            threading.Thread(target=look_up, args=("a", a, b)),
            threading.Thread(target=look_up, args=("b", b, a)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        armed = False
        for name in sorted(outcomes):
            print(name, outcomes[name])
        print("usable", a.get("x", "-"), b.get("x", "-"))
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    assert any("RuntimeError" in line and "deadlock" in line for line in lines[:2]), lines
    assert all(line.endswith("absent") or "deadlock" in line for line in lines[:2]), lines
    assert lines[2] == "usable - -"


def test_factories_that_wait_for_each_others_key_raise_runtime_error_instead_of_deadlock() -> None:
    result = run_python(
        """
        import threading
        from pgcache import Cache

        a, b = Cache(), Cache()
        both_loading = threading.Barrier(2)
        outcomes = {}

        def load(name, cache, key, other_cache, other_key):
            def factory():
                both_loading.wait()
                return other_cache.get_or_set(other_key, lambda: "inner " + other_key)
            try:
                outcomes[name] = cache.get_or_set(key, factory)
            except RuntimeError as e:
                outcomes[name] = "RuntimeError: " + str(e)

        threads = [
            threading.Thread(target=load, args=("one", a, "k1", b, "k2")),
            threading.Thread(target=load, args=("two", b, "k2", a, "k1")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name in sorted(outcomes):
            print(name, outcomes[name])
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert any("deadlock" in line for line in lines), lines


# --------------------------------------------------------------------------- absurd numbers


def test_cleanup_interval_below_one_millisecond_is_refused_naming_the_minimum() -> None:
    with pytest.raises(ValueError, match=r"cleanup_interval must be at least 0\.001 seconds"):
        Cache(cleanup_interval=1e-9)


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: Cache(ttl=10**400), "ttl"),
        (lambda: Cache(cleanup_interval=10**400), "cleanup_interval"),
        (lambda: Cache[str, int]().set("k", 1, ttl=10**400), "ttl"),
        (lambda: Cache[str, int]().set_many({"k": 1}, ttl=10**400), "ttl"),
        (lambda: Cache[str, int]().get_or_set("k", lambda: 1, ttl=10**400), "ttl"),
        (lambda: ManualClock(10**400), "start"),
        (lambda: ManualClock().advance(10**400), "seconds"),
    ],
    ids=[
        "ttl",
        "cleanup_interval",
        "set-ttl",
        "set_many-ttl",
        "get_or_set-ttl",
        "start",
        "advance",
    ],
)
def test_a_number_too_large_for_seconds_raises_overflow_error_naming_the_argument(
    make: Any, argument: str
) -> None:
    with pytest.raises(OverflowError, match=rf"^{argument} is too large"):
        make()


def test_an_int_too_large_for_max_size_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="max_size"):
        Cache(max_size=10**400)
