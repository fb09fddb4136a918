"""The key of every cached thing, in one place: the manager, the cached extractors and
predictors, the invalidation of a query (and the shared tier) all build keys here.

=================  ===========================================  ==============================
cache              key                                          built by
=================  ===========================================  ==============================
``features``       ``"features:{query_hash}:{scenario}"``       :func:`feature_key`
``predictions``    ``PredictionKey(query_hash, scenario,        :func:`prediction_key`
                   model_id)``
``fingerprints``,  the query hash (an int)                      :func:`query_key`
``explain_plans``,
``anomalies``
=================  ===========================================  ==============================

:func:`query_hash_of` reads the query hash back out of any of these keys, which is how
invalidating one query finds its entries. A prediction is stored with the digest of the
features it was made from (``Prediction.features_digest``), not in its key: whoever reads it
(the manager or a cached predictor) finds it under the same key, and a cached predictor
treats a prediction made from other features as a miss.
This module checks nothing and imports no third-party package.
"""

from __future__ import annotations

from typing import Final, NamedTuple

CACHE_NAMES: Final = ("features", "predictions", "fingerprints", "explain_plans", "anomalies")
"""The five kinds of cached answers, in the order a :class:`pgcache.CacheManager` lists them."""

_FEATURES_PREFIX: Final = "features:"


class PredictionKey(NamedTuple):
    """The key of one prediction: which query, in which scenario, by which model."""

    query_hash: int
    scenario: str
    model_id: str | None


def feature_key(query_hash: int, scenario: str) -> str:
    """The key of one query's features in one scenario: ``features:{query_hash}:{scenario}``."""
    return f"{_FEATURES_PREFIX}{query_hash}:{scenario}"


def prediction_key(query_hash: int, scenario: str, model_id: str | None) -> PredictionKey:
    """The key of one prediction: ``PredictionKey(query_hash, scenario, model_id)``."""
    return PredictionKey(query_hash, scenario, model_id)


def query_key(query_hash: int) -> int:
    """The key of a query's fingerprint, EXPLAIN plan and anomaly result: its hash."""
    return query_hash


def query_hash_of(key: object) -> int | None:
    """The query hash inside any key built by this module; None for a foreign key."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, PredictionKey):
        return key.query_hash
    if isinstance(key, tuple) and key and isinstance(key[0], int):
        return key[0]  # a PredictionKey that lost its type (e.g. read back from JSON)
    if isinstance(key, str) and key.startswith(_FEATURES_PREFIX):
        number, _, _ = key[len(_FEATURES_PREFIX) :].partition(":")
        try:
            return int(number)
        except ValueError:
            return None
    return None
