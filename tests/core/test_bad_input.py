"""Bad input: one clear error, and the cache is left exactly as it was."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from pgcache import Cache, ManualClock


class EqError(Exception):
    pass


class HashError(Exception):
    pass


class ExplosiveKey:
    """Same hash for every instance; ``==`` raises when either side is armed."""

    def __init__(self, n: int, armed: bool) -> None:
        self.n = n
        self.armed = armed

    def __hash__(self) -> int:
        return 99

    def __eq__(self, other: object) -> bool:
        if self.armed or getattr(other, "armed", False):
            raise EqError("comparison failed")
        return isinstance(other, ExplosiveKey) and self.n == other.n


class UnhashableByHashError:
    def __hash__(self) -> int:
        raise HashError("no hash for you")


def _factory_must_not_run() -> Any:
    raise AssertionError("factory called for a bad key")


KEY_OPERATIONS: list[tuple[str, Callable[[Any, Any], object]]] = [
    ("get", lambda c, k: c.get(k)),
    ("get_default", lambda c, k: c.get(k, 0)),
    ("getitem", operator.getitem),
    ("set", lambda c, k: c.set(k, 1)),
    ("set_ttl", lambda c, k: c.set(k, 1, ttl=5)),
    ("setitem", lambda c, k: operator.setitem(c, k, 1)),
    ("delete", lambda c, k: c.delete(k)),
    ("delitem", operator.delitem),
    ("pop", lambda c, k: c.pop(k)),
    ("pop_default", lambda c, k: c.pop(k, None)),
    ("contains", operator.contains),
    ("get_many", lambda c, k: c.get_many([k])),
    ("get_many_first", lambda c, k: c.get_many([k, "a"])),
    ("set_many_pairs", lambda c, k: c.set_many([(k, 1)])),
    ("set_many_first_pair", lambda c, k: c.set_many([(k, 1), ("z", 2)])),
    ("get_or_set", lambda c, k: c.get_or_set(k, _factory_must_not_run)),
]
OPERATION_IDS = [name for name, _ in KEY_OPERATIONS]
OPERATIONS = [op for _, op in KEY_OPERATIONS]


def snapshot(c: Any) -> tuple[Any, ...]:
    m = c.metrics()
    return (c.items(), len(c), m.hits, m.misses, m.evictions, m.expirations, m.size)


@pytest.fixture
def filled(make_cache: Any) -> Any:
    c = make_cache(max_size=10, ttl=100)
    c.set("a", 1)
    c.set("b", 2)
    c.set(ExplosiveKey(1, armed=False), "one")
    c.get("a")
    return c


# --------------------------------------------------------------------------- unhashable keys


@pytest.mark.parametrize("operation", OPERATIONS, ids=OPERATION_IDS)
@pytest.mark.parametrize(
    ("key", "type_name"),
    [([1, 2], "list"), ({"x": 1}, "dict"), ({1}, "set")],
    ids=["list", "dict", "set"],
)
def test_unhashable_key_raises_type_error_and_changes_nothing(
    filled: Any, operation: Callable[[Any, Any], object], key: Any, type_name: str
) -> None:
    before = snapshot(filled)
    with pytest.raises(TypeError, match=type_name):
        operation(filled, key)
    assert snapshot(filled) == before


def test_get_many_with_a_later_unhashable_key_changes_nothing(filled: Any) -> None:
    before = snapshot(filled)
    with pytest.raises(TypeError, match="list"):
        filled.get_many(["b", "absent", []])
    assert snapshot(filled) == before


@pytest.mark.parametrize("operation", OPERATIONS, ids=OPERATION_IDS)
def test_key_hash_exception_propagates_and_changes_nothing(
    filled: Any, operation: Callable[[Any, Any], object]
) -> None:
    before = snapshot(filled)
    with pytest.raises(HashError, match="no hash for you"):
        operation(filled, UnhashableByHashError())
    assert snapshot(filled) == before


# --------------------------------------------------------------------------- raising __eq__


@pytest.mark.parametrize("operation", OPERATIONS, ids=OPERATION_IDS)
def test_key_eq_exception_propagates_and_changes_nothing(
    filled: Any, operation: Callable[[Any, Any], object]
) -> None:
    before = snapshot(filled)
    with pytest.raises(EqError, match="comparison failed"):
        operation(filled, ExplosiveKey(2, armed=True))
    assert snapshot(filled) == before


def test_cache_still_works_after_key_eq_exception(filled: Any) -> None:
    with pytest.raises(EqError):
        filled.set(ExplosiveKey(2, armed=True), "two")
    filled.set(ExplosiveKey(3, armed=False), "three")
    assert filled.get(ExplosiveKey(3, armed=False)) == "three"
    assert filled.get(ExplosiveKey(1, armed=False)) == "one"


# --------------------------------------------------------------------------- constructor values

BAD_DURATIONS = [
    0,
    0.0,
    -1,
    -0.5,
    math.nan,
    math.inf,
    -math.inf,
    timedelta(0),
    timedelta(seconds=-1),
]
BAD_DURATION_IDS = ["0", "0.0", "-1", "-0.5", "nan", "inf", "-inf", "td0", "td-1"]


@pytest.mark.parametrize("ttl", BAD_DURATIONS, ids=BAD_DURATION_IDS)
def test_constructor_rejects_bad_ttl_with_value_error_naming_ttl(ttl: Any) -> None:
    with pytest.raises(ValueError, match="ttl"):
        Cache(ttl=ttl)


@pytest.mark.parametrize("max_size", [0, -1, -(10**6)])
def test_constructor_rejects_max_size_below_one_naming_max_size(max_size: int) -> None:
    with pytest.raises(ValueError, match="max_size"):
        Cache(max_size=max_size)


@pytest.mark.parametrize("interval", BAD_DURATIONS, ids=BAD_DURATION_IDS)
def test_constructor_rejects_bad_cleanup_interval_naming_it(interval: Any) -> None:
    with pytest.raises(ValueError, match="cleanup_interval"):
        Cache(cleanup_interval=interval)


def test_constructor_accepts_smallest_valid_values() -> None:
    with Cache(ttl=1e-9, max_size=1, cleanup_interval=1e-3) as c:
        assert c.max_size == 1
        assert c.ttl is not None
        assert c.ttl > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl": "5"},
        {"ttl": [5]},
        {"max_size": 1.5},
        {"max_size": "10"},
        {"cleanup_interval": "1"},
        {"clock": object()},
        {"clock": 0.0},
        {"name": 3},
        {"name": b"bytes"},
    ],
    ids=[
        "ttl-str",
        "ttl-list",
        "max_size-float",
        "max_size-str",
        "cleanup_interval-str",
        "clock-object",
        "clock-float",
        "name-int",
        "name-bytes",
    ],
)
def test_constructor_rejects_wrong_types_with_type_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        Cache(**kwargs)


# --------------------------------------------------------------------------- per-call ttl

PER_CALL = [
    ("set_new", lambda c, ttl: c.set("new", 1, ttl=ttl)),
    ("set_existing", lambda c, ttl: c.set("b", 99, ttl=ttl)),
    ("set_many", lambda c, ttl: c.set_many({"new": 1, "b": 99}, ttl=ttl)),
    ("get_or_set", lambda c, ttl: c.get_or_set("new", lambda: 1, ttl=ttl)),
]


@pytest.mark.parametrize("call", [op for _, op in PER_CALL], ids=[n for n, _ in PER_CALL])
@pytest.mark.parametrize("ttl", BAD_DURATIONS, ids=BAD_DURATION_IDS)
def test_per_call_bad_ttl_raises_value_error_naming_ttl_and_changes_nothing(
    filled: Any, call: Callable[[Any, Any], object], ttl: Any
) -> None:
    before = snapshot(filled)
    with pytest.raises(ValueError, match="ttl"):
        call(filled, ttl)
    assert snapshot(filled) == before


@pytest.mark.parametrize("call", [op for _, op in PER_CALL], ids=[n for n, _ in PER_CALL])
@pytest.mark.parametrize("ttl", ["5", [5], object()], ids=["str", "list", "object"])
def test_per_call_ttl_of_wrong_type_raises_type_error_and_changes_nothing(
    filled: Any, call: Callable[[Any, Any], object], ttl: Any
) -> None:
    before = snapshot(filled)
    with pytest.raises(TypeError):
        call(filled, ttl)
    assert snapshot(filled) == before


# --------------------------------------------------------------------------- other arguments


def test_get_many_of_non_iterable_raises_type_error(filled: Any) -> None:
    before = snapshot(filled)
    with pytest.raises(TypeError):
        filled.get_many(5)
    assert snapshot(filled) == before


def test_set_many_of_non_iterable_raises_type_error(filled: Any) -> None:
    before = snapshot(filled)
    with pytest.raises(TypeError):
        filled.set_many(5)
    assert snapshot(filled) == before


def test_get_or_set_with_non_callable_factory_raises_type_error_and_stores_nothing(
    filled: Any,
) -> None:
    with pytest.raises(TypeError):
        filled.get_or_set("new", 5)
    assert "new" not in filled


# --------------------------------------------------------------------------- ManualClock


@pytest.mark.parametrize("seconds", [-1, -1e-9, timedelta(seconds=-1)], ids=["-1", "-1ns", "td"])
def test_manual_clock_rejects_negative_advance_and_keeps_time(seconds: Any) -> None:
    clock = ManualClock(10.0)
    # The spec fixes the exception type, not its message.
    with pytest.raises(ValueError):  # noqa: PT011
        clock.advance(seconds)
    assert clock.now() == 10.0


def test_manual_clock_advance_of_wrong_type_raises_type_error() -> None:
    clock = ManualClock()
    with pytest.raises(TypeError):
        clock.advance("1")
    assert clock.now() == 0.0
