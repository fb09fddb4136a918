"""Time to live, driven only by a ManualClock (no test sleeps for a TTL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pgcache import ManualClock

MISSING = object()


# --------------------------------------------------------------------------- ManualClock


def test_manual_clock_starts_at_zero_by_default() -> None:
    assert ManualClock().now() == 0.0


def test_manual_clock_starts_at_given_float_or_timedelta() -> None:
    assert ManualClock(5.5).now() == 5.5
    assert ManualClock(timedelta(seconds=3)).now() == 3.0


def test_manual_clock_moves_only_when_advanced(clock: ManualClock) -> None:
    assert clock.now() == 0.0
    assert clock.now() == 0.0
    clock.advance(1.5)
    assert clock.now() == 1.5
    clock.advance(timedelta(milliseconds=500))
    assert clock.now() == 2.0


def test_manual_clock_advance_by_zero_is_allowed(clock: ManualClock) -> None:
    clock.advance(0)
    assert clock.now() == 0.0


def test_manual_clock_resolves_sub_millisecond_differences(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(ttl=1.0)
    c.set("k", 1)
    clock.advance(0.999_999)  # one microsecond before the deadline
    assert c.get("k") == 1
    assert 0.999_998 < clock.now() < 1.0


# --------------------------------------------------------------------------- expiry instant


def test_entry_is_live_just_before_its_ttl_elapses(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=10)
    c.set("k", "v")
    clock.advance(9.5)
    assert c.get("k") == "v"


def test_entry_expires_at_exactly_set_time_plus_ttl(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=10)
    clock.advance(3)
    c.set("k", "v")
    clock.advance(9.5)
    assert c.get("k") == "v"
    clock.advance(0.5)  # now == 3 + 10 exactly
    assert clock.now() == 13.0
    assert c.get("k") is None


def test_expired_entry_is_never_returned_by_any_read(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=1)
    for key in ["get", "getitem", "get_many", "get_or_set", "in", "pop", "delete", "del"]:
        c.set(key, "old")
    clock.advance(1)
    assert c.get("get", MISSING) is MISSING
    with pytest.raises(KeyError):
        _ = c["getitem"]
    assert c.get_many(["get_many"]) == {}
    assert c.get_or_set("get_or_set", lambda: "fresh") == "fresh"
    assert "in" not in c
    assert c.pop("pop", MISSING) is MISSING
    assert c.delete("delete") is False
    with pytest.raises(KeyError):
        del c["del"]


def test_pop_of_expired_entry_without_default_raises_key_error(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(ttl=1)
    c.set("k", 1)
    clock.advance(1)
    with pytest.raises(KeyError):
        c.pop("k")


def test_reads_do_not_extend_the_ttl(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=10)
    c.set("k", "v")
    clock.advance(9)
    assert c.get("k") == "v"
    assert c["k"] == "v"
    assert "k" in c
    assert c.get_or_set("k", lambda: "new") == "v"
    clock.advance(1)
    assert c.get("k") is None


# --------------------------------------------------------------------------- per-entry ttl


def test_per_call_float_ttl_overrides_cache_default(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=100)
    c.set("short", 1, ttl=2.5)
    c.set("default", 2)
    clock.advance(2.5)
    assert "short" not in c
    assert c.get("default") == 2
    clock.advance(97.5)
    assert "default" not in c


def test_per_call_timedelta_ttl_overrides_cache_default(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(ttl=100)
    c.set("k", 1, ttl=timedelta(seconds=2))
    clock.advance(1.5)
    assert c.get("k") == 1
    clock.advance(0.5)
    assert c.get("k") is None


def test_per_call_ttl_may_be_longer_than_cache_default(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=1)
    c.set("long", 1, ttl=60)
    clock.advance(59.5)
    assert c.get("long") == 1
    clock.advance(0.5)
    assert c.get("long") is None


def test_per_call_ttl_none_uses_cache_default(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=5)
    c.set("k", 1, ttl=None)
    clock.advance(4.5)
    assert c.get("k") == 1
    clock.advance(0.5)
    assert c.get("k") is None


def test_per_call_ttl_on_cache_without_default_ttl(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=None)
    c.set("expiring", 1, ttl=1)
    c.set("forever", 2)
    clock.advance(1)
    assert "expiring" not in c
    assert c.get("forever") == 2


def test_set_many_applies_per_call_ttl_to_every_pair(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=100)
    c.set_many({"a": 1, "b": 2}, ttl=timedelta(seconds=3))
    clock.advance(2.5)
    assert c.get_many(["a", "b"]) == {"a": 1, "b": 2}
    clock.advance(0.5)
    assert c.get_many(["a", "b"]) == {}


def test_set_many_without_ttl_uses_cache_default(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=3)
    c.set_many([("a", 1)])
    clock.advance(3)
    assert "a" not in c


def test_get_or_set_stores_with_per_call_ttl(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=100)
    assert c.get_or_set("k", lambda: 1, ttl=2) == 1
    clock.advance(1.5)
    assert c.get_or_set("k", lambda: 2, ttl=2) == 1
    clock.advance(0.5)
    assert c.get_or_set("k", lambda: 3, ttl=timedelta(seconds=2)) == 3


def test_get_or_set_stores_with_cache_default_ttl(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=4)
    c.get_or_set("k", lambda: 1)
    clock.advance(4)
    assert "k" not in c


def test_cache_ttl_given_as_timedelta(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=timedelta(seconds=2))
    assert c.ttl == 2.0
    c.set("k", 1)
    clock.advance(timedelta(seconds=1.5))
    assert c.get("k") == 1
    clock.advance(timedelta(seconds=0.5))
    assert c.get("k") is None


# --------------------------------------------------------------------------- restart


def test_set_restarts_the_ttl(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=10)
    c.set("k", 1)
    clock.advance(6)
    c.set("k", 2)
    clock.advance(6)  # 12 s after the first set, 6 s after the second
    assert c.get("k") == 2
    clock.advance(4)
    assert c.get("k") is None


def test_setitem_restarts_the_ttl(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=10)
    c["k"] = 1
    clock.advance(6)
    c["k"] = 1
    clock.advance(6)
    assert c["k"] == 1


def test_set_many_restarts_the_ttl(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=10)
    c.set("k", 1)
    clock.advance(6)
    c.set_many({"k": 2})
    clock.advance(6)
    assert c.get("k") == 2


def test_overwrite_with_shorter_ttl_replaces_the_deadline(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(ttl=100)
    c.set("k", 1)
    c.set("k", 2, ttl=1)
    clock.advance(1)
    assert "k" not in c


def test_set_over_expired_key_stores_a_fresh_entry(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=2)
    c.set("k", 1)
    clock.advance(5)
    c.set("k", 2)
    clock.advance(1.5)
    assert c.get("k") == 2


def _equal_distinct_keys() -> tuple[Any, Any]:
    first, second = tuple(["k", 1]), tuple(["k", 1])
    assert first == second
    assert first is not second
    return first, second


@pytest.mark.parametrize(
    "store",
    [
        lambda c, k: c.set(k, 2),
        lambda c, k: c.set_many([(k, 2)]),
        lambda c, k: c.get_or_set(k, lambda: 2),
    ],
    ids=["set", "set_many", "get_or_set"],
)
def test_storing_over_an_expired_key_stores_the_new_key_object(
    make_cache: Any, clock: ManualClock, store: Any
) -> None:
    # The expired entry is removed (one expiration) and the key is stored as new: unlike a
    # live overwrite, nothing of the expired entry (its key object included) is kept.
    c = make_cache(ttl=1)
    first, second = _equal_distinct_keys()
    c.set(first, 1)
    clock.advance(1)
    store(c, second)
    [key] = c.keys()
    assert key is second
    assert c.get(first) == 2
    assert c.metrics().expirations == 1


def test_live_overwrite_keeps_the_first_key_object(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=1)
    first, second = _equal_distinct_keys()
    c.set(first, 1)
    clock.advance(0.5)
    c.set(second, 2)
    [key] = c.keys()
    assert key is first


# --------------------------------------------------------------------------- no ttl


def test_ttl_none_never_expires(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=None)
    c.set("k", 1)
    clock.advance(10**9)
    assert c.get("k") == 1
    assert c.expire() == 0
    assert c.metrics().expirations == 0


# --------------------------------------------------------------------------- expire()


def test_expire_removes_expired_entries_and_returns_their_count(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(ttl=10)
    c.set("a", 1, ttl=1)
    c.set("b", 2, ttl=2)
    c.set("c", 3, ttl=3)
    c.set("live", 4)
    clock.advance(2)
    assert c.expire() == 2
    assert len(c) == 2
    assert sorted(c.keys()) == ["c", "live"]


def test_expire_with_nothing_expired_returns_zero(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=10)
    c.set("a", 1)
    clock.advance(5)
    assert c.expire() == 0
    assert len(c) == 1


def test_expire_on_empty_cache_returns_zero(make_cache: Any) -> None:
    c = make_cache(ttl=10)
    assert c.expire() == 0


def test_expire_twice_counts_each_entry_once(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=1)
    c.set_many({"a": 1, "b": 2})
    clock.advance(1)
    assert c.expire() == 2
    assert c.expire() == 0
    assert c.metrics().expirations == 2


def test_expired_entries_are_left_out_of_keys_values_items(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(ttl=10)
    c.set("old", 1, ttl=1)
    c.set("new", 2)
    clock.advance(1)
    assert c.keys() == ["new"]
    assert c.values() == [2]
    assert c.items() == [("new", 2)]
    assert list(c) == ["new"]


def test_views_neither_remove_nor_count_expired_entries(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(ttl=1)
    c.set_many({"a": 1, "b": 2})
    clock.advance(1)
    assert c.keys() == []
    assert c.values() == []
    assert c.items() == []
    assert list(c) == []
    assert c.metrics().expirations == 0
    assert c.expire() == 2


def test_len_is_exact_after_expire(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=5)
    c.set_many({i: i for i in range(10)})
    clock.advance(3)
    c.set_many({i: i for i in range(10, 15)})
    clock.advance(2)
    c.expire()
    assert len(c) == 5
    assert c.metrics().size == 5


# --------------------------------------------------------------------------- background thread


def test_background_thread_removes_expired_entries(
    make_cache: Any, clock: ManualClock, wait_until: Any
) -> None:
    c = make_cache(ttl=1, cleanup_interval=0.01)
    c.set("a", 1)
    c.set("b", 2)
    c.set("live", 3, ttl=100)
    clock.advance(2)
    assert wait_until(lambda: c.metrics().expirations == 2), c.metrics().to_dict()
    assert wait_until(lambda: len(c) == 1)
    assert c.metrics().size == 1
    assert c.keys() == ["live"]
    assert c.metrics().misses == 0
    assert c.expire() == 0


def test_background_thread_uses_the_cache_clock(
    make_cache: Any, clock: ManualClock, wait_until: Any
) -> None:
    c = make_cache(ttl=1, cleanup_interval=0.01)
    c.set("k", 1)
    # A real clock would see almost no time pass: only the ManualClock says the entry expired.
    clock.advance(1)
    assert wait_until(lambda: c.metrics().expirations == 1), c.metrics().to_dict()
    assert wait_until(lambda: len(c) == 0)


def test_background_thread_wakes_for_new_cache_with_shorter_interval(
    make_cache: Any, wait_until: Any
) -> None:
    slow = make_cache(ttl=1, cleanup_interval=3600, clock=ManualClock())
    slow.set("k", 1)
    fast_clock = ManualClock()
    fast = make_cache(ttl=1, cleanup_interval=0.01, clock=fast_clock)
    fast.set("k", 1)
    fast_clock.advance(1)
    assert wait_until(lambda: fast.metrics().expirations == 1), fast.metrics().to_dict()


def test_background_thread_serves_several_caches_with_their_own_clocks(
    make_cache: Any, wait_until: Any
) -> None:
    clocks = [ManualClock() for _ in range(3)]
    caches = [make_cache(ttl=1, cleanup_interval=0.01, clock=clk) for clk in clocks]
    for cache in caches:
        cache.set("k", 1)
    clocks[0].advance(1)
    clocks[2].advance(1)
    assert wait_until(lambda: caches[0].metrics().expirations == 1)
    assert wait_until(lambda: caches[2].metrics().expirations == 1)
    assert caches[1].metrics().expirations == 0
    assert caches[1].get("k") == 1
