"""The five specialised caches of a query-analysis service, held by one :class:`CacheManager`.

A service that analyses PostgreSQL queries caches five kinds of answers, each with its own
lifetime: extracted features, ML predictions, query fingerprints, EXPLAIN plans and anomaly
results. :class:`CacheManager` builds one
:class:`pgcache.Cache` per kind (named ``features``, ``predictions``, ``fingerprints``,
``explain_plans``, ``anomalies``), offers typed accessors keyed by the query hash (the
``pg_stat_statements`` ``queryid``, a signed 64-bit integer), per-cache metrics, invalidation
of everything known about one query, and closes all five at once. Each cache holds at most
``max_size`` entries and ``max_bytes`` bytes of values (:mod:`pgcache.caching.budget`: the
values' JSON size, measured once when stored; beyond the budget the oldest-stored entries go).

Keys come from :mod:`pgcache.keys`, the scheme shared with
:class:`pgcache.CachedFeatureExtractor` and :class:`pgcache.CachedPredictor`: an extractor or a
predictor given this manager and the manager's own accessors see the same entries.

With a shared tier (a :class:`pgcache.caching.redis_tier.RedisTier`, built by
:meth:`CacheManager.from_settings` when ``REDIS_URL`` is set) each cache is the L1 of a
:class:`pgcache.caching.tiered.TieredCache` (:meth:`CacheManager.tier`): the accessors read L1,
then Redis; the setters write through; invalidation and clears reach every instance. Without
one, the tiers are the caches alone and everything behaves as a single process always did.

What it deliberately does not do: it holds no values of its own outside the five caches (no
secondary index that could drift from what the caches evict or expire), does not load missing
values (see :mod:`pgcache.postgres.cached_features` and :func:`pgcache.cached`), and does not
export metrics (see :mod:`pgcache.observability`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self

from pgcache._core import Cache, CacheMetrics, ManualClock
from pgcache._validate import check_model_id, check_query_hash, check_scenario, check_seconds
from pgcache.caching.budget import DEFAULT_MAX_BYTES, ByteBudget, ByteBudgetMetrics
from pgcache.caching.tier_stats import SharedTierStatus, TierMetrics
from pgcache.caching.tiered import TieredCache
from pgcache.keys import (
    CACHE_NAMES,
    PredictionKey,
    feature_key,
    prediction_key,
    query_key,
)

if TYPE_CHECKING:
    from pgcache.caching.redis_tier import RedisTier
    from pgcache.config import Settings
    from pgcache.postgres.features import QueryFeatures

# The caches whose keys are query hashes: invalidating a query deletes one key, no scan.
_KEYED_BY_QUERY_HASH: Final = frozenset({"features", "fingerprints", "explain_plans", "anomalies"})


def prediction_cache_key(query_hash: int, scenario: str, model_id: str | None) -> PredictionKey:
    """The key of one prediction in the ``predictions`` cache (:func:`pgcache.keys.prediction_key`),
    its arguments checked like the manager's accessors check them."""
    return prediction_key(
        check_query_hash(query_hash), check_scenario(scenario), check_model_id(model_id)
    )


class CacheManager:
    """Five :class:`pgcache.Cache` instances, one per kind of cached answer, each with its TTL.

    >>> with CacheManager(max_size=1000, feature_ttl=timedelta(minutes=15)) as manager:
    ...     manager.set_explain_plan(-4221331203398113, {"Plan": {"Node Type": "Seq Scan"}})
    ...     manager.get_explain_plan(-4221331203398113)
    {'Plan': {'Node Type': 'Seq Scan'}}

    TTLs are seconds (int or float) or :class:`datetime.timedelta`; every cache gets
    ``max_size``, ``max_bytes`` (an int, default 64 MiB; ``None``: no byte budget; see
    :meth:`byte_metrics`) and ``cleanup_interval``; ``clock`` (a :class:`pgcache.ManualClock`)
    is for tests. With ``enabled=False`` the setters store nothing and every getter misses
    (the misses still show in :meth:`metrics`); :meth:`cache` still returns the underlying
    caches.
    A bad argument raises ``TypeError`` or ``ValueError`` naming it, before any cache exists.

    ``shared_tier`` (a :class:`pgcache.caching.redis_tier.RedisTier`, closed with the manager)
    puts Redis behind every cache; ``l2_ttls`` (``{cache name: seconds or timedelta}``) sets
    how long entries live there (default: each cache's TTL). A disabled manager uses no tier.
    """

    __slots__ = ("_anomalies", "_budgets", "_caches", "_enabled", "_explain_plans", "_features",
                 "_fingerprints", "_max_bytes", "_max_size", "_owned_tier", "_predictions",
                 "_shared", "_tiers")  # fmt: skip

    def __init__(
        self,
        max_size: int = 10_000,
        feature_ttl: float | timedelta = timedelta(minutes=15),
        prediction_ttl: float | timedelta = timedelta(minutes=5),
        fingerprint_ttl: float | timedelta = timedelta(minutes=10),
        explain_plan_ttl: float | timedelta = timedelta(minutes=30),
        anomaly_ttl: float | timedelta = timedelta(minutes=5),
        cleanup_interval: float | timedelta = 1.0,
        enabled: bool = True,
        clock: ManualClock | None = None,
        shared_tier: RedisTier | None = None,
        l2_ttls: Mapping[str, float | timedelta] | None = None,
        policy: Literal["tinylfu", "lru"] = "tinylfu",
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        if type(max_size) is not int:
            raise TypeError(
                f"max_size must be an int, got {max_size!r} of type {type(max_size).__name__}"
            )
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size!r}")
        if max_bytes is not None and type(max_bytes) is not int:
            raise TypeError(
                f"max_bytes must be an int or None, got {max_bytes!r} of type "
                f"{type(max_bytes).__name__}"
            )
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1 (or None: no budget), got {max_bytes}")
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {enabled!r}")
        if clock is not None and not isinstance(clock, ManualClock):
            raise TypeError(f"clock must be a pgcache.ManualClock or None, got {clock!r}")
        ttls = {
            "features": check_seconds("feature_ttl", feature_ttl),
            "predictions": check_seconds("prediction_ttl", prediction_ttl),
            "fingerprints": check_seconds("fingerprint_ttl", fingerprint_ttl),
            "explain_plans": check_seconds("explain_plan_ttl", explain_plan_ttl),
            "anomalies": check_seconds("anomaly_ttl", anomaly_ttl),
        }
        interval = check_seconds("cleanup_interval", cleanup_interval)
        l2 = dict(l2_ttls or {})
        unknown = sorted(set(l2) - set(CACHE_NAMES))
        if unknown:
            raise ValueError(f"l2_ttls names no cache {unknown}; the caches: {list(CACHE_NAMES)}")
        l2_seconds = {name: check_seconds(f"l2_ttls[{name!r}]", ttl) for name, ttl in l2.items()}
        tier = shared_tier if enabled else None

        caches: dict[str, Cache[Any, Any]] = {}
        tiers: dict[str, TieredCache[Any, Any]] = {}
        budgets: dict[str, ByteBudget] = {}
        try:
            for name in CACHE_NAMES:
                caches[name] = Cache(
                    ttl=ttls[name],
                    max_size=max_size,
                    cleanup_interval=interval,
                    clock=clock,
                    name=name,
                    policy=policy,
                )
                if max_bytes is not None:
                    budgets[name] = ByteBudget(caches[name], max_bytes)
                tiers[name] = TieredCache(
                    caches[name],
                    tier,
                    l2_ttl=l2_seconds.get(name),
                    keyed_by_query_hash=name in _KEYED_BY_QUERY_HASH,
                    budget=budgets.get(name),
                )
        except BaseException:
            # max_size above what Cache supports: Cache's own error names it; leak nothing.
            for tiered in tiers.values():
                tiered.close()
            for cache in caches.values():
                cache.close()
            raise
        self._enabled = enabled
        self._max_size = max_size
        self._max_bytes = max_bytes
        self._budgets: Mapping[str, ByteBudget] = MappingProxyType(budgets)
        self._caches: Mapping[str, Cache[Any, Any]] = MappingProxyType(caches)
        self._tiers: Mapping[str, TieredCache[Any, Any]] = MappingProxyType(tiers)
        self._shared = tier
        self._owned_tier = shared_tier  # closed with the manager, even when unused (disabled)
        self._features: TieredCache[int, QueryFeatures] = tiers["features"]
        self._predictions: TieredCache[PredictionKey, object] = tiers["predictions"]
        self._fingerprints: TieredCache[int, object] = tiers["fingerprints"]
        self._explain_plans: TieredCache[int, object] = tiers["explain_plans"]
        self._anomalies: TieredCache[int, object] = tiers["anomalies"]

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: ManualClock | None = None) -> Self:
        """A manager configured from :class:`pgcache.config.Settings` (the ``CACHE_*`` and
        ``*_CACHE_TTL`` variables); with ``REDIS_URL`` set (and caching enabled), on a
        :class:`pgcache.caching.redis_tier.RedisTier` built from the ``REDIS_*`` variables
        (needs ``pgcache[redis]``). ``clock`` is for tests."""
        tier: RedisTier | None = None
        if settings.redis_url and settings.cache_enabled:
            from pgcache.caching.redis_tier import RedisTier

            tier = RedisTier(
                settings.redis_url,
                key_prefix=settings.redis_key_prefix,
                socket_timeout=settings.redis_socket_timeout.total_seconds(),
                connect_timeout=settings.redis_connect_timeout.total_seconds(),
            )
        try:
            return cls(
                max_size=settings.cache_max_size,
                feature_ttl=settings.feature_cache_ttl,
                prediction_ttl=settings.prediction_cache_ttl,
                fingerprint_ttl=settings.fingerprint_cache_ttl,
                explain_plan_ttl=settings.explain_plan_cache_ttl,
                anomaly_ttl=settings.anomaly_cache_ttl,
                cleanup_interval=settings.cache_cleanup_interval,
                enabled=settings.cache_enabled,
                clock=clock,
                shared_tier=tier,
                l2_ttls=settings.redis_ttls(),
                policy=settings.cache_policy,
                max_bytes=settings.cache_max_bytes,
            )
        except BaseException:
            if tier is not None:
                tier.close()
            raise

    # --- configuration -------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """False: the setters store nothing and every getter misses."""
        return self._enabled

    @property
    def max_size(self) -> int:
        """The maximum number of entries of each cache."""
        return self._max_size

    @property
    def max_bytes(self) -> int | None:
        """The byte budget of each cache (None: none)."""
        return self._max_bytes

    @property
    def policy(self) -> str:
        """The eviction policy of each cache: ``"tinylfu"`` or ``"lru"``."""
        policy: str = self._caches["features"].policy
        return policy

    @property
    def caches(self) -> Mapping[str, Cache[Any, Any]]:
        """The five caches by name, in :data:`CACHE_NAMES` order (a read-only mapping)."""
        return self._caches

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run; every accessor then raises CacheClosedError."""
        return self._features.closed

    def cache(self, name: str) -> Cache[Any, Any]:
        """The cache called ``name`` (one of :data:`CACHE_NAMES`); ``KeyError`` otherwise."""
        try:
            return self._caches[name]
        except (KeyError, TypeError):
            raise KeyError(
                f"name must be one of {', '.join(map(repr, CACHE_NAMES))}, got {name!r}"
            ) from None

    @property
    def tiers(self) -> Mapping[str, TieredCache[Any, Any]]:
        """The five tiered caches by name (each its cache alone without a shared tier)."""
        return self._tiers

    def tier(self, name: str) -> TieredCache[Any, Any]:
        """The tiered cache called ``name`` (one of :data:`CACHE_NAMES`); ``KeyError``
        otherwise. Its L1 is :meth:`cache` ``(name)``."""
        self.cache(name)  # the KeyError naming the caches
        return self._tiers[name]

    @property
    def shared_tier(self) -> RedisTier | None:
        """The Redis tier behind the caches, or None (single tier)."""
        return self._shared

    def tier_metrics(self) -> dict[str, TierMetrics] | None:
        """What the shared tier did per cache (L2 hits, misses, errors, latency, ...), in
        :data:`CACHE_NAMES` order; None without a shared tier."""
        if self._shared is None:
            return None
        return {name: tiered.tier_metrics() for name, tiered in self._tiers.items()}

    def shared_tier_status(self) -> SharedTierStatus | None:
        """The Redis connection now (degraded? subscribed? invalidations); None without one."""
        return None if self._shared is None else self._shared.status()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("enabled" if self._enabled else "disabled")
        tier = "" if self._shared is None else f" shared_tier={self._shared!r}"
        return f"<CacheManager {state} max_size={self._max_size}{tier}>"

    # --- typed accessors -----------------------------------------------------------------

    def get_features(self, query_hash: int, scenario: str = "current") -> QueryFeatures | None:
        """The cached features of one query, labelled with ``scenario``, or None (features are
        kept once per query: they do not depend on the scenario)."""
        features = self._features.get(feature_key(check_query_hash(query_hash)))
        scenario = check_scenario(scenario)
        if features is not None and features.scenario != scenario:
            features = features.model_copy(update={"scenario": scenario})
        return features

    def set_features(self, query_hash: int, scenario: str, features: QueryFeatures) -> None:
        """Cache the features of one query, for every scenario (for the features TTL)."""
        key = feature_key(check_query_hash(query_hash))
        check_scenario(scenario)
        if self._enabled:
            self._features.set(key, features)

    def get_prediction(
        self, query_hash: int, scenario: str = "current", model_id: str | None = None
    ) -> object | None:
        """The cached prediction for one query, scenario and model, or None."""
        return self._predictions.get(prediction_cache_key(query_hash, scenario, model_id))

    def set_prediction(
        self, query_hash: int, scenario: str, model_id: str | None, prediction: object
    ) -> None:
        """Cache a prediction for one query, scenario and model (for the predictions TTL)."""
        key = prediction_cache_key(query_hash, scenario, model_id)
        if self._enabled:
            self._predictions.set(key, prediction)

    def get_fingerprint(self, query_hash: int) -> object | None:
        """The cached fingerprint (query grouping / query results) of one query, or None."""
        return self._fingerprints.get(query_key(check_query_hash(query_hash)))

    def set_fingerprint(self, query_hash: int, value: object) -> None:
        """Cache the fingerprint of one query (for the fingerprints TTL)."""
        key = query_key(check_query_hash(query_hash))
        if self._enabled:
            self._fingerprints.set(key, value)

    def get_explain_plan(self, query_hash: int) -> object | None:
        """The cached EXPLAIN plan of one query, or None."""
        return self._explain_plans.get(query_key(check_query_hash(query_hash)))

    def set_explain_plan(self, query_hash: int, plan: object) -> None:
        """Cache the EXPLAIN plan of one query (for the explain plans TTL)."""
        key = query_key(check_query_hash(query_hash))
        if self._enabled:
            self._explain_plans.set(key, plan)

    def get_anomaly(self, query_hash: int) -> object | None:
        """The cached anomaly result of one query, or None."""
        return self._anomalies.get(query_key(check_query_hash(query_hash)))

    def set_anomaly(self, query_hash: int, result: object) -> None:
        """Cache the anomaly result of one query (for the anomalies TTL)."""
        key = query_key(check_query_hash(query_hash))
        if self._enabled:
            self._anomalies.set(key, result)

    # --- invalidation, metrics, life cycle -------------------------------------------------

    def invalidate_query(self, query_hash: int) -> int:
        """Remove every cached item of one query from all five caches; return how many.

        With a shared tier, its entries in Redis go too (one script on the query's index) and
        every other instance removes them from its L1; the count is of this instance's L1.
        Cost: the four caches keyed by the query hash alone take one delete each; predictions
        hold one entry per scenario and model, which no index tracks in L1, so their keys are
        scanned once (a snapshot, without holding the cache's lock while filtering): linear in
        the number of predictions, about 1 ms for 10,000. Entries set concurrently for the same
        query may survive.
        """
        query_hash = check_query_hash(query_hash)
        if self._shared is not None:
            return self._shared.invalidate_query(query_hash)
        return sum(tiered.drop_local_query(query_hash) for tiered in self._tiers.values())

    async def ainvalidate_query(self, query_hash: int) -> int:
        """:meth:`invalidate_query` with the shared tier's asyncio client."""
        query_hash = check_query_hash(query_hash)
        if self._shared is not None:
            return await self._shared.ainvalidate_query(query_hash)
        return sum(tiered.drop_local_query(query_hash) for tiered in self._tiers.values())

    def clear(self) -> None:
        """Empty all five caches, in every tier and instance (their metrics are kept)."""
        for tiered in self._tiers.values():
            tiered.clear()

    async def aclear(self) -> None:
        """:meth:`clear` with the shared tier's asyncio client."""
        for tiered in self._tiers.values():
            await tiered.aclear()

    def metrics(self) -> dict[str, CacheMetrics]:
        """A metrics snapshot of each cache, by name, in :data:`CACHE_NAMES` order."""
        return {name: cache.metrics() for name, cache in self._caches.items()}

    def byte_metrics(self) -> dict[str, ByteBudgetMetrics] | None:
        """Each cache's bytes of values now, its budget, the entries the budget evicted and the
        values it refused (larger than the whole budget), in :data:`CACHE_NAMES` order; None
        without a byte budget."""
        if not self._budgets:
            return None
        return {name: budget.metrics() for name, budget in self._budgets.items()}

    def close(self) -> None:
        """Close all five caches and the shared tier (idempotent); any later use raises
        CacheClosedError. Close an asyncio client of the shared tier first with :meth:`aclose`
        (``async with`` does)."""
        for tiered in self._tiers.values():
            tiered.close()
        if self._owned_tier is not None:
            self._owned_tier.close()

    async def aclose(self) -> None:
        """Close the shared tier's asyncio client of this event loop, then :meth:`close`.

        The shared tier stops its listener thread, which takes up to a poll interval: that
        wait runs in a worker thread, not on the event loop."""
        if self._owned_tier is not None:
            await self._owned_tier.aclose()
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
