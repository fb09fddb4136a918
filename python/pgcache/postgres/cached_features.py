"""A cache in front of any feature extractor, sync and asyncio, one load per key.

Given a :class:`pgcache.CacheManager`, the extractors go through its tiered ``features`` cache
(:meth:`pgcache.CacheManager.tier`): with ``REDIS_URL`` set, L1 then Redis then the database,
one load per key across instances; without it, the manager's cache alone, as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from pgcache._core import Cache, CacheMetrics
from pgcache._validate import check_query_hash, check_query_hashes, check_scenario
from pgcache.caching.tiered import TieredCache
from pgcache.keys import feature_key
from pgcache.postgres.features import AsyncFeatureExtractor, FeatureExtractor, QueryFeatures

if TYPE_CHECKING:
    from pgcache.caching.manager import CacheManager


# --- the cache in front of an extractor ----------------------------------------------------

DEFAULT_FEATURE_TTL = timedelta(minutes=15)


def _ttl_seconds(ttl: float | timedelta | None, cache: Cache[str, QueryFeatures]) -> float:
    if ttl is None:
        return cache.ttl if cache.ttl is not None else DEFAULT_FEATURE_TTL.total_seconds()
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"ttl={ttl!r}: expected a positive number of seconds or timedelta")
    return float(seconds)


class _FeatureStore:
    """Where cached features live: a plain Cache, or a CacheManager's (tiered) features cache.

    Both go through a :class:`TieredCache` (a plain Cache is its own L1 and nothing more), so
    the sync and async paths are one. With a manager, ``manager.enabled`` is read on every
    call: when caching is disabled nothing is stored and every lookup misses (through the
    manager, so its metrics count the misses).
    """

    __slots__ = ("_manager", "_tiered", "_ttl")

    def __init__(
        self,
        cache_or_manager: Cache[str, QueryFeatures] | CacheManager,
        ttl: float | timedelta | None,
    ) -> None:
        if isinstance(cache_or_manager, Cache):
            self._manager: CacheManager | None = None
            self._tiered: TieredCache[str, QueryFeatures] = TieredCache(cache_or_manager)
        elif callable(getattr(cache_or_manager, "tier", None)):
            self._manager = cache_or_manager
            self._tiered = cache_or_manager.tier("features")
        else:
            raise TypeError(
                f"cache_or_manager={cache_or_manager!r}: expected a pgcache.Cache or a "
                "pgcache.CacheManager"
            )
        self._ttl = _ttl_seconds(ttl, self._tiered.l1)

    @property
    def cache(self) -> Cache[str, QueryFeatures]:
        return self._tiered.l1

    @property
    def enabled(self) -> bool:
        return self._manager is None or self._manager.enabled

    def _count_misses(self, hashes: Iterable[int], scenario: str) -> None:
        assert self._manager is not None
        for query_hash in hashes:
            self._manager.get_features(query_hash, scenario)

    def get(self, query_hash: int, scenario: str) -> QueryFeatures | None:
        if not self.enabled:
            self._count_misses([query_hash], scenario)
            return None
        return self._tiered.get(feature_key(query_hash, scenario))

    def get_many(self, hashes: list[int], scenario: str) -> dict[int, QueryFeatures]:
        if not self.enabled:
            self._count_misses(hashes, scenario)
            return {}
        keys = {feature_key(query_hash, scenario): query_hash for query_hash in hashes}
        found = self._tiered.get_many(keys)
        return {keys[key]: features for key, features in found.items()}

    async def aget_many(self, hashes: list[int], scenario: str) -> dict[int, QueryFeatures]:
        if not self.enabled:
            self._count_misses(hashes, scenario)
            return {}
        keys = {feature_key(query_hash, scenario): query_hash for query_hash in hashes}
        found = await self._tiered.aget_many(keys)
        return {keys[key]: features for key, features in found.items()}

    def set_many(self, features: dict[int, QueryFeatures], scenario: str) -> None:
        if self.enabled and features:
            items = {feature_key(h, scenario): value for h, value in features.items()}
            self._tiered.set_many(items, ttl=self._ttl)

    async def aset_many(self, features: dict[int, QueryFeatures], scenario: str) -> None:
        if self.enabled and features:
            items = {feature_key(h, scenario): value for h, value in features.items()}
            await self._tiered.aset_many(items, ttl=self._ttl)

    def get_or_set(
        self, query_hash: int, scenario: str, factory: Callable[[], QueryFeatures]
    ) -> QueryFeatures:
        if not self.enabled:
            self._count_misses([query_hash], scenario)
            return factory()
        return self._tiered.get_or_set(feature_key(query_hash, scenario), factory, self._ttl)

    async def aget_or_set(
        self, query_hash: int, scenario: str, factory: Callable[[], Awaitable[QueryFeatures]]
    ) -> QueryFeatures:
        if not self.enabled:
            self._count_misses([query_hash], scenario)
            return await factory()
        key = feature_key(query_hash, scenario)
        return await self._tiered.aget_or_set(key, factory, self._ttl)


class CachedFeatureExtractor:
    """A :class:`FeatureExtractor` that answers from a cache and asks ``base`` only on a miss.

    ``cache_or_manager`` is a :class:`pgcache.Cache` or a :class:`pgcache.CacheManager` (then
    its ``"features"`` cache). Keys are :func:`feature_key` (``features:{hash}:{scenario}``).
    ``ttl`` (seconds or timedelta) applies to every stored entry; ``None`` means the cache's own
    TTL, or 15 minutes when the cache has none.

    * A hit never calls ``base`` (so never touches the database).
    * Concurrent misses of one key, from any number of threads, run ``base`` once
      (``Cache.get_or_set``); the others wait for and share its result.
    * A batch looks all keys up at once, then asks ``base`` once for the misses only, stores
      what it returned and returns everything; hashes ``base`` does not know are left out.
    * Errors (e.g. :class:`QueryNotFoundError`) are raised to the caller and never cached.
    """

    def __init__(
        self,
        base: FeatureExtractor,
        cache_or_manager: Cache[str, QueryFeatures] | CacheManager,
        ttl: float | timedelta | None = None,
    ) -> None:
        self.base = base
        self._store = _FeatureStore(cache_or_manager, ttl)

    @property
    def cache(self) -> Cache[str, QueryFeatures]:
        """The cache the features are kept in."""
        return self._store.cache

    def extract_query_features(self, query_hash: int, scenario: str) -> QueryFeatures:
        """The cached features of one query, extracted by ``base`` on a miss."""
        query_hash = check_query_hash(query_hash)
        scenario = check_scenario(scenario)
        return self._store.get_or_set(
            query_hash, scenario, lambda: self.base.extract_query_features(query_hash, scenario)
        )

    def extract_batch_query_features(
        self, hashes: Iterable[int], scenario: str
    ) -> dict[int, QueryFeatures]:
        """The features of many queries: hits from the cache, the misses in one base call."""
        unique = check_query_hashes(hashes)
        scenario = check_scenario(scenario)
        found = self._store.get_many(unique, scenario)
        misses = [query_hash for query_hash in unique if query_hash not in found]
        if misses:
            extracted = self.base.extract_batch_query_features(misses, scenario)
            self._store.set_many(extracted, scenario)
            found.update(extracted)
        return {query_hash: found[query_hash] for query_hash in unique if query_hash in found}

    def get_cache_metrics(self) -> CacheMetrics:
        """Hits, misses, size, ... of the cache the features are kept in."""
        return self._store.cache.metrics()


class AsyncCachedFeatureExtractor:
    """The asyncio twin of :class:`CachedFeatureExtractor`, in front of an async extractor.

    Concurrent misses of one key from tasks of one event loop await a single extraction
    (:meth:`pgcache.caching.tiered.TieredCache.aget_or_set`); a batch is not merged with
    concurrent single lookups (it asks ``base`` once for its own misses).
    """

    def __init__(
        self,
        base: AsyncFeatureExtractor,
        cache_or_manager: Cache[str, QueryFeatures] | CacheManager,
        ttl: float | timedelta | None = None,
    ) -> None:
        self.base = base
        self._store = _FeatureStore(cache_or_manager, ttl)

    @property
    def cache(self) -> Cache[str, QueryFeatures]:
        """The cache the features are kept in."""
        return self._store.cache

    async def extract_query_features(self, query_hash: int, scenario: str) -> QueryFeatures:
        """The cached features of one query, extracted by ``base`` on a miss."""
        query_hash = check_query_hash(query_hash)
        scenario = check_scenario(scenario)
        return await self._store.aget_or_set(
            query_hash, scenario, lambda: self.base.extract_query_features(query_hash, scenario)
        )

    async def extract_batch_query_features(
        self, hashes: Iterable[int], scenario: str
    ) -> dict[int, QueryFeatures]:
        """The features of many queries: hits from the cache, the misses in one base call."""
        unique = check_query_hashes(hashes)
        scenario = check_scenario(scenario)
        found = await self._store.aget_many(unique, scenario)
        misses = [query_hash for query_hash in unique if query_hash not in found]
        if misses:
            extracted = await self.base.extract_batch_query_features(misses, scenario)
            await self._store.aset_many(extracted, scenario)
            found.update(extracted)
        return {query_hash: found[query_hash] for query_hash in unique if query_hash in found}

    def get_cache_metrics(self) -> CacheMetrics:
        """Hits, misses, size, ... of the cache the features are kept in."""
        return self._store.cache.metrics()
