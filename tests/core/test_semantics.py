"""Basic mapping semantics of pgcache.Cache (no TTL, no eviction involved)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pgcache import Cache, ManualClock

MISSING = object()


class CaseInsensitiveKey:
    """Equal (and same hash) when the lower-cased texts are equal."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __hash__(self) -> int:
        return hash(self.text.lower())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CaseInsensitiveKey) and self.text.lower() == other.text.lower()

    def __repr__(self) -> str:
        return f"CaseInsensitiveKey({self.text!r})"


class CollidingKey:
    """Every instance has the same hash; equality is by ``n``; counts ``__eq__`` calls."""

    eq_calls = 0

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return 12345

    def __eq__(self, other: object) -> bool:
        type(self).eq_calls += 1
        return isinstance(other, CollidingKey) and self.n == other.n

    def __repr__(self) -> str:
        return f"CollidingKey({self.n})"


# --------------------------------------------------------------------------- construction


def test_constructor_defaults() -> None:
    with Cache() as c:
        assert c.ttl is None
        assert c.max_size == 10_000
        assert c.cleanup_interval == 1.0
        assert c.name is None
        assert c.closed is False
        assert len(c) == 0


def test_constructor_accepts_positional_arguments() -> None:
    clock = ManualClock()
    with Cache(5.0, 100, 0.5, clock, "features") as c:
        assert c.ttl == 5.0
        assert c.max_size == 100
        assert c.cleanup_interval == 0.5
        assert c.name == "features"


def test_constructor_accepts_timedelta_durations_and_reports_seconds() -> None:
    with Cache(ttl=timedelta(minutes=15), cleanup_interval=timedelta(milliseconds=250)) as c:
        assert c.ttl == 900.0
        assert isinstance(c.ttl, float)
        assert c.cleanup_interval == 0.25


def test_ttl_property_is_float_seconds_for_int_argument() -> None:
    with Cache(ttl=5) as c:
        assert c.ttl == 5.0
        assert isinstance(c.ttl, float)


# --------------------------------------------------------------------------- get / set


def test_get_returns_stored_value_object(make_cache: Any) -> None:
    c = make_cache()
    value = ["payload"]
    c.set("k", value)
    assert c.get("k") is value


def test_get_missing_key_returns_none_by_default(make_cache: Any) -> None:
    c = make_cache()
    assert c.get("absent") is None


def test_get_missing_key_returns_given_default(make_cache: Any) -> None:
    c = make_cache()
    default = object()
    assert c.get("absent", default) is default


def test_get_takes_default_positionally_like_dict_get(make_cache: Any) -> None:
    c = make_cache()
    assert c.get("absent", 7) == 7
    with pytest.raises(TypeError):
        c.get("absent", default=7)


def test_set_overwrites_existing_value(make_cache: Any) -> None:
    c = make_cache()
    c.set("k", 1)
    c.set("k", 2)
    assert c.get("k") == 2
    assert len(c) == 1


def test_set_returns_none(make_cache: Any) -> None:
    c = make_cache()
    assert c.set("k", 1) is None


def test_setitem_stores_value(make_cache: Any) -> None:
    c = make_cache()
    c["k"] = "v"
    assert c.get("k") == "v"


def test_getitem_returns_value(make_cache: Any) -> None:
    c = make_cache()
    c.set("k", "v")
    assert c["k"] == "v"


def test_getitem_missing_key_raises_key_error(make_cache: Any) -> None:
    c = make_cache()
    with pytest.raises(KeyError):
        _ = c["absent"]


# --------------------------------------------------------------------------- delete / pop / del


def test_delete_live_entry_returns_true_and_removes_it(make_cache: Any) -> None:
    c = make_cache()
    c.set("k", 1)
    assert c.delete("k") is True
    assert "k" not in c
    assert len(c) == 0


def test_delete_missing_key_returns_false(make_cache: Any) -> None:
    c = make_cache()
    c.set("other", 1)
    assert c.delete("absent") is False
    assert c.keys() == ["other"]


def test_pop_returns_value_and_removes_entry(make_cache: Any) -> None:
    c = make_cache()
    value = object()
    c.set("k", value)
    assert c.pop("k") is value
    assert "k" not in c


def test_pop_present_key_ignores_default(make_cache: Any) -> None:
    c = make_cache()
    c.set("k", 1)
    assert c.pop("k", 99) == 1


def test_pop_missing_key_with_default_returns_default(make_cache: Any) -> None:
    c = make_cache()
    default = object()
    assert c.pop("absent", default) is default


def test_pop_missing_key_with_none_default_returns_none(make_cache: Any) -> None:
    c = make_cache()
    assert c.pop("absent", None) is None


def test_pop_missing_key_without_default_raises_key_error(make_cache: Any) -> None:
    c = make_cache()
    with pytest.raises(KeyError):
        c.pop("absent")


def test_delitem_removes_entry(make_cache: Any) -> None:
    c = make_cache()
    c["k"] = 1
    del c["k"]
    assert "k" not in c
    assert len(c) == 0


def test_delitem_missing_key_raises_key_error(make_cache: Any) -> None:
    c = make_cache()
    with pytest.raises(KeyError):
        del c["absent"]


# --------------------------------------------------------------------------- in / len


def test_contains_reports_live_entries_only(make_cache: Any) -> None:
    c = make_cache()
    c.set("k", 1)
    assert "k" in c
    assert "absent" not in c


def test_len_counts_stored_entries(make_cache: Any) -> None:
    c = make_cache()
    assert len(c) == 0
    for i in range(5):
        c.set(i, i)
    assert len(c) == 5
    c.delete(0)
    assert len(c) == 4


# --------------------------------------------------------------------------- bulk operations


def test_get_many_returns_dict_of_hits_only(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    c.set("b", 2)
    assert c.get_many(["a", "absent", "b"]) == {"a": 1, "b": 2}


def test_get_many_of_no_keys_returns_empty_dict(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    assert c.get_many([]) == {}


def test_get_many_accepts_any_iterable(make_cache: Any) -> None:
    c = make_cache()
    c.set_many({"a": 1, "b": 2, "c": 3})
    assert c.get_many(k for k in "ab") == {"a": 1, "b": 2}
    assert c.get_many(("c",)) == {"c": 3}


def test_get_many_returns_value_objects(make_cache: Any) -> None:
    c = make_cache()
    value = ["v"]
    c.set("a", value)
    assert c.get_many(["a"])["a"] is value


def test_set_many_accepts_mapping(make_cache: Any) -> None:
    c = make_cache()
    c.set_many({"a": 1, "b": 2})
    assert c.get("a") == 1
    assert c.get("b") == 2


def test_set_many_accepts_iterable_of_pairs(make_cache: Any) -> None:
    c = make_cache()
    c.set_many([("a", 1), ("b", 2)])
    c.set_many((k, v) for k, v in [("c", 3)])
    assert c.get_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}


def test_set_many_stores_pairs_in_order_so_last_duplicate_wins(make_cache: Any) -> None:
    c = make_cache()
    c.set_many([("a", 1), ("b", 2), ("a", 3)])
    assert c.get("a") == 3
    assert len(c) == 2


# --------------------------------------------------------------------------- views


def test_keys_values_items_return_lists(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    assert type(c.keys()) is list
    assert type(c.values()) is list
    assert type(c.items()) is list
    assert c.items() == [("a", 1)]


def test_views_are_snapshots_unaffected_by_later_changes(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    keys, values, items = c.keys(), c.values(), c.items()
    c.set("b", 2)
    c.delete("a")
    assert keys == ["a"]
    assert values == [1]
    assert items == [("a", 1)]


def test_views_of_empty_cache_are_empty(make_cache: Any) -> None:
    c = make_cache()
    assert c.keys() == []
    assert c.values() == []
    assert c.items() == []
    assert list(c) == []


def test_values_and_items_are_consistent_with_keys(make_cache: Any) -> None:
    c = make_cache()
    for i in range(10):
        c.set(i, i * 10)
    keys = c.keys()
    assert c.values() == [k * 10 for k in keys]
    assert c.items() == [(k, k * 10) for k in keys]


def test_iter_iterates_over_keys(make_cache: Any) -> None:
    c = make_cache()
    for i in range(5):
        c.set(i, str(i))
    assert list(iter(c)) == c.keys()
    assert sorted(c) == [0, 1, 2, 3, 4]


def test_iter_is_a_snapshot_safe_against_mutation(make_cache: Any) -> None:
    c = make_cache()
    for i in range(5):
        c.set(i, i)
    seen = []
    for k in c:
        seen.append(k)
        c.delete(k)
        c.set(k + 100, k)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert sorted(c.keys()) == [100, 101, 102, 103, 104]


# --------------------------------------------------------------------------- clear


def test_clear_removes_every_entry(make_cache: Any) -> None:
    c = make_cache()
    c.set_many({i: i for i in range(10)})
    c.clear()
    assert len(c) == 0
    assert c.keys() == []
    assert 3 not in c


def test_cache_is_usable_after_clear(make_cache: Any) -> None:
    c = make_cache()
    c.set("a", 1)
    c.clear()
    c.set("a", 2)
    assert c.get("a") == 2


# --------------------------------------------------------------------------- None values


def test_none_value_is_stored_and_distinct_from_missing(make_cache: Any) -> None:
    c = make_cache()
    c.set("k", None)
    assert "k" in c
    assert len(c) == 1
    assert c.get("k", MISSING) is None
    assert c["k"] is None
    assert c.get_many(["k"]) == {"k": None}
    assert c.items() == [("k", None)]


def test_none_value_lookup_counts_as_hit(make_cache: Any) -> None:
    c = make_cache()
    c.set("k", None)
    c.get("k")
    assert c.metrics().hits == 1
    assert c.metrics().misses == 0


def test_pop_of_none_value_returns_none_and_removes(make_cache: Any) -> None:
    c = make_cache()
    c.set("k", None)
    assert c.pop("k", MISSING) is None
    assert "k" not in c


def test_get_or_set_returns_stored_none_without_calling_factory(make_cache: Any) -> None:
    c = make_cache()
    c.set("k", None)
    calls = []
    assert c.get_or_set("k", lambda: calls.append(1) or "new") is None
    assert calls == []


# --------------------------------------------------------------------------- key semantics


def test_int_float_and_bool_equal_values_are_one_key(make_cache: Any) -> None:
    c = make_cache()
    c.set(1, "one")
    assert c.get(1.0) == "one"
    assert c.get(True) == "one"
    assert 1.0 in c
    c.set(True, "true")
    c.set(1.0, "float")
    assert len(c) == 1
    assert c[1] == "float"


def test_zero_false_and_zero_float_are_one_key(make_cache: Any) -> None:
    c = make_cache()
    c.set(False, "f")
    assert c.get(0) == "f"
    assert c.get(0.0) == "f"
    assert c.delete(0) is True
    assert len(c) == 0


def test_overwrite_keeps_original_key_object(make_cache: Any) -> None:
    c = make_cache()
    c.set(1, "a")
    c.set(1.0, "b")
    c.set(True, "c")
    [key] = c.keys()
    assert type(key) is int
    assert c.items() == [(1, "c")]


def test_overwrite_with_equal_custom_key_keeps_original_key_object(make_cache: Any) -> None:
    c = make_cache()
    first = CaseInsensitiveKey("Select")
    second = CaseInsensitiveKey("SELECT")
    c.set(first, 1)
    c.set(second, 2)
    [key] = c.keys()
    assert key is first
    assert c.get(CaseInsensitiveKey("select")) == 2


def test_set_many_overwrite_keeps_original_key_object(make_cache: Any) -> None:
    c = make_cache()
    first = CaseInsensitiveKey("a")
    c.set(first, 1)
    c.set_many([(CaseInsensitiveKey("A"), 2)])
    assert c.keys()[0] is first
    assert c.get(first) == 2


def test_custom_hash_and_eq_define_key_identity(make_cache: Any) -> None:
    c = make_cache()
    c.set(CaseInsensitiveKey("Query"), "plan")
    assert c.get(CaseInsensitiveKey("QUERY")) == "plan"
    assert CaseInsensitiveKey("query") in c
    assert c.get(CaseInsensitiveKey("other")) is None
    assert c.pop(CaseInsensitiveKey("qUeRy")) == "plan"
    assert len(c) == 0


def test_keys_with_equal_hash_but_unequal_are_distinct(make_cache: Any) -> None:
    c = make_cache()
    for n in range(20):
        c.set(CollidingKey(n), n)
    assert len(c) == 20
    for n in range(20):
        assert c.get(CollidingKey(n)) == n
    assert c.delete(CollidingKey(7)) is True
    assert CollidingKey(7) not in c
    assert c.get(CollidingKey(8)) == 8


def test_identical_key_object_is_found_without_calling_eq(make_cache: Any) -> None:
    c = make_cache()
    key = CollidingKey(1)
    c.set(key, "v")
    CollidingKey.eq_calls = 0
    assert c.get(key) == "v"
    assert key in c
    assert CollidingKey.eq_calls == 0


def test_identity_is_checked_before_equality_for_nan(make_cache: Any) -> None:
    c = make_cache()
    nan = float("nan")
    c.set(nan, "same object")
    assert c.get(nan) == "same object"
    assert nan in c
    assert c.get(float("nan")) is None
    assert float("nan") not in c


def test_tuple_and_string_keys_follow_equality(make_cache: Any) -> None:
    c = make_cache()
    c.set(("select", 1), "a")
    c.set("".join(["sel", "ect"]), "b")
    assert c.get(("select", 1)) == "a"
    assert c.get("select") == "b"
    assert len(c) == 2


# --------------------------------------------------------------------------- get_or_set


def test_get_or_set_hit_returns_value_without_calling_factory(make_cache: Any) -> None:
    c = make_cache()
    value = object()
    c.set("k", value)
    calls: list[int] = []

    def factory() -> object:
        calls.append(1)
        return "new"

    assert c.get_or_set("k", factory) is value
    assert calls == []


def test_get_or_set_miss_calls_factory_once_and_stores_its_result(make_cache: Any) -> None:
    c = make_cache()
    value = ["computed"]
    calls: list[int] = []

    def factory() -> list[str]:
        calls.append(1)
        return value

    assert c.get_or_set("k", factory) is value
    assert calls == [1]
    assert c.get("k") is value
    assert c.get_or_set("k", factory) is value
    assert calls == [1]


def test_get_or_set_factory_is_called_without_arguments(make_cache: Any) -> None:
    c = make_cache()
    received: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def factory(*args: Any, **kwargs: Any) -> int:
        received.append((args, kwargs))
        return 1

    c.get_or_set("k", factory)
    assert received == [((), {})]


def test_get_or_set_factory_exception_propagates_and_stores_nothing(make_cache: Any) -> None:
    c = make_cache()

    class LoadError(Exception):
        pass

    def factory() -> int:
        raise LoadError("backend down")

    with pytest.raises(LoadError, match="backend down"):
        c.get_or_set("k", factory)
    assert "k" not in c
    assert len(c) == 0
    assert c.get_or_set("k", lambda: 5) == 5


def test_get_or_set_factory_reentering_for_same_key_raises_runtime_error(
    make_cache: Any,
) -> None:
    c = make_cache()

    def factory() -> int:
        return int(c.get_or_set("k", lambda: 2))

    with pytest.raises(RuntimeError):
        c.get_or_set("k", factory)
    assert "k" not in c
    # No stale "in flight" marker is left behind.
    assert c.get_or_set("k", lambda: 3) == 3


def test_get_or_set_reentry_error_is_raised_inside_the_factory(make_cache: Any) -> None:
    c = make_cache()
    seen: list[BaseException] = []

    def factory() -> str:
        try:
            c.get_or_set("k", lambda: "inner")
        except RuntimeError as exc:
            seen.append(exc)
        return "outer"

    assert c.get_or_set("k", factory) == "outer"
    assert len(seen) == 1
    assert isinstance(seen[0], RuntimeError)
    assert c.get("k") == "outer"


def test_get_or_set_factory_may_use_the_cache_for_other_keys(make_cache: Any) -> None:
    c = make_cache()

    def factory() -> int:
        c.set("side", 1)
        return int(c.get_or_set("other", lambda: 41)) + 1

    assert c.get_or_set("k", factory) == 42
    assert c.get_many(["k", "other", "side"]) == {"k": 42, "other": 41, "side": 1}
