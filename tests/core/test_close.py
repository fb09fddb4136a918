"""close(), the context manager, CacheClosedError and the lifetime of caches."""

from __future__ import annotations

import gc
import operator
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from tests.support.scripts import run_python

from pgcache import Cache, CacheClosedError, ManualClock, PgCacheError


class Payload:
    """A weak-referenceable value."""


def _factory_must_not_run() -> Any:
    raise AssertionError("factory called on a closed cache")


# --------------------------------------------------------------------------- close()


def test_new_cache_is_not_closed() -> None:
    c: Cache[str, int] = Cache()
    try:
        assert c.closed is False
    finally:
        c.close()


def test_close_marks_cache_closed() -> None:
    c: Cache[str, int] = Cache()
    c.close()
    assert c.closed is True


def test_close_is_idempotent() -> None:
    c: Cache[str, int] = Cache()
    c.set("a", 1)
    assert c.close() is None
    assert c.close() is None
    assert c.closed is True


def test_close_drops_every_value() -> None:
    c: Cache[str, Payload] = Cache()
    values = [Payload() for _ in range(10)]
    refs = [weakref.ref(v) for v in values]
    for i, v in enumerate(values):
        c.set(str(i), v)
    del values, v
    assert all(r() is not None for r in refs)
    c.close()
    assert all(r() is None for r in refs)


def test_read_only_properties_remain_readable_after_close() -> None:
    c: Cache[str, int] = Cache(ttl=5, max_size=10, name="plans")
    c.close()
    assert c.ttl == 5.0
    assert c.max_size == 10
    assert c.name == "plans"
    assert c.closed is True


# --------------------------------------------------------------------------- context manager


def test_context_manager_returns_the_cache_and_closes_it_on_exit() -> None:
    with Cache(max_size=3) as c:
        c.set("a", 1)
        assert c.get("a") == 1
        assert c.closed is False
    assert c.closed is True


def test_context_manager_closes_on_exception_and_lets_it_propagate() -> None:
    class BoomError(Exception):
        pass

    cache: Cache[str, int] = Cache()

    def use_and_fail() -> None:
        with cache as c:
            c.set("a", 1)
            raise BoomError

    with pytest.raises(BoomError):
        use_and_fail()
    assert cache.closed is True


def test_enter_returns_the_same_object() -> None:
    cache: Cache[str, int] = Cache()
    with cache as c:
        assert c is cache


# --------------------------------------------------------------------------- CacheClosedError

AFTER_CLOSE: list[tuple[str, Callable[[Any], object]]] = [
    ("get", lambda c: c.get("a")),
    ("get_default", lambda c: c.get("a", 0)),
    ("set", lambda c: c.set("a", 1)),
    ("set_ttl", lambda c: c.set("a", 1, ttl=1)),
    ("delete", lambda c: c.delete("a")),
    ("pop", lambda c: c.pop("a")),
    ("pop_default", lambda c: c.pop("a", None)),
    ("get_many", lambda c: c.get_many(["a"])),
    ("set_many", lambda c: c.set_many({"a": 1})),
    ("get_or_set", lambda c: c.get_or_set("a", _factory_must_not_run)),
    ("keys", lambda c: c.keys()),
    ("values", lambda c: c.values()),
    ("items", lambda c: c.items()),
    ("iter", lambda c: iter(c)),
    ("expire", lambda c: c.expire()),
    ("clear", lambda c: c.clear()),
    ("metrics", lambda c: c.metrics()),
    ("reset_metrics", lambda c: c.reset_metrics()),
    ("getitem", lambda c: operator.getitem(c, "a")),
    ("setitem", lambda c: operator.setitem(c, "a", 1)),
    ("delitem", lambda c: operator.delitem(c, "a")),
    ("contains", lambda c: operator.contains(c, "a")),
    ("len", len),
    ("enter", lambda c: c.__enter__()),
]


@pytest.mark.parametrize(
    "operation", [op for _, op in AFTER_CLOSE], ids=[name for name, _ in AFTER_CLOSE]
)
def test_every_operation_after_close_raises_cache_closed_error(
    operation: Callable[[Any], object],
) -> None:
    c: Cache[str, int] = Cache(ttl=10, clock=ManualClock())
    c.set("a", 1)
    c.close()
    with pytest.raises(CacheClosedError):
        operation(c)


def test_operation_on_closed_cache_can_be_caught_as_pg_cache_error() -> None:
    c: Cache[str, int] = Cache()
    c.close()
    with pytest.raises(PgCacheError):
        c.get("a")


def test_cache_closed_error_hierarchy() -> None:
    assert issubclass(CacheClosedError, PgCacheError)
    assert issubclass(PgCacheError, Exception)
    assert not issubclass(PgCacheError, (RuntimeError, ValueError, KeyError))


# --------------------------------------------------------------------------- lifetime


def test_dropped_cache_releases_its_values(wait_until: Any) -> None:
    c: Cache[int, Payload] | None = Cache(ttl=60, cleanup_interval=0.01)
    assert c is not None
    value = Payload()
    ref = weakref.ref(value)
    c.set(1, value)
    del value
    assert ref() is not None
    c = None
    gc.collect()
    assert wait_until(lambda: ref() is None)


@pytest.mark.slow
def test_many_dropped_caches_release_their_values_and_expiry_keeps_working(
    wait_until: Any,
) -> None:
    refs: list[weakref.ref[Payload]] = []
    for i in range(1000):
        c: Cache[int, Payload] = Cache(ttl=60, cleanup_interval=0.01, clock=ManualClock())
        value = Payload()
        refs.append(weakref.ref(value))
        c.set(i, value)
        del c, value
    gc.collect()
    assert wait_until(lambda: all(r() is None for r in refs))
    _assert_expiry_serves_a_live_cache(wait_until)


@pytest.mark.slow
def test_many_closed_caches_release_their_values_and_expiry_keeps_working(
    wait_until: Any,
) -> None:
    refs: list[weakref.ref[Payload]] = []
    for i in range(1000):
        c: Cache[int, Payload] = Cache(ttl=60, cleanup_interval=0.01, clock=ManualClock())
        value = Payload()
        refs.append(weakref.ref(value))
        c.set(i, value)
        del value
        c.close()
        assert refs[-1]() is None
    _assert_expiry_serves_a_live_cache(wait_until)


def _assert_expiry_serves_a_live_cache(wait_until: Any) -> None:
    """The shared expiry thread still serves a live cache (after many others went away)."""
    clock = ManualClock()
    with Cache(ttl=1, cleanup_interval=0.01, clock=clock) as live:
        live.set("k", Payload())
        clock.advance(1)
        assert wait_until(lambda: live.metrics().expirations == 1), live.metrics().to_dict()


def test_live_caches_do_not_block_interpreter_exit() -> None:
    result = run_python(
        """
        from pgcache import Cache
        caches = [Cache(ttl=1, cleanup_interval=0.01) for _ in range(10)]
        for i, c in enumerate(caches):
            c.set(i, [i])
        print("done")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


def test_value_with_del_does_not_break_interpreter_exit() -> None:
    result = run_python(
        """
        from pgcache import Cache

        class Noisy:
            def __del__(self):
                try:
                    cache.get("other")
                except Exception:
                    pass

        cache = Cache(ttl=1, cleanup_interval=0.01)
        cache.set("k", Noisy())
        print("done")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
