"""Reference counts and memory: the cache releases everything it lets go of."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from typing import Any

import pytest

from pgcache import ManualClock

REPEAT = 1000


class Value:
    """A fresh, non-interned object whose refcount nothing else touches."""


def refcount(obj: object) -> int:
    return sys.getrefcount(obj)


# --------------------------------------------------------------------------- released values


def test_value_refcount_returns_to_baseline_after_eviction(make_cache: Any) -> None:
    c = make_cache(max_size=1)
    value = Value()
    baseline = refcount(value)
    c.set("a", value)
    assert refcount(value) > baseline
    c.set("b", Value())
    assert refcount(value) == baseline


def test_key_refcount_returns_to_baseline_after_eviction(make_cache: Any) -> None:
    c = make_cache(max_size=1)
    key = ("fingerprint", Value())
    baseline = refcount(key)
    c.set(key, 1)
    assert refcount(key) > baseline
    c.set("other", 2)
    assert refcount(key) == baseline


def test_value_refcount_returns_to_baseline_after_background_expiry(
    make_cache: Any, clock: ManualClock, wait_until: Any
) -> None:
    c = make_cache(ttl=1, cleanup_interval=0.01)
    value = Value()
    key = ("k", Value())
    value_baseline, key_baseline = refcount(value), refcount(key)
    c.set(key, value)
    assert refcount(value) > value_baseline
    clock.advance(1)
    assert wait_until(lambda: refcount(value) == value_baseline), refcount(value)
    assert wait_until(lambda: refcount(key) == key_baseline), refcount(key)
    assert c.metrics().expirations == 1


@pytest.mark.parametrize(
    "expire",
    [lambda c: c.expire(), lambda c: c.get("k"), lambda c: "k" in c, lambda c: c.set("k", 0)],
    ids=["expire", "get", "contains", "set"],
)
def test_value_refcount_returns_to_baseline_when_expired_entry_is_noticed(
    make_cache: Any, clock: ManualClock, expire: Callable[[Any], object]
) -> None:
    c = make_cache(ttl=1)
    value = Value()
    baseline = refcount(value)
    c.set("k", value)
    clock.advance(1)
    expire(c)
    assert refcount(value) == baseline


def test_value_refcount_returns_to_baseline_after_delete(make_cache: Any) -> None:
    c = make_cache()
    value = Value()
    baseline = refcount(value)
    c.set("k", value)
    assert c.delete("k") is True
    assert refcount(value) == baseline


def test_value_refcount_returns_to_baseline_after_delitem(make_cache: Any) -> None:
    c = make_cache()
    value = Value()
    baseline = refcount(value)
    c["k"] = value
    del c["k"]
    assert refcount(value) == baseline


def test_value_refcount_returns_to_baseline_after_pop(make_cache: Any) -> None:
    c = make_cache()
    value = Value()
    baseline = refcount(value)
    c.set("k", value)
    assert c.pop("k") is value
    assert refcount(value) == baseline


@pytest.mark.parametrize("empty", ["clear", "close"])
def test_key_and_value_refcounts_return_to_baseline_after_clear_or_close(
    make_cache: Any, empty: str
) -> None:
    c = make_cache()
    value = Value()
    key = ("k", Value())
    value_baseline, key_baseline = refcount(value), refcount(key)
    c.set(key, value)
    getattr(c, empty)()
    assert refcount(value) == value_baseline
    assert refcount(key) == key_baseline


def test_value_refcount_returns_to_baseline_after_overwrite(make_cache: Any) -> None:
    c = make_cache()
    value = Value()
    baseline = refcount(value)
    c.set("k", value)
    c.set("k", Value())
    assert refcount(value) == baseline


def test_overwrite_keeps_exactly_one_reference_to_the_original_key(make_cache: Any) -> None:
    c = make_cache()
    key, equal_key = tuple(["k", 1]), tuple(["k", 1])
    assert key is not equal_key
    key_baseline, equal_baseline = refcount(key), refcount(equal_key)
    c.set(key, 1)
    held = refcount(key)
    for _ in range(REPEAT):
        c.set(equal_key, 2)
    assert refcount(key) == held
    assert refcount(equal_key) == equal_baseline
    c.delete(key)
    assert refcount(key) == key_baseline


# --------------------------------------------------------------------------- no leaks on reads


@pytest.mark.parametrize(
    "read",
    [
        lambda c, k: c.get(k),
        lambda c, k: c[k],
        lambda c, k: c.get_many([k, k]),
        lambda c, k: c.get_or_set(k, Value),
        lambda c, k: k in c,
        lambda c, k: c.keys(),
        lambda c, k: c.values(),
        lambda c, k: c.items(),
        lambda c, k: list(c),
    ],
    ids=["get", "getitem", "get_many", "get_or_set", "contains", "keys", "values", "items", "iter"],
)
def test_repeated_reads_leak_no_references(
    make_cache: Any, read: Callable[[Any, Any], object]
) -> None:
    c = make_cache()
    key, value = ("k", Value()), Value()
    c.set(key, value)
    key_held, value_held = refcount(key), refcount(value)
    for _ in range(REPEAT):
        read(c, key)
    assert refcount(key) == key_held
    assert refcount(value) == value_held


@pytest.mark.parametrize(
    "miss",
    [
        lambda c, k, d: c.get(k, d),
        lambda c, k, d: c.pop(k, d),
        lambda c, k, d: c.get_many([k]),
        lambda c, k, d: c.delete(k),
    ],
    ids=["get", "pop", "get_many", "delete"],
)
def test_repeated_misses_leak_no_references(
    make_cache: Any, miss: Callable[[Any, Any, Any], object]
) -> None:
    c = make_cache()
    key, default = ("absent", Value()), Value()
    key_baseline, default_baseline = refcount(key), refcount(default)
    for _ in range(REPEAT):
        miss(c, key, default)
    assert refcount(key) == key_baseline
    assert refcount(default) == default_baseline


def test_failing_factory_leaks_no_references(make_cache: Any) -> None:
    c = make_cache()
    key = ("k", Value())
    key_baseline = refcount(key)

    def factory() -> Value:
        raise ValueError("boom")

    for _ in range(REPEAT):
        with pytest.raises(ValueError, match="boom"):
            c.get_or_set(key, factory)
    gc.collect()
    assert refcount(key) == key_baseline


def test_failed_key_comparison_leaks_no_references(make_cache: Any) -> None:
    class EqError(Exception):
        pass

    class Key:
        def __hash__(self) -> int:
            return 5

        def __eq__(self, other: object) -> bool:
            raise EqError

    c = make_cache()
    stored, probe, value = Key(), Key(), Value()
    c.set(stored, value)
    stored_held, value_held, probe_baseline = refcount(stored), refcount(value), refcount(probe)
    for _ in range(REPEAT):
        with pytest.raises(EqError):
            c.get(probe)
    gc.collect()
    assert refcount(probe) == probe_baseline
    assert refcount(stored) == stored_held
    assert refcount(value) == value_held


# --------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_million_set_evict_cycles_leave_rss_flat(make_cache: Any) -> None:
    max_size, cycles = 1000, 1_000_000
    c = make_cache(max_size=max_size, policy="lru")
    # Warm up: fill the cache and let the allocator reach its steady state.
    for i in range(100_000):
        c.set(i, i)
    gc.collect()
    before = rss_bytes()
    for i in range(100_000, 100_000 + cycles):
        c.set(i, i)  # a fresh int key and value every time; each insert evicts one entry
    gc.collect()
    growth = rss_bytes() - before
    assert len(c) == max_size
    assert c.metrics().evictions == 100_000 + cycles - max_size
    assert growth < 20 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"
