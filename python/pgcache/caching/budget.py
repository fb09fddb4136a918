"""The byte budget of one cache: at most ``max_bytes`` of values, as well as ``max_size`` entries.

A :class:`ByteBudget` is told of every value stored into its cache (by the
:class:`pgcache.caching.tiered.TieredCache` in front of it) after the store, measures it once
(:func:`value_size`) and keeps the sizes of the stored keys in the order they were stored. When
the total passes ``max_bytes``, the oldest-stored entries are deleted from the cache until it
fits again; a single value larger than the whole budget is not kept at all (counted as
``oversized``). Entries that the cache itself evicted or expired still count until the budget
notices they are gone (when their turn comes, or when the records outnumber twice the cache's
``max_size``): the total errs on the high side, never below what the cache holds.

What it deliberately does not do: it does not weigh the Python objects (a value's heap is a
small multiple of its JSON), nor see stores made on the cache directly rather than through its
tiered cache. A weight inside the Rust core (as Caffeine's ``maximumWeight``) would see every
store; this budget lives in Python so that it needs no change of the core.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Any, Final, NamedTuple

from pgcache._core import Cache

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
"""The byte budget of each cache when none is given (``CACHE_MAX_BYTES``): 64 MiB."""

ENTRY_OVERHEAD: Final = 64
"""Bytes counted for each entry on top of its value: its key and the store's own record."""


def value_size(value: object) -> int:
    """How many bytes ``value`` counts for: the length of its JSON (``model_dump_json`` for a
    pydantic model, the length of a str or bytes), plus :data:`ENTRY_OVERHEAD`; a value with
    no JSON form counts its shallow ``sys.getsizeof``."""
    if isinstance(value, str | bytes | bytearray):
        return len(value) + ENTRY_OVERHEAD
    dump = getattr(value, "model_dump_json", None)
    try:
        text: str = dump() if callable(dump) else json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return sys.getsizeof(value) + ENTRY_OVERHEAD
    return len(text) + ENTRY_OVERHEAD


class ByteBudgetMetrics(NamedTuple):
    """One cache's bytes now, its budget, and what the budget removed or refused."""

    bytes: int
    max_bytes: int
    evictions: int
    oversized: int


class ByteBudget:
    """At most ``max_bytes`` of values (:func:`value_size`) in ``cache``; thread-safe.

    ``max_bytes`` is a positive int (``TypeError`` or ``ValueError`` naming it otherwise).
    """

    __slots__ = ("_cache", "_evictions", "_lock", "_oversized", "_record_limit", "_sizes",
                 "_total", "max_bytes")  # fmt: skip

    def __init__(self, cache: Cache[Any, Any], max_bytes: int) -> None:
        if type(max_bytes) is not int:
            raise TypeError(
                f"max_bytes must be an int, got {max_bytes!r} of type {type(max_bytes).__name__}"
            )
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._cache = cache
        self._lock = threading.Lock()
        self._sizes: OrderedDict[Hashable, int] = OrderedDict()
        self._total = 0
        self._evictions = 0
        self._oversized = 0
        # Records of entries the cache dropped on its own are looked for past this many.
        self._record_limit = 2 * cache.max_size if cache.max_size is not None else None

    def __repr__(self) -> str:
        return f"<ByteBudget {self._total}/{self.max_bytes} bytes>"

    def stored(self, items: Iterable[tuple[Hashable, object]]) -> None:
        """Count values just stored into the cache; delete what no longer fits."""
        sized = [(key, value_size(value)) for key, value in items]
        doomed: list[Hashable] = []
        with self._lock:
            for key, size in sized:
                self._total -= self._sizes.pop(key, 0)
                if size > self.max_bytes:
                    self._oversized += 1
                    doomed.append(key)
                    continue
                self._sizes[key] = size
                self._total += size
            if self._record_limit is not None and len(self._sizes) > self._record_limit:
                older = list(self._sizes)
                self._drop_records(older[: len(older) - len(sized)])
            victims = []
            while self._total > self.max_bytes:
                victim, size = self._sizes.popitem(last=False)
                self._total -= size
                victims.append(victim)
        # Deleted outside the lock: dropping a value may run Python code (its __del__).
        for key in doomed:
            self._cache.delete(key)
        evicted = sum(self._cache.delete(victim) for victim in victims)
        if evicted:
            with self._lock:
                self._evictions += evicted

    def _drop_records(self, keys: list[Hashable]) -> None:
        """Forget the records among ``keys`` whose entries the cache no longer holds (the keys
        just stored are left out: another thread may be storing them right now)."""
        for key in keys:
            if key not in self._cache:
                self._total -= self._sizes.pop(key)

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Stop counting ``keys`` (deleted from the cache)."""
        with self._lock:
            for key in keys:
                self._total -= self._sizes.pop(key, 0)

    def clear(self) -> None:
        """Stop counting everything (the cache was emptied)."""
        with self._lock:
            self._sizes.clear()
            self._total = 0

    def metrics(self) -> ByteBudgetMetrics:
        """The bytes counted now, the budget, evictions and refusals since the start."""
        with self._lock:
            return ByteBudgetMetrics(self._total, self.max_bytes, self._evictions, self._oversized)
