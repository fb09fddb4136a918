"""Cached predictions: features from an extractor, predictions from a client, one key each.

Given a :class:`pgcache.CacheManager`, predictions go through its tiered ``predictions`` cache
(:meth:`pgcache.CacheManager.tier`): with ``REDIS_URL`` set, one ML call per key across
instances; without it, the manager's cache alone, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pgcache._core import Cache
from pgcache._validate import check_model_id, check_scenario
from pgcache.caching.tiered import TieredCache
from pgcache.keys import prediction_key
from pgcache.ml.client import AsyncMLClient, MLClient
from pgcache.ml.models import Prediction, features_digest

if TYPE_CHECKING:
    from pgcache.caching.manager import CacheManager
    from pgcache.postgres.features import AsyncFeatureExtractor, FeatureExtractor


def _made_from(cached: object, digest: str) -> bool:
    """Whether ``cached`` is a prediction made from the features whose digest is ``digest``."""
    return isinstance(cached, Prediction) and cached.features_digest == digest


class _PredictionStore:
    """Where predictions live: a plain Cache, or a CacheManager's (tiered) ``"predictions"``
    cache; both through a :class:`TieredCache` (a plain Cache is its own L1 and nothing more)."""

    def __init__(self, cache_or_manager: Cache[Any, Any] | CacheManager) -> None:
        if isinstance(cache_or_manager, Cache):
            self._manager: CacheManager | None = None
            self.tiered: TieredCache[Any, Any] = TieredCache(cache_or_manager)
        elif callable(getattr(cache_or_manager, "tier", None)):
            self._manager = cache_or_manager
            self.tiered = cache_or_manager.tier("predictions")
        else:
            raise TypeError(
                f"cache_or_manager={cache_or_manager!r}: expected a pgcache.Cache or a "
                "pgcache.CacheManager"
            )
        self.cache: Cache[Any, Any] = self.tiered.l1

    def enabled(self, query_hash: int, scenario: str, model_id: str | None) -> bool:
        """Whether to cache; a disabled manager still counts the miss in its metrics."""
        if self._manager is None or self._manager.enabled:
            return True
        self._manager.get_prediction(query_hash, scenario, model_id)
        return False


class CachedPredictor:
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
    one request (``Cache.get_or_set``). Errors are raised and never cached.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        client: MLClient,
        cache_or_manager: Cache[Any, Any] | CacheManager,
    ) -> None:
        if not isinstance(client, MLClient):
            raise TypeError(f"client={client!r}: expected a pgcache.MLClient")
        self.extractor = extractor
        self.client = client
        self._store = _PredictionStore(cache_or_manager)

    @property
    def cache(self) -> Cache[Any, Any]:
        """The cache the predictions are kept in."""
        return self._store.cache

    def predict_query(
        self, query_hash: int, scenario: str = "current", *, model_id: str | None = None
    ) -> Prediction:
        """The prediction for ``query_hash``'s current features, from the cache when it has it."""
        scenario = check_scenario(scenario)
        model_id = check_model_id(model_id)
        features = self.extractor.extract_query_features(query_hash, scenario)
        if not self._store.enabled(features.query_hash, scenario, model_id):
            return self.client.predict(features, scenario=scenario, model_id=model_id)
        key = prediction_key(features.query_hash, scenario, model_id)
        digest = features_digest(features)

        def predict() -> Prediction:
            return self.client.predict(features, scenario=scenario, model_id=model_id)

        prediction: object = self._store.tiered.get_or_set(key, predict)
        if _made_from(prediction, digest):
            return cast(Prediction, prediction)
        fresh = predict()  # stored for features that have changed since: replace it
        self._store.tiered.set(key, fresh)
        return fresh


class AsyncCachedPredictor:
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
        self.extractor = extractor
        self.client = client
        self._store = _PredictionStore(cache_or_manager)

    @property
    def cache(self) -> Cache[Any, Any]:
        """The cache the predictions are kept in."""
        return self._store.cache

    async def predict_query(
        self, query_hash: int, scenario: str = "current", *, model_id: str | None = None
    ) -> Prediction:
        """The prediction for ``query_hash``'s current features, from the cache when it has it."""
        scenario = check_scenario(scenario)
        model_id = check_model_id(model_id)
        features = await self.extractor.extract_query_features(query_hash, scenario)
        if not self._store.enabled(features.query_hash, scenario, model_id):
            return await self.client.predict(features, scenario=scenario, model_id=model_id)
        key = prediction_key(features.query_hash, scenario, model_id)
        digest = features_digest(features)

        async def predict() -> Prediction:
            return await self.client.predict(features, scenario=scenario, model_id=model_id)

        prediction: object = await self._store.tiered.aget_or_set(key, predict)
        if _made_from(prediction, digest):
            return cast(Prediction, prediction)
        fresh = await predict()  # stored for features that have changed since: replace it
        await self._store.tiered.aset(key, fresh)
        return fresh
