"""Least-recently-used order and eviction."""

from __future__ import annotations

from typing import Any

from pgcache import ManualClock

# --------------------------------------------------------------------------- order


def test_keys_lists_most_recently_used_first(make_cache: Any) -> None:
    c = make_cache(policy="lru")
    for key in "abc":
        c.set(key, key.upper())
    assert c.keys() == ["c", "b", "a"]
    assert c.values() == ["C", "B", "A"]
    assert c.items() == [("c", "C"), ("b", "B"), ("a", "A")]
    assert list(c) == ["c", "b", "a"]


def test_get_hit_makes_entry_most_recently_used(make_cache: Any) -> None:
    c = make_cache(policy="lru")
    c.set_many([("a", 1), ("b", 2), ("c", 3)])
    c.get("a")
    assert c.keys() == ["a", "c", "b"]


def test_getitem_hit_makes_entry_most_recently_used(make_cache: Any) -> None:
    c = make_cache(policy="lru")
    c.set_many([("a", 1), ("b", 2), ("c", 3)])
    _ = c["b"]
    assert c.keys() == ["b", "c", "a"]


def test_get_many_promotes_hits_in_lookup_order(make_cache: Any) -> None:
    c = make_cache(policy="lru")
    c.set_many([("a", 1), ("b", 2), ("c", 3), ("d", 4)])
    c.get_many(["b", "absent", "a"])
    assert c.keys() == ["a", "b", "d", "c"]


def test_get_or_set_hit_makes_entry_most_recently_used(make_cache: Any) -> None:
    c = make_cache(policy="lru")
    c.set_many([("a", 1), ("b", 2)])
    c.get_or_set("a", lambda: 0)
    assert c.keys() == ["a", "b"]


def test_get_or_set_miss_stores_entry_as_most_recently_used(make_cache: Any) -> None:
    c = make_cache(policy="lru")
    c.set_many([("a", 1), ("b", 2)])
    c.get_or_set("new", lambda: 0)
    assert c.keys() == ["new", "b", "a"]


def test_contains_does_not_change_order(make_cache: Any) -> None:
    c = make_cache(policy="lru")
    c.set_many([("a", 1), ("b", 2), ("c", 3)])
    assert "a" in c
    assert c.keys() == ["c", "b", "a"]


def test_miss_does_not_change_order(make_cache: Any) -> None:
    c = make_cache(policy="lru")
    c.set_many([("a", 1), ("b", 2)])
    c.get("absent")
    c.get_many(["absent"])
    assert c.keys() == ["b", "a"]


def test_views_do_not_change_order(make_cache: Any) -> None:
    c = make_cache(policy="lru")
    c.set_many([("a", 1), ("b", 2), ("c", 3)])
    c.values()
    c.items()
    list(c)
    assert c.keys() == ["c", "b", "a"]


def test_overwrite_makes_entry_most_recently_used(make_cache: Any) -> None:
    c = make_cache(policy="lru")
    c.set_many([("a", 1), ("b", 2), ("c", 3)])
    c.set("a", 10)
    assert c.keys() == ["a", "c", "b"]


def test_set_many_makes_each_pair_most_recently_used_in_order(make_cache: Any) -> None:
    c = make_cache(policy="lru")
    c.set_many([("a", 1), ("b", 2), ("c", 3)])
    c.set_many([("b", 20), ("a", 10)])
    assert c.keys() == ["a", "b", "c"]


def test_delete_and_pop_do_not_change_order_of_others(make_cache: Any) -> None:
    c = make_cache(policy="lru")
    c.set_many([(k, k) for k in "abcde"])
    c.delete("c")
    c.pop("e")
    del c["a"]
    assert c.keys() == ["d", "b"]


# --------------------------------------------------------------------------- eviction


def test_inserting_into_full_cache_evicts_least_recently_used(make_cache: Any) -> None:
    c = make_cache(policy="lru", max_size=3)
    c.set_many([("a", 1), ("b", 2), ("c", 3)])
    c.set("d", 4)
    assert c.keys() == ["d", "c", "b"]
    assert "a" not in c
    assert c.metrics().evictions == 1


def test_eviction_respects_promotion_by_get(make_cache: Any) -> None:
    c = make_cache(policy="lru", max_size=3)
    c.set_many([("a", 1), ("b", 2), ("c", 3)])
    c.get("a")
    c.set("d", 4)
    assert "b" not in c
    assert sorted(c.keys()) == ["a", "c", "d"]


def test_eviction_ignores_contains_checks(make_cache: Any) -> None:
    c = make_cache(policy="lru", max_size=2)
    c.set_many([("a", 1), ("b", 2)])
    assert "a" in c
    c.set("c", 3)
    assert "a" not in c
    assert c.keys() == ["c", "b"]


def test_cache_never_holds_more_than_max_size_entries(make_cache: Any) -> None:
    c = make_cache(policy="lru", max_size=10)
    for i in range(100):
        c.set(i, i)
        assert len(c) <= 10
    assert c.keys() == list(range(99, 89, -1))
    assert c.metrics().evictions == 90


def test_set_many_evicts_as_it_inserts(make_cache: Any) -> None:
    c = make_cache(policy="lru", max_size=2)
    c.set_many([("a", 1), ("b", 2), ("c", 3)])
    assert c.keys() == ["c", "b"]
    assert c.metrics().evictions == 1


def test_get_or_set_store_into_full_cache_evicts_least_recently_used(make_cache: Any) -> None:
    c = make_cache(policy="lru", max_size=2)
    c.set_many([("a", 1), ("b", 2)])
    c.get_or_set("c", lambda: 3)
    assert c.keys() == ["c", "b"]
    assert c.metrics().evictions == 1


def test_overwriting_live_key_in_full_cache_does_not_evict(make_cache: Any) -> None:
    c = make_cache(policy="lru", max_size=3)
    c.set_many([("a", 1), ("b", 2), ("c", 3)])
    c.set("a", 10)
    c.set_many({"b": 20})
    assert sorted(c.items()) == [("a", 10), ("b", 20), ("c", 3)]
    assert c.metrics().evictions == 0


def test_deleting_frees_a_slot_so_next_insert_does_not_evict(make_cache: Any) -> None:
    c = make_cache(policy="lru", max_size=2)
    c.set_many([("a", 1), ("b", 2)])
    c.delete("a")
    c.set("c", 3)
    assert c.keys() == ["c", "b"]
    assert c.metrics().evictions == 0


# --------------------------------------------------------------------------- expired before live


def test_expired_entry_is_removed_instead_of_evicting_a_live_one(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(policy="lru", max_size=3)
    c.set("a", 1, ttl=1)
    c.set("b", 2)
    c.set("c", 3)
    clock.advance(1)
    c.set("d", 4)
    assert c.keys() == ["d", "c", "b"]
    assert c.metrics().evictions == 0
    assert c.metrics().expirations == 1


def test_expired_entry_in_the_middle_is_removed_before_evicting_the_lru(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(policy="lru", max_size=3)
    c.set("lru", 1)
    c.set("expiring", 2, ttl=1)
    c.set("mru", 3)
    clock.advance(1)
    c.set("new", 4)
    assert c.keys() == ["new", "mru", "lru"]
    assert c.metrics().evictions == 0
    assert c.metrics().expirations == 1


def test_insert_into_full_cache_removes_all_expired_entries(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(policy="lru", max_size=4)
    c.set("x", 1, ttl=1)
    c.set("live", 2)
    c.set("y", 3, ttl=1)
    c.set("z", 4, ttl=2)
    clock.advance(2)
    c.set("new", 5)
    assert c.keys() == ["new", "live"]
    assert c.metrics().expirations == 3
    assert c.metrics().evictions == 0
    assert len(c) == 2
    assert c.expire() == 0


def test_insert_into_full_cache_evicts_lru_when_nothing_expired(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(policy="lru", max_size=2, ttl=10)
    c.set_many([("a", 1), ("b", 2)])
    clock.advance(5)
    c.set("c", 3)
    assert c.keys() == ["c", "b"]
    assert c.metrics().evictions == 1
    assert c.metrics().expirations == 0


def test_set_over_expired_key_in_full_cache_does_not_evict(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(policy="lru", max_size=2)
    c.set("a", 1, ttl=1)
    c.set("b", 2)
    clock.advance(1)
    c.set("a", 10)
    assert c.keys() == ["a", "b"]
    assert c.metrics().evictions == 0
    assert c.metrics().expirations == 1


# --------------------------------------------------------------------------- max_size=1


def test_max_size_one_keeps_only_the_last_key(make_cache: Any) -> None:
    c = make_cache(policy="lru", max_size=1)
    c.set("a", 1)
    c.set("b", 2)
    assert c.keys() == ["b"]
    assert c.get("a") is None
    assert c.metrics().evictions == 1


def test_max_size_one_overwrite_does_not_evict(make_cache: Any) -> None:
    c = make_cache(policy="lru", max_size=1)
    c.set("a", 1)
    c.set("a", 2)
    c["a"] = 3
    assert c.items() == [("a", 3)]
    assert c.metrics().evictions == 0


def test_max_size_one_replaces_expired_entry_without_eviction(
    make_cache: Any, clock: ManualClock
) -> None:
    c = make_cache(policy="lru", max_size=1, ttl=1)
    c.set("a", 1)
    clock.advance(1)
    c.set("b", 2)
    assert c.keys() == ["b"]
    assert c.metrics().evictions == 0
    assert c.metrics().expirations == 1
