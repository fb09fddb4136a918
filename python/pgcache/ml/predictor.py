"""Cached predictions: features from an extractor, predictions from a client, one key each.

Given a :class:`pgcache.CacheManager`, predictions go through its tiered ``predictions`` cache
(:meth:`pgcache.CacheManager.tier`): with ``REDIS_URL`` set, one ML call per key across
instances; without it, the manager's cache alone, as before.

A hit costs the features' lookup, one key (a tuple) and one lookup: the digest of the features
a stored prediction must have been made from is computed once per features object (a cached
extractor answers the very object it stored), not on every call.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from pgcache._core import Cache
from pgcache._validate import check_model_id, check_scenario
from pgcache.caching.tiered import TieredCache
from pgcache.keys import PredictionKey, prediction_key
from pgcache.ml.client import AsyncMLClient, MLClient
from pgcache.ml.models import Prediction, features_digest

if TYPE_CHECKING:
    from pgcache.caching.manager import CacheManager
    from pgcache.postgres.features import AsyncFeatureExtractor, FeatureExtractor, QueryFeatures


class _Digests:
    """:func:`features_digest` of live features objects, by identity (computed once each)."""

    __slots__ = ("__weakref__", "_by_id", "_lock")

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[weakref.ref[QueryFeatures], str]] = {}
        self._lock = threading.Lock()

    def of(self, features: QueryFeatures) -> str:
        known = self._by_id.get(id(features))
        if known is not None and known[0]() is features:
            return known[1]
        digest = features_digest(features)
        ident = id(features)
        forget = partial(_forget, weakref.ref(self), ident)
        with self._lock:
            self._by_id[ident] = (weakref.ref(features, forget), digest)
        return digest

    def drop(self, ident: int, ref: weakref.ref[QueryFeatures]) -> None:
        with self._lock:
            known = self._by_id.get(ident)
            if known is not None and known[0] is ref:
                del self._by_id[ident]


def _forget(digests: weakref.ref[_Digests], ident: int, ref: weakref.ref[QueryFeatures]) -> None:
    owner = digests()
    if owner is not None:
        owner.drop(ident, ref)


def _checked(scenario: object, model_id: object) -> tuple[str, str | None]:
    return check_scenario(scenario), check_model_id(model_id)


class _PredictionStore:
    """What the sync and async predictors share: where predictions live and everything but I/O.

    A plain Cache, or a CacheManager's (tiered) ``"predictions"`` cache; both through a
    :class:`TieredCache` (a plain Cache is its own L1 and nothing more). A disabled manager
    stores nothing: every lookup misses, counted by the manager's predictions cache.
    """

    __slots__ = ("cache", "digests", "enabled", "tiered")

    def __init__(self, cache_or_manager: Cache[Any, Any] | CacheManager) -> None:
        if isinstance(cache_or_manager, Cache):
            self.enabled = True
            self.tiered: TieredCache[Any, Any] = TieredCache(cache_or_manager)
        elif callable(getattr(cache_or_manager, "tier", None)):
            self.enabled = cache_or_manager.enabled  # fixed for a manager's life
            self.tiered = cache_or_manager.tier("predictions")
        else:
            raise TypeError(
                f"cache_or_manager={cache_or_manager!r}: expected a pgcache.Cache or a "
                "pgcache.CacheManager"
            )
        self.cache: Cache[Any, Any] = self.tiered.l1
        self.digests = _Digests()

    def made_from(self, cached: object, features: QueryFeatures) -> bool:
        """Whether ``cached`` is a prediction made from ``features`` (equal digests)."""
        # type() first: isinstance of a pydantic model class goes through ABCMeta (thousands
        # of instructions).
        if type(cached) is not Prediction and not isinstance(cached, Prediction):
            return False
        return cached.features_digest == self.digests.of(features)


class _CachedPredictorBase:
    """The configuration the two predictors share."""

    def __init__(self, cache_or_manager: Cache[Any, Any] | CacheManager) -> None:
        self._store = _PredictionStore(cache_or_manager)
        # A hit: one lookup, one digest, no call of a method of ours (each is a frame).
        self._l1 = self._store.cache
        self._digests = self._store.digests

    @property
    def cache(self) -> Cache[Any, Any]:
        """The cache the predictions are kept in."""
        return self._store.cache


class CachedPredictor(_CachedPredictorBase):
    """Predictions for queries by hash: features from ``extractor``, predictions from ``client``.

    ``extractor`` is any :class:`pgcache.FeatureExtractor` (typically a
    :class:`pgcache.CachedFeatureExtractor`). Predictions are kept in
    ``cache_or_manager`` (a :class:`pgcache.Cache` or a :class:`pgcache.CacheManager`, then its
    ``"predictions"`` cache, whose TTL is 5 minutes by default) under
    :func:`pgcache.keys.prediction_key` (the manager's key: ``manager.get_prediction`` finds
    them and :meth:`pgcache.CacheManager.invalidate_query` removes them). A repeated call makes
    no HTTP request; a stored prediction whose ``features_digest`` differs from the digest of
    the current features is a miss, so changed features are never answered with the prediction
    made for the old ones.
    Concurrent misses of one key from many threads make
    one request. Errors are raised and never cached.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        client: MLClient,
        cache_or_manager: Cache[Any, Any] | CacheManager,
    ) -> None:
        if not isinstance(client, MLClient):
            raise TypeError(f"client={client!r}: expected a pgcache.MLClient")
        super().__init__(cache_or_manager)
        self.extractor = extractor
        self.client = client

    def predict_query(
        self, query_hash: int, scenario: str = "current", *, model_id: str | None = None
    ) -> Prediction:
        """The prediction for ``query_hash``'s current features, from the cache when it has it."""
        if scenario.__class__ is not str or (
            model_id is not None and model_id.__class__ is not str
        ):
            scenario, model_id = _checked(scenario, model_id)
        features = self.extractor.extract_query_features(query_hash, scenario)
        # The plain tuple finds the entry stored under the PredictionKey (pgcache.keys); the
        # extractor checked query_hash, and features read from a pydantic model are slow.
        cached = self._l1.get((query_hash, scenario, model_id))
        if cached.__class__ is Prediction and cached.features_digest == self._digests.of(features):
            return cached
        key = prediction_key(features.query_hash, scenario, model_id)
        return self._miss(features, key, cached)

    def _miss(self, features: QueryFeatures, key: PredictionKey, cached: object) -> Prediction:
        store = self._store
        if cached is not None and store.made_from(cached, features):  # a Prediction subclass
            return cached  # type: ignore[return-value]  # made_from: a Prediction
        predict = partial(self.client.predict, features, scenario=key[1], model_id=key[2])
        if not store.enabled:
            return predict()
        if cached is None:  # not in L1: Redis, else one request for every thread
            cached = store.tiered.fill(key, predict)
            if store.made_from(cached, features):
                return cached  # type: ignore[return-value]  # made_from: a Prediction
        fresh = predict()  # stored for features that have changed since: replace it
        store.tiered.set(key, fresh)
        return fresh


class AsyncCachedPredictor(_CachedPredictorBase):
    """The asyncio twin of :class:`CachedPredictor` (an async extractor and
    :class:`AsyncMLClient`; concurrent misses of one key on one event loop make one request)."""

    def __init__(
        self,
        extractor: AsyncFeatureExtractor,
        client: AsyncMLClient,
        cache_or_manager: Cache[Any, Any] | CacheManager,
    ) -> None:
        if not isinstance(client, AsyncMLClient):
            raise TypeError(f"client={client!r}: expected a pgcache.AsyncMLClient")
        super().__init__(cache_or_manager)
        self.extractor = extractor
        self.client = client

    async def predict_query(
        self, query_hash: int, scenario: str = "current", *, model_id: str | None = None
    ) -> Prediction:
        """The prediction for ``query_hash``'s current features, from the cache when it has it."""
        if scenario.__class__ is not str or (
            model_id is not None and model_id.__class__ is not str
        ):
            scenario, model_id = _checked(scenario, model_id)
        features = await self.extractor.extract_query_features(query_hash, scenario)
        cached = self._l1.get((query_hash, scenario, model_id))  # as in CachedPredictor
        if cached.__class__ is Prediction and cached.features_digest == self._digests.of(features):
            return cached
        key = prediction_key(features.query_hash, scenario, model_id)
        return await self._miss(features, key, cached)

    async def _miss(
        self, features: QueryFeatures, key: PredictionKey, cached: object
    ) -> Prediction:
        store = self._store
        if cached is not None and store.made_from(cached, features):  # as in CachedPredictor
            return cached  # type: ignore[return-value]  # made_from: a Prediction
        predict: Callable[[], Awaitable[Prediction]] = partial(
            self.client.predict, features, scenario=key[1], model_id=key[2]
        )
        if not store.enabled:
            return await predict()
        if cached is None:  # not in L1: Redis, else one request for every task
            cached = await store.tiered.afill(key, predict)
            if store.made_from(cached, features):
                return cached  # type: ignore[return-value]  # made_from: a Prediction
        fresh = await predict()  # stored for features that have changed since: replace it
        await store.tiered.aset(key, fresh)
        return fresh
