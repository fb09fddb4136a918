"""A cache takes part in garbage collection, as a dict does.

Cycles through a cache (owner -> cache -> value -> owner) are collected by ``gc.collect()``;
the values of a live cache are never collected, not even while the background thread
sweeps it or another thread holds its lock in a key's ``__eq__``.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from tests.support.scripts import SLOW_KEY, run_python

from pgcache import Cache, ManualClock


class Owner:
    """An object that owns a cache in which it stores itself."""

    def __init__(self) -> None:
        self.cache: Cache[str, Any] = Cache(clock=ManualClock(), cleanup_interval=3600.0)


def test_owner_cache_value_owner_cycle_is_collected() -> None:
    owner = Owner()
    owner.cache.set("self", owner)
    owner_ref, cache_ref = weakref.ref(owner), weakref.ref(owner.cache)
    del owner
    gc.collect()
    assert owner_ref() is None
    assert cache_ref() is None


def test_a_cycle_through_a_key_is_collected() -> None:
    owner = Owner()
    owner.cache.set(("owner", owner), 1)  # type: ignore[arg-type]
    owner_ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert owner_ref() is None


def test_a_cache_stored_in_itself_is_collected() -> None:
    c: Cache[str, Any] = Cache()
    c.set("me", c)
    cache_ref = weakref.ref(c)
    del c
    gc.collect()
    assert cache_ref() is None


def test_many_owner_cycles_are_all_collected() -> None:
    refs = []
    for _ in range(200):
        owner = Owner()
        owner.cache.set("self", owner)
        owner.cache.set("payload", bytearray(1024))
        refs.append(weakref.ref(owner))
    del owner
    gc.collect()
    assert [r for r in refs if r() is not None] == []


def test_a_collected_cache_releases_values_whose_del_uses_another_cache() -> None:
    other: Cache[str, str] = Cache()
    other["probe"] = "present"
    seen: list[str | None] = []

    class Value:
        def __init__(self, owner: Owner) -> None:
            self.owner = owner

        def __del__(self) -> None:
            seen.append(other.get("probe"))

    owner = Owner()
    owner.cache.set("value", Value(owner))
    del owner
    gc.collect()
    assert seen == ["present"]
    other.close()


def test_values_of_a_live_cache_survive_collection_intact() -> None:
    with Cache[str, list[Any]](clock=ManualClock(), cleanup_interval=3600.0) as c:
        for i in range(100):
            value: list[Any] = [i]
            value.append(value)  # a cycle only the cache keeps alive
            c.set(str(i), value)
        del value
        gc.collect()
        for i in range(100):
            kept = c.get(str(i))
            assert kept is not None
            assert kept[0] == i
            assert kept[1] is kept


def test_gc_get_referents_lists_every_key_value_and_loading_key() -> None:
    key, value, loading = ("k",), ["v"], ("loading",)
    with Cache[Any, Any](clock=ManualClock(), cleanup_interval=3600.0) as c:
        c.set(key, value)
        referents: list[Any] = []

        def factory() -> str:
            referents.extend(gc.get_referents(c))
            return "loaded"

        c.get_or_set(loading, factory)
        assert any(r is key for r in referents)
        assert any(r is value for r in referents)
        assert any(r is loading for r in referents)


def test_an_expired_entry_not_yet_removed_is_still_reported() -> None:
    clock = ManualClock()
    with Cache[str, Any](ttl=1, clock=clock, cleanup_interval=3600.0) as c:
        value = ["expired but stored"]
        c.set("k", value)
        clock.advance(5)
        assert any(r is value for r in gc.get_referents(c))


@pytest.mark.timeout(330)
def test_collections_during_background_sweeps_never_free_cached_values() -> None:
    # The sweep changes the store without the interpreter while a collection may be
    # running: every cached value must stay reachable through its cache. In a process of its
    # own: in the suite's process each full collection walks the whole suite's heap, and with
    # a sweep every millisecond taking the interpreter back and forth, 60 of them once ran
    # past a minute at a load average of 13 (gdb: the collector working, no thread waiting
    # on a lock).
    result = run_python(
        """
        import gc
        from pgcache import Cache

        with Cache(ttl=0.002, cleanup_interval=0.001, max_size=None) as c:
            keep = []
            for round_ in range(60):
                for i in range(200):
                    key = round_ * 1000 + i
                    value = [key]
                    value.append(value)
                    if i % 4 == 0:
                        c.set(key, value, ttl=3600)
                        keep.append(key)
                    else:
                        c.set(key, value)  # expires in 2 ms: swept while we collect
                del value
                gc.collect()
            lost = [k for k in keep if (v := c.get(k)) is None or v[0] != k or v[1] is not v]
            print("kept", len(keep), "lost", lost, flush=True)
        """,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["kept 3000 lost []"]


def test_a_collection_while_another_thread_holds_the_lock_in_eq_does_not_wait() -> None:
    result = run_python(
        """
        import gc, threading, weakref
        from pgcache import Cache

        cache = Cache()

        class Value(list):
            pass

        value = Value(["cached"])
        value.append(value)
        cache[Key()] = value
        value_ref = weakref.ref(value)
        del value
        slow = True
        worker = threading.Thread(target=lambda: cache.get(Key()))
        worker.start()
        inside.wait()
        gc.collect()                  # must not wait for the lock
        print("collected while held", value_ref() is not None, flush=True)
        leave.set()
        worker.join()
        slow = False
        gc.collect()
        print("still cached", value_ref() is not None and len(cache) == 1, flush=True)
        """,
        prelude=SLOW_KEY,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["collected while held True", "still cached True"]
