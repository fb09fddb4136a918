"""What a function cached by :func:`pgcache.cached` counts: its calls (bumped by the native
``__call__``) and loads (calls that ran the function), from which ``cache_info()`` reports hits
and misses. It does not count anything itself: the callers bump the counters."""

from __future__ import annotations

import itertools
from typing import NamedTuple

from pgcache._core import CallCounter


class CacheInfo(NamedTuple):
    """What ``cache_info()`` returns: the fields of :func:`functools.lru_cache`'s ``CacheInfo``.

    ``hits`` and ``misses`` count calls since decoration or the last ``cache_clear()`` (a miss
    ran the function); ``maxsize`` is the cache's ``max_size`` (None: unbounded); ``currsize``
    the number of the function's results stored now, None when they cannot be told apart.
    """

    hits: int
    misses: int
    maxsize: int | None
    currsize: int | None


def _read(counter: itertools.count[int]) -> int:
    # itertools.count has no reader; its repr is "count(N)" (its pickling is deprecated).
    return int(repr(counter)[6:-1])


class CallCounts:
    """Calls and loads (calls that ran the function) of one function in one cache."""

    __slots__ = ("calls", "cleared", "loads")

    def __init__(self) -> None:
        self.calls = CallCounter()  # bumped by the native __call__
        self.loads = itertools.count()
        self.cleared = (0, 0)  # the readings at the last cache_clear()

    def hits_and_misses(self) -> tuple[int, int]:
        loads = _read(self.loads) - self.cleared[1]
        calls = self.calls.value - self.cleared[0]
        # A call counted before a concurrent cache_clear() may load after it.
        return max(calls - loads, 0), loads

    def reset(self) -> None:
        self.cleared = (self.calls.value, _read(self.loads))
