"""Counters exposed by Cache.metrics()."""

from __future__ import annotations

from typing import Any

import pytest

from pgcache import CacheMetrics, ManualClock

COUNTERS = ("hits", "misses", "evictions", "expirations")


def counters(c: Any) -> tuple[int, int, int, int]:
    m = c.metrics()
    return (m.hits, m.misses, m.evictions, m.expirations)


# --------------------------------------------------------------------------- initial state


def test_new_cache_has_zero_counters(make_cache: Any) -> None:
    c = make_cache(max_size=42)
    m = c.metrics()
    assert isinstance(m, CacheMetrics)
    assert (m.hits, m.misses, m.evictions, m.expirations) == (0, 0, 0, 0)
    assert m.size == 0
    assert m.max_size == 42


def test_hit_rate_is_zero_without_lookups(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    assert c.metrics().hit_rate == 0.0
    assert isinstance(c.metrics().hit_rate, float)


# --------------------------------------------------------------------------- hits / misses


def test_get_counts_hit_or_miss(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    c.get("a")
    c.get("a", None)
    c.get("absent")
    c.get("absent", 0)
    assert counters(c) == (2, 2, 0, 0)


def test_getitem_counts_hit_or_miss(make_cache: Any) -> None:
    c = make_cache()
    c["a"] = 1
    _ = c["a"]
    with pytest.raises(KeyError):
        _ = c["absent"]
    assert counters(c) == (1, 1, 0, 0)


def test_get_many_counts_each_key_occurrence(make_cache: Any) -> None:
    c = make_cache()
    c.set_many({"a": 1, "b": 2})
    assert c.get_many(["a", "a", "b", "x", "x", "y"]) == {"a": 1, "b": 2}
    assert counters(c) == (3, 3, 0, 0)


def test_get_or_set_counts_miss_then_hit(make_cache: Any) -> None:
    c = make_cache()
    c.get_or_set("k", lambda: 1)
    assert counters(c) == (0, 1, 0, 0)
    c.get_or_set("k", lambda: 2)
    assert counters(c) == (1, 1, 0, 0)


def test_get_or_set_with_failing_factory_counts_a_miss(make_cache: Any) -> None:
    c = make_cache()

    def factory() -> int:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        c.get_or_set("k", factory)
    assert counters(c) == (0, 1, 0, 0)


def test_non_lookup_operations_count_no_hits_or_misses(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    c.set_many({"b": 2, "c": 3})
    c["d"] = 4
    assert "a" in c
    assert "absent" not in c
    c.delete("a")
    c.delete("absent")
    c.pop("b")
    c.pop("absent", None)
    del c["c"]
    c.keys()
    c.values()
    c.items()
    list(c)
    len(c)
    c.expire()
    assert counters(c) == (0, 0, 0, 0)


def test_hit_rate_is_a_percentage(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    for _ in range(3):
        c.get("a")
    c.get("absent")
    assert c.metrics().hit_rate == pytest.approx(75.0)


def test_hit_rate_is_100_when_every_lookup_hits(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    c.get("a")
    assert c.metrics().hit_rate == pytest.approx(100.0)


def test_hit_rate_is_0_when_every_lookup_misses(make_cache: Any) -> None:
    c = make_cache()
    c.get("absent")
    assert c.metrics().hit_rate == 0.0


# ------------------------------------------------------------------- evictions / expirations


def test_evictions_count_each_evicted_entry(make_cache: Any) -> None:
    c = make_cache(max_size=2, policy="lru")
    for i in range(5):
        c.set(i, i)
    assert c.metrics().evictions == 3


def test_expired_lookup_counts_a_miss_and_an_expiration(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(ttl=1)
    c.set("k", 1)
    clock.advance(1)
    assert c.get("k") is None
    assert counters(c) == (0, 1, 0, 1)
    # The entry is gone now: a second lookup is a plain miss.
    assert c.get("k") is None
    assert counters(c) == (0, 2, 0, 1)


@pytest.mark.parametrize(
    "lookup",
    [
        lambda c: c.get("k"),
        lambda c: c.get_many(["k"]),
        lambda c: c.get_or_set("k", lambda: 2),
    ],
    ids=["get", "get_many", "get_or_set"],
)
def test_every_kind_of_expired_lookup_counts_miss_and_expiration(
    make_cache: Any, clock: ManualClock, lookup: Any
) -> None:
    c = make_cache(ttl=1)
    c.set("k", 1)
    clock.advance(1)
    lookup(c)
    assert counters(c) == (0, 1, 0, 1)


def test_expired_getitem_counts_miss_and_expiration(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=1)
    c.set("k", 1)
    clock.advance(1)
    with pytest.raises(KeyError):
        _ = c["k"]
    assert counters(c) == (0, 1, 0, 1)


def test_get_many_counts_expired_key_once_as_expiration(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(ttl=1)
    c.set("k", 1)
    clock.advance(1)
    assert c.get_many(["k", "k"]) == {}
    assert counters(c) == (0, 2, 0, 1)


@pytest.mark.parametrize(
    "operation",
    [
        lambda c: c.delete("k"),
        lambda c: c.pop("k", None),
        lambda c: "k" in c,
        lambda c: c.expire(),
        lambda c: c.set("k", 2),
        lambda c: c.set_many({"k": 2}),
    ],
    ids=["delete", "pop", "contains", "expire", "set", "set_many"],
)
def test_non_lookup_noticing_expired_entry_counts_only_an_expiration(
    make_cache: Any, clock: ManualClock, operation: Any
) -> None:
    c = make_cache(ttl=1)
    c.set("k", 1)
    clock.advance(1)
    operation(c)
    assert counters(c) == (0, 0, 0, 1)


def test_delitem_of_expired_entry_counts_expiration_and_raises(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(ttl=1)
    c.set("k", 1)
    clock.advance(1)
    with pytest.raises(KeyError):
        del c["k"]
    assert counters(c) == (0, 0, 0, 1)


def test_each_expired_entry_is_counted_exactly_once(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=1)
    c.set_many({"a": 1, "b": 2, "c": 3})
    clock.advance(1)
    assert "a" not in c
    assert "a" not in c
    c.delete("b")
    c.delete("b")
    assert c.expire() == 1
    assert c.expire() == 0
    assert c.metrics().expirations == 3


# --------------------------------------------------------------------------- size


def test_size_tracks_number_of_entries(make_cache: Any) -> None:
    c = make_cache(max_size=3)
    c.set_many({"a": 1, "b": 2})
    assert c.metrics().size == 2
    c.set_many({"c": 3, "d": 4})
    assert c.metrics().size == 3
    c.delete("d")
    assert c.metrics().size == 2
    assert c.metrics().size == len(c)


def test_max_size_metric_reports_configured_max_size(make_cache: Any) -> None:
    c = make_cache(max_size=7)
    assert c.metrics().max_size == 7


# --------------------------------------------------------------------------- reset / clear


def test_reset_metrics_zeroes_counters_but_keeps_size(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(max_size=2, ttl=1, policy="lru")
    c.set_many({"a": 1, "b": 2, "c": 3})
    c.get("c")
    c.get("absent")
    clock.advance(1)
    c.get("b")
    assert counters(c) == (1, 2, 1, 1)
    c.set("d", 4)
    c.reset_metrics()
    m = c.metrics()
    assert counters(c) == (0, 0, 0, 0)
    assert m.hit_rate == 0.0
    assert m.size == len(c)
    assert m.size >= 1
    assert m.max_size == 2


def test_counting_resumes_after_reset_metrics(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    c.get("a")
    c.reset_metrics()
    c.get("a")
    c.get("absent")
    assert counters(c) == (1, 1, 0, 0)
    assert c.metrics().hit_rate == pytest.approx(50.0)


def test_clear_keeps_counters_and_sets_size_to_zero(make_cache: Any) -> None:
    c = make_cache(max_size=2, policy="lru")
    c.set_many({"a": 1, "b": 2, "c": 3})
    c.get("c")
    c.get("a")
    before = counters(c)
    c.clear()
    assert counters(c) == before == (1, 1, 1, 0)
    assert c.metrics().size == 0


def test_clear_does_not_count_expired_entries(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(ttl=1)
    c.set_many({"a": 1, "b": 2})
    clock.advance(1)
    c.clear()
    assert c.metrics().expirations == 0
    assert c.expire() == 0


# --------------------------------------------------------------------------- CacheMetrics object


def test_to_dict_has_every_metric(make_cache: Any) -> None:
    c = make_cache(max_size=5)
    c.set("a", 1)
    c.get("a")
    c.get("b")
    m = c.metrics()
    d = m.to_dict()
    assert d == {
        "hits": 1,
        "misses": 1,
        "evictions": 0,
        "rejections": 0,
        "expirations": 0,
        "size": 1,
        "max_size": 5,
        "hit_rate": 50.0,
    }
    for name in (*COUNTERS, "size", "max_size"):
        assert type(d[name]) is int
        assert d[name] == getattr(m, name)
    assert type(d["hit_rate"]) is float


def test_metrics_object_is_a_snapshot(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    m = c.metrics()
    c.get("a")
    c.set("b", 2)
    assert m.hits == 0
    assert m.size == 1
    assert c.metrics().hits == 1


def test_equal_snapshots_compare_and_hash_equal(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    c.get("a")
    first, second = c.metrics(), c.metrics()
    assert first == second
    assert hash(first) == hash(second)
    c.get("a")
    assert c.metrics() != first


def test_metrics_properties_are_read_only(make_cache: Any) -> None:
    m = make_cache().metrics()
    with pytest.raises(AttributeError):
        m.hits = 5
