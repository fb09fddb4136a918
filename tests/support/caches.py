"""Fixtures for tests of the cache itself (a pytest plugin, loaded by tests/conftest.py).

* ``clock``: a fresh :class:`pgcache.ManualClock` starting at 0.0.
* ``make_cache``: builds caches (by default on the ``clock`` fixture and with a cleanup
  interval of one hour, so the shared background expiry thread never interferes with
  deterministic tests) and closes every one of them at teardown.
* ``make_manager``: the same for :class:`pgcache.CacheManager`.
* ``wait_until``: polls a predicate until it holds or a deadline passes (for behaviour of the
  background thread; tests never assert on elapsed time).
* :func:`double_and_triple`: two functions ``@cached`` in one cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from pgcache import Cache, CacheManager, ManualClock
from pgcache.caching.cached import CachedFunction, cached

WaitUntil = Callable[..., bool]
MakeCache = Callable[..., "Cache[Any, Any]"]
MakeManager = Callable[..., CacheManager]
_T = TypeVar("_T")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _on_test_clock(factory: Callable[..., _T], clock: ManualClock) -> Iterator[Callable[..., _T]]:
    """``factory`` with the test clock and an hour-long cleanup interval by default; everything
    it made is closed at teardown."""
    created: list[_T] = []

    def make(**kwargs: Any) -> _T:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("cleanup_interval", 3600.0)
        made = factory(**kwargs)
        created.append(made)
        return made

    yield make
    for made in created:
        made.close()  # type: ignore[attr-defined]


@pytest.fixture
def make_cache(clock: ManualClock) -> Iterator[MakeCache]:
    yield from _on_test_clock(Cache, clock)


@pytest.fixture
def make_manager(clock: ManualClock) -> Iterator[MakeManager]:
    yield from _on_test_clock(CacheManager, clock)


def _wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(interval)


@pytest.fixture
def wait_until() -> WaitUntil:
    return _wait_until


def double_and_triple(
    cache: Cache[Any, Any],
) -> tuple[CachedFunction[[int], int], CachedFunction[[int], int]]:
    """``double`` and ``triple`` of an int, both ``@cached`` in ``cache``."""

    @cached(cache)
    def double(x: int) -> int:
        return 2 * x

    @cached(cache)
    def triple(x: int) -> int:
        return 3 * x

    return double, triple
