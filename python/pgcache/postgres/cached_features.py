"""A cache in front of any feature extractor, sync and asyncio, one load per key.

Given a :class:`pgcache.CacheManager`, the extractors go through its tiered ``features`` cache
(:meth:`pgcache.CacheManager.tier`): with ``REDIS_URL`` set, L1 then Redis then the database,
one load per key across instances; without it, the manager's cache alone, as before.

Features are cached once per query, whatever the scenario (:func:`pgcache.keys.feature_key`):
what ``pg_stat_statements`` says of a query does not depend on it, so a hit in another scenario
than the stored one answers the stored features relabelled (:func:`in_scenario`), without a
database read. A hit costs one lookup: the arguments are checked by type only (a hash outside
the 64-bit range can never be found, and is refused before it is loaded), and the key is the
hash itself. Where a sync hit's instructions go (callgrind, CPython 3.11): the cache's own
lookup about 510, reading the stored ``scenario`` and comparing it about 150 (a specialised
read: :class:`QueryFeatures` skips pydantic's ``__getattr__``, see :mod:`pgcache._pydantic`),
the call's frame and each bytecode of the method (about 25 instructions each) the rest: the
hit path is written for few bytecodes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING

from pgcache._core import Cache, CacheMetrics
from pgcache._validate import check_query_hash, check_query_hashes, check_scenario
from pgcache.caching.tiered import TieredCache
from pgcache.postgres.features import AsyncFeatureExtractor, FeatureExtractor, QueryFeatures

if TYPE_CHECKING:
    from pgcache.caching.manager import CacheManager


DEFAULT_FEATURE_TTL = timedelta(minutes=15)


def in_scenario(features: QueryFeatures, scenario: str) -> QueryFeatures:
    """``features`` labelled with ``scenario`` (the very object when it already is);
    ``TypeError`` naming it when ``scenario`` is not a str."""
    if features.scenario == scenario and type(scenario) is str:
        return features
    return features.model_copy(update={"scenario": check_scenario(scenario)})


def _ttl_seconds(ttl: float | timedelta | None, cache: Cache[int, QueryFeatures]) -> float:
    if ttl is None:
        return cache.ttl if cache.ttl is not None else DEFAULT_FEATURE_TTL.total_seconds()
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"ttl={ttl!r}: expected a positive number of seconds or timedelta")
    return float(seconds)


def _checked(query_hash: object, scenario: object) -> tuple[int, str]:
    """The arguments of a single lookup, checked in full (the slow path of a bad or unusual
    argument: an int subclass, a bool, a hash outside the 64-bit range, a scenario not a str)."""
    return check_query_hash(query_hash), check_scenario(scenario)


class _FeatureStore:
    """What the sync and async extractors share: where features live and everything but I/O.

    A plain Cache, or a CacheManager's (tiered) features cache, both through a
    :class:`TieredCache` (a plain Cache is its own L1 and nothing more). A disabled manager
    stores nothing: every lookup misses, counted by the manager's features cache.
    """

    __slots__ = ("cache", "enabled", "tiered", "ttl")

    def __init__(
        self,
        cache_or_manager: Cache[int, QueryFeatures] | CacheManager,
        ttl: float | timedelta | None,
    ) -> None:
        if isinstance(cache_or_manager, Cache):
            self.enabled = True
            self.tiered: TieredCache[int, QueryFeatures] = TieredCache(cache_or_manager)
        elif callable(getattr(cache_or_manager, "tier", None)):
            self.enabled = cache_or_manager.enabled  # fixed for a manager's life
            self.tiered = cache_or_manager.tier("features")
        else:
            raise TypeError(
                f"cache_or_manager={cache_or_manager!r}: expected a pgcache.Cache or a "
                "pgcache.CacheManager"
            )
        self.cache: Cache[int, QueryFeatures] = self.tiered.l1
        self.ttl = _ttl_seconds(ttl, self.cache)

    def batch_keys(self, hashes: Iterable[int], scenario: str) -> tuple[list[int], list[int]]:
        """(the distinct checked hashes, those to look up); a disabled manager looks up none
        and counts a miss for each."""
        unique = check_query_hashes(hashes)
        check_scenario(scenario)
        if self.enabled:
            return unique, unique
        for query_hash in unique:
            self.cache.get(query_hash)
        return unique, []

    def batch_result(
        self, unique: list[int], found: dict[int, QueryFeatures], scenario: str
    ) -> dict[int, QueryFeatures]:
        return {
            query_hash: in_scenario(found[query_hash], scenario)
            for query_hash in unique
            if query_hash in found
        }

    def store_many(self, extracted: dict[int, QueryFeatures]) -> list[tuple[int, QueryFeatures]]:
        """The pairs to store of a batch's extraction (none when disabled)."""
        return list(extracted.items()) if self.enabled and extracted else []


class _CachedExtractorBase:
    """The configuration and metrics the two extractors share."""

    __slots__ = ("__weakref__", "_l1", "_store", "base")

    def __init__(
        self,
        cache_or_manager: Cache[int, QueryFeatures] | CacheManager,
        ttl: float | timedelta | None,
    ) -> None:
        self._store = _FeatureStore(cache_or_manager, ttl)
        # The whole of a hit's lookup: ``l1[key]`` (a slot, then the cache's own subscript, a
        # KeyError on a miss) costs fewer bytecodes than a bound ``get`` and an ``is None``.
        self._l1 = self._store.cache

    @property
    def cache(self) -> Cache[int, QueryFeatures]:
        """The cache the features are kept in."""
        return self._store.cache

    def get_cache_metrics(self) -> CacheMetrics:
        """Hits, misses, size, ... of the cache the features are kept in."""
        return self._store.cache.metrics()


class CachedFeatureExtractor(_CachedExtractorBase):
    """A :class:`FeatureExtractor` that answers from a cache and asks ``base`` only on a miss.

    ``cache_or_manager`` is a :class:`pgcache.Cache` or a :class:`pgcache.CacheManager` (then
    its ``"features"`` cache). Keys are :func:`pgcache.keys.feature_key` (the query hash: one
    entry per query for every scenario). ``ttl`` (seconds or timedelta) applies to every stored
    entry; ``None`` means the cache's own TTL, or 15 minutes when the cache has none.

    * A hit never calls ``base`` (so never touches the database), in any scenario.
    * Concurrent misses of one key, from any number of threads, run ``base`` once; the others
      wait for and share its result.
    * A batch looks all keys up at once, then asks ``base`` once for the misses only, stores
      what it returned and returns everything; hashes ``base`` does not know are left out.
    * Errors (e.g. :class:`QueryNotFoundError`) are raised to the caller and never cached.
    """

    __slots__ = ()
    base: FeatureExtractor

    def __init__(
        self,
        base: FeatureExtractor,
        cache_or_manager: Cache[int, QueryFeatures] | CacheManager,
        ttl: float | timedelta | None = None,
    ) -> None:
        super().__init__(cache_or_manager, ttl)
        self.base = base

    def extract_query_features(self, query_hash: int, scenario: str) -> QueryFeatures:
        """The cached features of one query, extracted by ``base`` on a miss."""
        # Every bytecode of a hit counts (see the module): .__class__ is cheaper than type().
        if query_hash.__class__ is not int:
            query_hash, scenario = _checked(query_hash, scenario)
        try:
            features = self._l1[query_hash]  # a hit: the stored scenario is a str, so == checks it
        except KeyError:
            features = self._miss(query_hash, scenario)
        return features if features.scenario == scenario else in_scenario(features, scenario)

    def _miss(self, query_hash: int, scenario: str) -> QueryFeatures:
        query_hash, scenario = _checked(query_hash, scenario)
        load = partial(self.base.extract_query_features, query_hash, scenario)
        store = self._store
        return store.tiered.fill(query_hash, load, store.ttl) if store.enabled else load()

    def extract_batch_query_features(
        self, hashes: Iterable[int], scenario: str
    ) -> dict[int, QueryFeatures]:
        """The features of many queries: hits from the cache, the misses in one base call."""
        store = self._store
        unique, wanted = store.batch_keys(hashes, scenario)
        found = store.tiered.get_many(wanted) if wanted else {}
        misses = [query_hash for query_hash in unique if query_hash not in found]
        if misses:
            extracted = self.base.extract_batch_query_features(misses, scenario)
            if pairs := store.store_many(extracted):
                store.tiered.set_many(pairs, ttl=store.ttl)
            found.update(extracted)
        return store.batch_result(unique, found, scenario)


class AsyncCachedFeatureExtractor(_CachedExtractorBase):
    """The asyncio twin of :class:`CachedFeatureExtractor`, in front of an async extractor.

    Concurrent misses of one key from tasks of one event loop await a single extraction
    (:meth:`pgcache.caching.tiered.TieredCache.afill`); a batch is not merged with
    concurrent single lookups (it asks ``base`` once for its own misses).
    """

    __slots__ = ()
    base: AsyncFeatureExtractor

    def __init__(
        self,
        base: AsyncFeatureExtractor,
        cache_or_manager: Cache[int, QueryFeatures] | CacheManager,
        ttl: float | timedelta | None = None,
    ) -> None:
        super().__init__(cache_or_manager, ttl)
        self.base = base

    async def extract_query_features(self, query_hash: int, scenario: str) -> QueryFeatures:
        """The cached features of one query, extracted by ``base`` on a miss."""
        if query_hash.__class__ is not int:  # as in CachedFeatureExtractor
            query_hash, scenario = _checked(query_hash, scenario)
        try:
            features = self._l1[query_hash]
        except KeyError:
            features = await self._miss(query_hash, scenario)
        return features if features.scenario == scenario else in_scenario(features, scenario)

    async def _miss(self, query_hash: int, scenario: str) -> QueryFeatures:
        query_hash, scenario = _checked(query_hash, scenario)
        load: Callable[[], Awaitable[QueryFeatures]] = partial(
            self.base.extract_query_features, query_hash, scenario
        )
        store = self._store
        if store.enabled:
            return await store.tiered.afill(query_hash, load, store.ttl)
        return await load()

    async def extract_batch_query_features(
        self, hashes: Iterable[int], scenario: str
    ) -> dict[int, QueryFeatures]:
        """The features of many queries: hits from the cache, the misses in one base call."""
        store = self._store
        unique, wanted = store.batch_keys(hashes, scenario)
        found = await store.tiered.aget_many(wanted) if wanted else {}
        misses = [query_hash for query_hash in unique if query_hash not in found]
        if misses:
            extracted = await self.base.extract_batch_query_features(misses, scenario)
            if pairs := store.store_many(extracted):
                await store.tiered.aset_many(pairs, ttl=store.ttl)
            found.update(extracted)
        return store.batch_result(unique, found, scenario)
