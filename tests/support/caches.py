"""Fixtures for tests of the cache itself (a pytest plugin, loaded by tests/conftest.py).

* ``clock``: a fresh :class:`pgcache.ManualClock` starting at 0.0.
* ``make_cache``: builds caches (by default on the ``clock`` fixture and with a cleanup
  interval of one hour, so the shared background expiry thread never interferes with
  deterministic tests) and closes every one of them at teardown.
* ``wait_until``: polls a predicate until it holds or a deadline passes (for behaviour of the
  background thread; tests never assert on elapsed time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgcache import Cache, ManualClock

WaitUntil = Callable[..., bool]
MakeCache = Callable[..., "Cache[Any, Any]"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_cache(clock: ManualClock) -> Iterator[MakeCache]:
    created: list[Cache[Any, Any]] = []

    def make(**kwargs: Any) -> Cache[Any, Any]:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("cleanup_interval", 3600.0)
        cache: Cache[Any, Any] = Cache(**kwargs)
        created.append(cache)
        return cache

    yield make
    for cache in created:
        cache.close()


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
