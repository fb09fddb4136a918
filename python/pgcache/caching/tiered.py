"""The two-tier cache: an in-process :class:`pgcache.Cache` (L1) in front of Redis (L2).

:class:`TieredCache` reads L1, then L2 (a hit is copied into L1), then the loader, and writes
through both. An L2 entry expires with its cache's TTL (``PX``); an L1 copy never outlives the
L2 entry it came from (its TTL is what the entry had left, counted from before the read).
Every write and delete also tells the other instances (:mod:`pgcache.caching.invalidation`),
so none keeps an old copy in its L1.

One load per key: threads of one process share one load per key (as
:meth:`pgcache.Cache.get_or_set`), tasks of one event loop too (as ``@cached``), and
instances share one through a short lock in Redis (``SET NX PX``, released by a
compare-and-delete script): the others poll L2 for the value with back-off, up to the lock's
lifetime, then load themselves. A dead lock holder costs only the lock's expiry.

Redis down, slow or holding junk never reaches a caller: the read is a miss, the write is
skipped, all counted (:class:`pgcache.caching.tier_stats.TierMetrics`); a delete, clear or
write that Redis did not take is done again once it answers, so no invalidation is lost. A
load that overlaps an invalidation of the same cache stores nothing (its value may predate
the invalidation).
Without a :class:`pgcache.caching.redis_tier.RedisTier` a ``TieredCache`` is its L1 alone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast, overload

from pgcache._core import Cache, CacheMetrics
from pgcache._validate import check_optional_seconds
from pgcache.caching.invalidation import Invalidation
from pgcache.caching.singleflight import AsyncSingleFlight, ThreadSingleFlight
from pgcache.caching.tier_stats import TierCounters, TierMetrics
from pgcache.keys import encode_key, query_hash_of

if TYPE_CHECKING:
    from pgcache.caching.budget import ByteBudget
    from pgcache.caching.redis_tier import Found, RedisTier

logger = logging.getLogger("pgcache.tiered")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")

_MISSING: Final[Any] = object()
_FIRST_PAUSE: Final = 0.002
_MAX_PAUSE: Final = 0.05


class _LockWait:
    """The back-off of a load that waits for another instance's lock in Redis: it counts the
    wait, doubles the pause up to a cap, and gives up once the lock's lifetime has passed."""

    __slots__ = ("_counters", "_deadline", "_pause", "_waited")

    def __init__(self, counters: TierCounters, lock_ttl: float) -> None:
        self._counters = counters
        self._deadline = time.monotonic() + lock_ttl
        self._pause = _FIRST_PAUSE
        self._waited = False

    def next_pause(self) -> float | None:
        """How long to sleep before looking again, or None: stop waiting and load (counted)."""
        if not self._waited:
            self._counters.add("lock_waits")
            self._waited = True
        if time.monotonic() >= self._deadline:
            self._counters.add("lock_timeouts")
            return None
        pause = self._pause
        self._pause = min(pause * 2, _MAX_PAUSE)
        return pause


_Write = tuple[str, bytes, float, int | None]  # (entry, encoded value, TTL, query hash)


class _Outgoing:
    """What a write of many values sends to Redis: the writes, the entries to delete instead
    (values Redis cannot hold) and the announcement to the other instances."""

    __slots__ = ("announcement", "deletes", "writes")

    def __init__(
        self, writes: list[_Write], deletes: list[str], announcement: Invalidation | None
    ) -> None:
        self.writes = writes
        self.deletes = deletes
        self.announcement = announcement

    def not_written(self) -> None:
        """Redis did not take the writes: delete those entries (older values must not stay)."""
        self.deletes += [entry for entry, *_ in self.writes]


class TieredCache(Generic[K, V]):
    """A :class:`pgcache.Cache` (L1) in front of Redis (L2, a shared :class:`RedisTier`).

    ``l1`` needs a ``name`` (it names the cache in Redis) and, with a tier, a TTL or
    ``l2_ttl`` (entries in Redis always expire). ``l2_ttl`` (seconds or timedelta) is how long
    entries live in Redis (default: L1's TTL); L1 copies live at most that long too.
    ``keyed_by_query_hash``: the keys are query hashes (ints), so invalidating a query deletes
    one key instead of scanning L1. Values go to Redis through the tier's codec; one it cannot
    encode stays in L1 only (counted). Sync methods use the tier's sync client, ``a``-methods
    (``aget``, ``aset``, ...) its asyncio client. Keys must have a text form
    (:func:`pgcache.keys.encode_key`) to reach Redis; other keys stay in L1. ``budget`` (a
    :class:`pgcache.caching.budget.ByteBudget` of ``l1``) is told of every value stored into L1.
    """

    def __init__(
        self,
        l1: Cache[K, V],
        tier: RedisTier | None = None,
        *,
        l2_ttl: float | timedelta | None = None,
        keyed_by_query_hash: bool = False,
        budget: ByteBudget | None = None,
    ) -> None:
        if not isinstance(l1, Cache):
            raise TypeError(f"l1={l1!r}: expected a pgcache.Cache")
        self.l1 = l1
        self.tier = tier
        self.name: str = l1.name or ""
        self.l2_ttl = check_optional_seconds("l2_ttl", l2_ttl) or l1.ttl
        self._keyed_by_query_hash = bool(keyed_by_query_hash)
        self.budget = budget
        self._generation = 0  # moved by every invalidation: a load that overlaps one stores nothing
        self._guard = threading.Lock()
        self._flights = ThreadSingleFlight()
        self._async_flights: AsyncSingleFlight[Hashable, Any] = AsyncSingleFlight()
        self._warned: set[str] = set()
        if tier is not None:
            if self.l2_ttl is None:
                raise ValueError(
                    f"cache {self.name!r}: entries in Redis must expire; give the cache a TTL "
                    "or an l2_ttl"
                )
            self._counters = tier.attach(self.name, self)
        else:
            self._counters = TierCounters()

    def __repr__(self) -> str:
        where = "L1 only" if self.tier is None else f"L2 {self.tier!r}"
        return f"<TieredCache {self.name!r} {where}>"

    @property
    def ttl(self) -> float | None:
        """The L1 cache's default TTL."""
        return self.l1.ttl

    def __len__(self) -> int:
        return len(self.l1)

    def metrics(self) -> CacheMetrics:
        """L1's counters (hits, misses, evictions, expirations, size)."""
        return self.l1.metrics()

    def tier_metrics(self) -> TierMetrics:
        """What the second tier did for this cache (L2 hits, misses, errors, latency, ...)."""
        return self._counters.snapshot()

    # --- what the sync and async paths share ------------------------------------------------

    def _entry(self, key: object) -> str | None:
        if self.tier is None:
            return None
        entry = self.tier.keys.entry(self.name, key)
        if entry is None:
            self._count_once("unencodable", f"key type {type(key).__name__}", "key")
        return entry

    def _count_once(self, counter: str, kind: str, what: str) -> None:
        self._counters.add(counter)
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning("cache %r: %s: %s (logged once)", self.name, what, kind)

    def _ttls(self, ttl: float | timedelta | None) -> tuple[float | None, float | None]:
        """(L1 TTL, L2 TTL) of a write: ``ttl`` for both, or the caches' own."""
        seconds = check_optional_seconds("ttl", ttl)
        if seconds is not None:
            return seconds, seconds
        l1 = self.l1.ttl
        l2 = self.l2_ttl
        return (l1 if l2 is None or (l1 is not None and l1 <= l2) else l2), l2

    def _accept(self, key: K, found: Found, generation: int) -> Any:
        """The value of an L2 read (copied into L1), or _MISSING."""
        if found is False:
            return _MISSING  # counted as an error or a bypass by the tier
        if found is None:
            self._counters.add("l2_misses")
            return _MISSING
        raw, left = found
        assert self.tier is not None
        try:
            value = self.tier.codec.decode(raw)
        except ValueError as exc:
            self._count_once("undecodable", type(exc).__name__, f"undecodable entry ({exc})")
            return _MISSING
        self._counters.add("l2_hits")
        l1_ttl = self._ttls(None)[0]
        if left is not None and (l1_ttl is None or left < l1_ttl):
            l1_ttl = left
        self._store_local(key, value, l1_ttl, generation)
        return value

    def _store_local(self, key: K, value: V, ttl: float | None, generation: int) -> bool:
        with self._guard:
            if generation != self._generation:
                return False
            self.l1.set(key, value, ttl)
        if self.budget is not None:
            self.budget.stored([(key, value)])
        return True

    def _invalidated(self) -> None:
        with self._guard:
            self._generation += 1

    def _encoded(self, value: object) -> bytes | None:
        assert self.tier is not None
        try:
            return self.tier.codec.encode(value)
        except TypeError as exc:
            self._count_once("unencodable", type(value).__name__, f"kept in L1 only ({exc})")
            return None

    def _store_many(
        self, items: Mapping[K, V] | Iterable[tuple[K, V]], ttl: float | timedelta | None
    ) -> _Outgoing:
        """Store ``items`` in L1; what to send to Redis (nothing without a tier)."""
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        l1_ttl, l2_ttl = self._ttls(ttl)
        self._invalidated()
        self.l1.set_many(pairs, l1_ttl)
        if self.budget is not None:
            self.budget.stored(pairs)
        if self.tier is None:
            return _Outgoing([], [], None)
        writes: list[_Write] = []
        deletes: list[str] = []
        announced: list[str] = []
        for key, value in pairs:
            entry = self._entry(key)
            if entry is None:
                continue
            raw = self._encoded(value)
            if raw is None or l2_ttl is None:
                deletes.append(entry)  # an older value in Redis must not outlive this one
            else:
                writes.append((entry, raw, l2_ttl, query_hash_of(key)))
            announced.append(cast(str, encode_key(key)))
        announcement = Invalidation("delete", self.name, tuple(announced)) if announced else None
        return _Outgoing(writes, deletes, announcement)

    def _l2_write(
        self, key: K, entry: str, value: V, ttl: float | None, generation: int
    ) -> _Write | None:
        """The write to Redis of a loaded value, or None (not encodable, no TTL, or an
        invalidation overlapped the load)."""
        raw = None if ttl is None else self._encoded(value)
        if raw is None or ttl is None or generation != self._generation:
            return None
        return (entry, raw, ttl, query_hash_of(key))

    def _deletion(self, key: K) -> Invalidation:
        return Invalidation("delete", self.name, (cast(str, encode_key(key)),))

    def _deleted_local(self, key: K, removed_from_l2: int) -> bool:
        """Remove ``key`` from L1 after Redis; whether either tier had it."""
        self._invalidated()
        removed = removed_from_l2 + self.l1.delete(key)
        if self.budget is not None:
            self.budget.forget([key])
        return removed > 0

    def _local_many(self, keys: Iterable[K]) -> tuple[dict[K, V], list[tuple[K, str]], int]:
        """(the values of ``keys`` found in L1, the (key, entry) pairs to read from Redis, the
        generation before that read)."""
        wanted = list(dict.fromkeys(keys))
        found = self.l1.get_many(wanted)
        missing = [
            (key, entry) for key in wanted if key not in found if (entry := self._entry(key))
        ]
        return found, missing, self._generation

    def _accept_many(
        self,
        found: dict[K, V],
        missing: list[tuple[K, str]],
        reads: Sequence[Found],
        generation: int,
    ) -> dict[K, V]:
        for (key, _), read in zip(missing, reads, strict=True):
            if (value := self._accept(key, read, generation)) is not _MISSING:
                found[key] = value
        return found

    # --- invalidation from elsewhere (the listener, the tier): L1 only ----------------------

    def drop_local(self, keys: Iterable[object]) -> None:
        """Remove ``keys`` from L1 only (another instance changed them)."""
        self._invalidated()
        keys = list(keys)
        for key in keys:
            self.l1.delete(cast(K, key))
        if self.budget is not None:
            self.budget.forget(keys)

    def drop_local_query(self, query_hash: int) -> int:
        """Remove every L1 entry of one query; how many."""
        self._invalidated()
        if self._keyed_by_query_hash:
            keys: list[Any] = [query_hash]
        else:
            snapshot = self.l1.keys()  # a list: safe to delete from while reading it
            keys = [key for key in snapshot if query_hash_of(key) == query_hash]
        removed = sum(self.l1.delete(key) for key in keys)
        if self.budget is not None:
            self.budget.forget(keys)
        return removed

    def clear_local(self) -> None:
        """Empty L1 only (a missed invalidation, another instance's clear)."""
        self._invalidated()
        self.l1.clear()
        if self.budget is not None:
            self.budget.clear()

    # --- sync API ---------------------------------------------------------------------------

    @overload
    def get(self, key: K, default: None = None) -> V | None: ...
    @overload
    def get(self, key: K, default: V | D) -> V | D: ...
    def get(self, key: K, default: Any = None) -> Any:
        """The value of ``key`` from L1, else from L2 (then kept in L1), else ``default``."""
        value = self.l1.get(key, _MISSING)
        if value is not _MISSING or self.tier is None:
            return default if value is _MISSING else value
        entry = self._entry(key)
        if entry is None:
            return default
        generation = self._generation
        value = self._accept(key, self.tier.read(self._counters, entry), generation)
        return default if value is _MISSING else value

    def get_many(self, keys: Iterable[K]) -> dict[K, V]:
        """The values found of ``keys`` (L1, then one L2 round trip for the rest)."""
        found, missing, generation = self._local_many(keys)
        if not missing or self.tier is None:
            return found
        reads = self.tier.read_many(self._counters, [entry for _, entry in missing])
        return self._accept_many(found, missing, reads, generation)

    def set(self, key: K, value: V, ttl: float | timedelta | None = None) -> None:
        """Store ``value`` in both tiers (``ttl``: seconds, default each tier's own TTL)."""
        self.set_many([(key, value)], ttl)

    def set_many(
        self, items: Mapping[K, V] | Iterable[tuple[K, V]], ttl: float | timedelta | None = None
    ) -> None:
        """Store many values in both tiers (one Redis round trip) and announce them."""
        out = self._store_many(items, ttl)
        if self.tier is None:
            return
        if out.writes and not self.tier.write(self._counters, out.writes):
            out.not_written()
        if out.announcement is not None:
            self.tier.announce(self._counters, out.announcement, out.deletes)

    def delete(self, key: K) -> bool:
        """Remove ``key`` from both tiers and from every instance's L1; whether it was there."""
        entry = self._entry(key)
        removed = 0
        if entry is not None and self.tier is not None:
            removed = self.tier.announce(self._counters, self._deletion(key), [entry]) or 0
        return self._deleted_local(key, removed)

    def clear(self) -> None:
        """Empty this cache in both tiers and in every instance's L1."""
        if self.tier is not None:
            self.tier.announce(self._counters, Invalidation("clear", self.name))
        self.clear_local()

    def get_or_set(
        self, key: K, factory: Callable[[], V], ttl: float | timedelta | None = None
    ) -> V:
        """The value of ``key`` from L1, L2, or ``factory()`` (stored in both): one load per key
        across threads and instances. Errors of ``factory`` propagate and are never stored."""
        if self.tier is None and self.budget is None:
            return self.l1.get_or_set(key, factory, ttl)  # the one lookup L1's metrics count
        value = self.l1.get(key, _MISSING)
        if value is not _MISSING:
            return cast(V, value)
        return self.fill(key, factory, ttl)

    def fill(self, key: K, factory: Callable[[], V], ttl: float | timedelta | None = None) -> V:
        """The second half of :meth:`get_or_set`, for a caller whose own lookup of ``key`` in
        L1 just missed (and was counted): L2, else ``factory()`` stored in both, one load per
        key across threads and instances."""
        return self._flights.run(key, lambda: self._fill(key, factory, ttl))

    def _fill(self, key: K, factory: Callable[[], V], ttl: float | timedelta | None) -> V:
        generation = self._generation
        l1_ttl, l2_ttl = self._ttls(ttl)
        entry = self._entry(key)
        if entry is None or self.tier is None:
            if key in self.l1:  # stored by a load that ended just before this one began
                value = self.l1.get(key, _MISSING)
                if value is not _MISSING:
                    return cast(V, value)
            return self._loaded(key, factory(), l1_ttl, generation)
        value = self._accept(key, self.tier.read(self._counters, entry), generation)
        if value is not _MISSING:
            return cast(V, value)
        token, wait = uuid.uuid4().hex, _LockWait(self._counters, self.tier.lock_ttl)
        while (taken := self.tier.try_lock(self._counters, entry, token)) is False:
            if (pause := wait.next_pause()) is None:
                break
            time.sleep(pause)
            value = self._accept(key, self.tier.read(self._counters, entry), generation)
            if value is not _MISSING:
                return cast(V, value)
        try:
            if taken:  # the previous holder may have stored it just before releasing
                value = self._accept(key, self.tier.read(self._counters, entry), generation)
                if value is not _MISSING:
                    return cast(V, value)
            loaded = self._loaded(key, factory(), l1_ttl, generation)
            if (write := self._l2_write(key, entry, loaded, l2_ttl, generation)) is not None:
                self.tier.write(self._counters, [write])
            return loaded
        finally:
            if taken:
                self.tier.unlock(self._counters, entry, token)

    def _loaded(self, key: K, value: V, l1_ttl: float | None, generation: int) -> V:
        self._counters.add("loads")
        self._store_local(key, value, l1_ttl, generation)
        return value

    # --- asyncio API: the same, with the tier's asyncio client -------------------------------

    @overload
    async def aget(self, key: K, default: None = None) -> V | None: ...
    @overload
    async def aget(self, key: K, default: V | D) -> V | D: ...
    async def aget(self, key: K, default: Any = None) -> Any:
        """:meth:`get` with the asyncio client."""
        value = self.l1.get(key, _MISSING)
        if value is not _MISSING or self.tier is None:
            return default if value is _MISSING else value
        entry = self._entry(key)
        if entry is None:
            return default
        generation = self._generation
        value = self._accept(key, await self.tier.aread(self._counters, entry), generation)
        return default if value is _MISSING else value

    async def aget_many(self, keys: Iterable[K]) -> dict[K, V]:
        """:meth:`get_many` with the asyncio client."""
        found, missing, generation = self._local_many(keys)
        if not missing or self.tier is None:
            return found
        reads = await self.tier.aread_many(self._counters, [entry for _, entry in missing])
        return self._accept_many(found, missing, reads, generation)

    async def aset(self, key: K, value: V, ttl: float | timedelta | None = None) -> None:
        """:meth:`set` with the asyncio client."""
        await self.aset_many([(key, value)], ttl)

    async def aset_many(
        self, items: Mapping[K, V] | Iterable[tuple[K, V]], ttl: float | timedelta | None = None
    ) -> None:
        """:meth:`set_many` with the asyncio client."""
        out = self._store_many(items, ttl)
        if self.tier is None:
            return
        if out.writes and not await self.tier.awrite(self._counters, out.writes):
            out.not_written()
        if out.announcement is not None:
            await self.tier.aannounce(self._counters, out.announcement, out.deletes)

    async def adelete(self, key: K) -> bool:
        """:meth:`delete` with the asyncio client."""
        entry = self._entry(key)
        removed = 0
        if entry is not None and self.tier is not None:
            removed = await self.tier.aannounce(self._counters, self._deletion(key), [entry]) or 0
        return self._deleted_local(key, removed)

    async def aclear(self) -> None:
        """:meth:`clear` with the asyncio client."""
        if self.tier is not None:
            await self.tier.aannounce(self._counters, Invalidation("clear", self.name))
        self.clear_local()

    async def aget_or_set(
        self, key: K, factory: Callable[[], Awaitable[V]], ttl: float | timedelta | None = None
    ) -> V:
        """:meth:`get_or_set` for an async ``factory``: one load per key across the tasks of
        one event loop and across instances."""
        value = self.l1.get(key, _MISSING)
        if value is not _MISSING:
            return cast(V, value)
        return await self.afill(key, factory, ttl)

    async def afill(
        self, key: K, factory: Callable[[], Awaitable[V]], ttl: float | timedelta | None = None
    ) -> V:
        """:meth:`fill` for an async ``factory``: one load per key across the tasks of one
        event loop and across instances."""
        result: V = await self._async_flights.run(key, lambda: self._afill(key, factory, ttl))
        return result

    async def _afill(
        self, key: K, factory: Callable[[], Awaitable[V]], ttl: float | timedelta | None
    ) -> V:
        generation = self._generation
        l1_ttl, l2_ttl = self._ttls(ttl)
        entry = self._entry(key)
        if entry is None or self.tier is None:
            return self._loaded(key, await factory(), l1_ttl, generation)
        value = self._accept(key, await self.tier.aread(self._counters, entry), generation)
        if value is not _MISSING:
            return cast(V, value)
        token, wait = uuid.uuid4().hex, _LockWait(self._counters, self.tier.lock_ttl)
        while (taken := await self.tier.atry_lock(self._counters, entry, token)) is False:
            if (pause := wait.next_pause()) is None:
                break
            await asyncio.sleep(pause)
            value = self._accept(key, await self.tier.aread(self._counters, entry), generation)
            if value is not _MISSING:
                return cast(V, value)
        try:
            if taken:
                value = self._accept(key, await self.tier.aread(self._counters, entry), generation)
                if value is not _MISSING:
                    return cast(V, value)
            loaded = self._loaded(key, await factory(), l1_ttl, generation)
            if (write := self._l2_write(key, entry, loaded, l2_ttl, generation)) is not None:
                await self.tier.awrite(self._counters, [write])
            return loaded
        finally:
            if taken:
                await self.tier.aunlock(self._counters, entry, token)

    # --- life cycle -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once L1 is closed."""
        return self.l1.closed

    def close(self) -> None:
        """Close L1 and leave the tier (the tier itself stays open for its other caches)."""
        if self.tier is not None:
            self.tier.detach(self.name)
        self.l1.close()
