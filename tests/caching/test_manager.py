"""CacheManager: the five caches, their TTLs, accessors, metrics, invalidation, disabled mode."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from tests.support.caches import MakeManager
from tests.support.factories import make_features

from pgcache import (
    CACHE_NAMES,
    Cache,
    CacheClosedError,
    CacheManager,
    CacheMetrics,
    ManualClock,
    QueryFeatures,
    Settings,
)
from pgcache.keys import feature_key as feature_cache_key

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MINUTE = 60.0


@pytest.fixture
def manager(make_manager: MakeManager) -> CacheManager:
    return make_manager()


def features_of(query_hash: int, scenario: str = "current") -> QueryFeatures:
    return make_features(query_hash, scenario=scenario)


def fill_every_cache(manager: CacheManager, query_hash: int) -> int:
    """Store six items of one query across the five caches; return how many."""
    manager.set_features(query_hash, "current", features_of(query_hash))
    manager.set_prediction(query_hash, "current", None, "default model")
    manager.set_prediction(query_hash, "current", "model-v2", "model v2")
    manager.set_fingerprint(query_hash, f"fingerprint {query_hash}")
    manager.set_explain_plan(query_hash, {"Plan": query_hash})
    manager.set_anomaly(query_hash, {"anomalous": True})
    return 6


def sizes(manager: CacheManager) -> dict[str, int]:
    return {name: metrics.size for name, metrics in manager.metrics().items()}


# --- construction -----------------------------------------------------------------------------


def test_the_five_caches_are_named_and_listed_in_order(manager: CacheManager) -> None:
    assert list(manager.caches) == list(CACHE_NAMES)
    assert CACHE_NAMES == ("features", "predictions", "fingerprints", "explain_plans", "anomalies")
    assert all(isinstance(cache, Cache) for cache in manager.caches.values())
    assert [cache.name for cache in manager.caches.values()] == list(CACHE_NAMES)


def test_defaults_are_the_original_sizes_and_ttls() -> None:
    with CacheManager() as manager:
        assert manager.enabled is True
        assert manager.max_size == 10_000
        assert {name: cache.ttl for name, cache in manager.caches.items()} == {
            "features": 15 * MINUTE,
            "predictions": 5 * MINUTE,
            "fingerprints": 10 * MINUTE,
            "explain_plans": 30 * MINUTE,
            "anomalies": 5 * MINUTE,
        }
        assert all(cache.max_size == 10_000 for cache in manager.caches.values())
        assert all(cache.cleanup_interval == 1.0 for cache in manager.caches.values())


def test_explicit_arguments_reach_every_cache(make_manager: MakeManager) -> None:
    manager = make_manager(
        max_size=50,
        feature_ttl=timedelta(seconds=1),
        prediction_ttl=2,
        fingerprint_ttl=3.5,
        explain_plan_ttl=timedelta(minutes=4),
        anomaly_ttl=5,
        cleanup_interval=timedelta(seconds=30),
    )
    assert [cache.ttl for cache in manager.caches.values()] == [1.0, 2.0, 3.5, 240.0, 5.0]
    assert {cache.max_size for cache in manager.caches.values()} == {50}
    assert {cache.cleanup_interval for cache in manager.caches.values()} == {30.0}


def test_from_settings_maps_every_cache_setting(clock: ManualClock) -> None:
    settings = Settings(
        cache_enabled=True,
        cache_max_size=123,
        feature_cache_ttl=timedelta(minutes=1),
        prediction_cache_ttl=timedelta(minutes=2),
        fingerprint_cache_ttl=timedelta(minutes=3),
        explain_plan_cache_ttl=timedelta(minutes=4),
        anomaly_cache_ttl=timedelta(minutes=6),
        cache_cleanup_interval=timedelta(seconds=7),
    )
    with CacheManager.from_settings(settings, clock=clock) as manager:
        assert manager.enabled is True
        assert manager.max_size == 123
        assert [cache.ttl for cache in manager.caches.values()] == [
            60.0,
            120.0,
            180.0,
            240.0,
            360.0,
        ]
        assert {cache.cleanup_interval for cache in manager.caches.values()} == {7.0}


def test_from_settings_with_caching_disabled_gives_a_disabled_manager() -> None:
    with CacheManager.from_settings(Settings(cache_enabled=False)) as manager:
        assert manager.enabled is False


def test_from_default_settings_equals_the_default_constructor() -> None:
    with CacheManager.from_settings(Settings()) as configured, CacheManager() as default:
        assert [c.ttl for c in configured.caches.values()] == [
            c.ttl for c in default.caches.values()
        ]
        assert configured.max_size == default.max_size


def test_cache_by_name_returns_that_cache(manager: CacheManager) -> None:
    for name in CACHE_NAMES:
        assert manager.cache(name) is manager.caches[name]


def test_an_unknown_cache_name_raises_key_error_listing_the_valid_names(
    manager: CacheManager,
) -> None:
    with pytest.raises(
        KeyError, match=r"name must be one of 'features', .*'anomalies', got 'plans'"
    ):
        manager.cache("plans")


def test_the_caches_mapping_is_read_only(manager: CacheManager) -> None:
    with pytest.raises(TypeError):
        manager.caches["extra"] = Cache()  # type: ignore[index]


# --- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "value", "error"),
    [
        ("max_size", 0, ValueError),
        ("max_size", -1, ValueError),
        ("max_size", True, TypeError),
        ("max_size", 10.0, TypeError),
        ("max_size", "10000", TypeError),
        ("feature_ttl", 0, ValueError),
        ("prediction_ttl", -5, ValueError),
        ("fingerprint_ttl", timedelta(0), ValueError),
        ("explain_plan_ttl", math.inf, ValueError),
        ("anomaly_ttl", math.nan, ValueError),
        ("feature_ttl", "15m", TypeError),
        ("anomaly_ttl", True, TypeError),
        ("cleanup_interval", 0, ValueError),
        ("enabled", "yes", TypeError),
        ("clock", 0.0, TypeError),
    ],
)
def test_a_bad_argument_raises_one_error_naming_it(
    argument: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=rf"^{argument} must be .*got {re.escape(repr(value))}"):
        CacheManager(**{argument: value})  # type: ignore[arg-type]


def test_a_max_size_above_what_a_cache_holds_raises_naming_max_size() -> None:
    with pytest.raises(ValueError, match="max_size must be between"):
        CacheManager(max_size=2**40)


@pytest.mark.parametrize("query_hash", ["42", 42.0, True, None])
def test_a_query_hash_that_is_not_an_int_raises_type_error(
    manager: CacheManager, query_hash: object
) -> None:
    with pytest.raises(TypeError, match=r"^query_hash=.*: expected an int"):
        manager.get_explain_plan(query_hash)  # type: ignore[arg-type]


@pytest.mark.parametrize("query_hash", [INT64_MAX + 1, INT64_MIN - 1])
def test_a_query_hash_outside_signed_64_bits_raises_value_error(
    manager: CacheManager, query_hash: int
) -> None:
    with pytest.raises(
        ValueError, match=rf"^query_hash={query_hash}: outside the signed 64-bit range"
    ):
        manager.set_fingerprint(query_hash, "fp")
    assert sizes(manager)["fingerprints"] == 0


@pytest.mark.parametrize("query_hash", [INT64_MIN, -1, 0, INT64_MAX])
def test_every_signed_64_bit_query_hash_is_accepted(manager: CacheManager, query_hash: int) -> None:
    fill_every_cache(manager, query_hash)
    assert manager.get_features(query_hash) == features_of(query_hash)
    assert manager.get_anomaly(query_hash) == {"anomalous": True}


def test_a_scenario_that_is_not_a_str_raises_type_error(manager: CacheManager) -> None:
    with pytest.raises(TypeError, match=r"^scenario=1: expected a str"):
        manager.get_features(7, 1)  # type: ignore[arg-type]


def test_a_model_id_that_is_not_a_str_or_none_raises_type_error(manager: CacheManager) -> None:
    with pytest.raises(TypeError, match=r"^model_id=2: expected a str or None"):
        manager.set_prediction(7, "current", 2, "p")  # type: ignore[arg-type]
    assert sizes(manager)["predictions"] == 0


# --- accessors and metrics --------------------------------------------------------------------


def test_each_accessor_pair_stores_and_returns_the_value(manager: CacheManager) -> None:
    features = features_of(-9_001)
    manager.set_features(-9_001, "current", features)
    manager.set_prediction(-9_001, "current", None, {"predicted_ms": 3.2})
    manager.set_fingerprint(-9_001, "SELECT ... FROM orders WHERE id = $1")
    manager.set_explain_plan(-9_001, {"Plan": {"Node Type": "Index Scan"}})
    manager.set_anomaly(-9_001, {"anomalous": False})
    assert manager.get_features(-9_001) is features
    assert manager.get_prediction(-9_001) == {"predicted_ms": 3.2}
    assert manager.get_fingerprint(-9_001) == "SELECT ... FROM orders WHERE id = $1"
    assert manager.get_explain_plan(-9_001) == {"Plan": {"Node Type": "Index Scan"}}
    assert manager.get_anomaly(-9_001) == {"anomalous": False}


def test_every_getter_returns_none_for_an_unknown_query(manager: CacheManager) -> None:
    assert manager.get_features(1) is None
    assert manager.get_prediction(1) is None
    assert manager.get_fingerprint(1) is None
    assert manager.get_explain_plan(1) is None
    assert manager.get_anomaly(1) is None


def test_features_are_kept_once_per_query_for_every_scenario(manager: CacheManager) -> None:
    manager.set_features(5, "current", features_of(5, "current"))
    manager.set_features(5, "peak", features_of(5, "peak"))
    assert len(manager.cache("features")) == 1
    assert manager.get_features(5, "peak") == features_of(5, "peak")
    assert manager.get_features(5, "idle") == features_of(5, "idle")


def test_features_are_answered_as_stored_in_their_own_scenario(manager: CacheManager) -> None:
    features = features_of(5, "peak")
    manager.set_features(5, "peak", features)
    assert manager.get_features(5, "peak") is features


def test_features_are_stored_under_the_cached_feature_extractor_key(
    manager: CacheManager,
) -> None:
    features = features_of(-77, "peak")
    manager.set_features(-77, "peak", features)
    assert manager.cache("features").get(feature_cache_key(-77)) is features
    assert feature_cache_key(-77) == -77


def test_predictions_are_kept_per_scenario_and_model(manager: CacheManager) -> None:
    manager.set_prediction(5, "current", None, "default")
    manager.set_prediction(5, "current", "v2", "v2")
    manager.set_prediction(5, "peak", "v2", "peak v2")
    assert manager.get_prediction(5) == "default"
    assert manager.get_prediction(5, "current", "v2") == "v2"
    assert manager.get_prediction(5, "peak", "v2") == "peak v2"
    assert manager.get_prediction(5, "peak") is None


def test_metrics_count_the_hits_misses_and_sizes_of_each_cache(manager: CacheManager) -> None:
    manager.set_features(1, "current", features_of(1))
    manager.get_features(1)  # hit
    manager.get_features(1)  # hit
    manager.get_features(2)  # miss
    manager.set_prediction(1, "current", None, "p")
    manager.get_prediction(1, "peak")  # miss
    manager.get_fingerprint(3)  # miss
    manager.set_explain_plan(1, "plan")
    manager.set_explain_plan(2, "plan")
    manager.get_explain_plan(2)  # hit
    metrics = manager.metrics()
    assert list(metrics) == list(CACHE_NAMES)
    assert all(isinstance(m, CacheMetrics) for m in metrics.values())
    counts = {name: (m.hits, m.misses, m.size) for name, m in metrics.items()}
    assert counts == {
        "features": (2, 1, 1),
        "predictions": (0, 1, 1),
        "fingerprints": (0, 1, 0),
        "explain_plans": (1, 0, 2),
        "anomalies": (0, 0, 0),
    }
    assert metrics["features"].hit_rate == pytest.approx(200 / 3)


def test_a_full_lru_cache_evicts_the_least_recently_used_entry(make_manager: MakeManager) -> None:
    manager = make_manager(max_size=2, policy="lru")
    manager.set_anomaly(1, "a")
    manager.set_anomaly(2, "b")
    manager.get_anomaly(1)
    manager.set_anomaly(3, "c")
    assert manager.get_anomaly(2) is None
    assert (manager.get_anomaly(1), manager.get_anomaly(3)) == ("a", "c")
    assert manager.metrics()["anomalies"].evictions == 1


# --- TTLs (ManualClock: no sleeping) ----------------------------------------------------------

_SETTERS: dict[str, Callable[[CacheManager, int], None]] = {
    "features": lambda m, h: m.set_features(h, "current", features_of(h)),
    "predictions": lambda m, h: m.set_prediction(h, "current", None, "p"),
    "fingerprints": lambda m, h: m.set_fingerprint(h, "fp"),
    "explain_plans": lambda m, h: m.set_explain_plan(h, "plan"),
    "anomalies": lambda m, h: m.set_anomaly(h, "anomaly"),
}
_GETTERS: dict[str, Callable[[CacheManager, int], object]] = {
    "features": lambda m, h: m.get_features(h),
    "predictions": lambda m, h: m.get_prediction(h),
    "fingerprints": lambda m, h: m.get_fingerprint(h),
    "explain_plans": lambda m, h: m.get_explain_plan(h),
    "anomalies": lambda m, h: m.get_anomaly(h),
}
_DEFAULT_TTL_MINUTES = {
    "features": 15,
    "predictions": 5,
    "fingerprints": 10,
    "explain_plans": 30,
    "anomalies": 5,
}


@pytest.mark.parametrize("name", CACHE_NAMES)
def test_an_item_lives_for_its_cache_ttl_and_no_longer(
    manager: CacheManager, clock: ManualClock, name: str
) -> None:
    ttl = _DEFAULT_TTL_MINUTES[name] * MINUTE
    _SETTERS[name](manager, 42)
    clock.advance(ttl - 1)
    assert _GETTERS[name](manager, 42) is not None
    clock.advance(1)
    assert _GETTERS[name](manager, 42) is None
    assert manager.metrics()[name].expirations == 1


def test_each_cache_expires_on_its_own_ttl(make_manager: MakeManager, clock: ManualClock) -> None:
    manager = make_manager(
        feature_ttl=10, prediction_ttl=20, fingerprint_ttl=30, explain_plan_ttl=40, anomaly_ttl=50
    )
    for name in CACHE_NAMES:
        _SETTERS[name](manager, 1)
    clock.advance(25)
    alive = [name for name in CACHE_NAMES if _GETTERS[name](manager, 1) is not None]
    assert alive == ["fingerprints", "explain_plans", "anomalies"]


# --- invalidation -----------------------------------------------------------------------------


def test_invalidate_query_removes_every_item_of_that_query_from_all_five_caches(
    manager: CacheManager,
) -> None:
    stored = fill_every_cache(manager, -4_221_331_203_398_113)
    assert manager.invalidate_query(-4_221_331_203_398_113) == stored
    assert sizes(manager) == dict.fromkeys(CACHE_NAMES, 0)


def test_invalidate_query_leaves_other_queries_alone(manager: CacheManager) -> None:
    # 1 is a prefix of 12 and 1-digit "-1" shares digits: the key scheme must keep them apart.
    for query_hash in (1, 12, -1, 21):
        fill_every_cache(manager, query_hash)
    assert manager.invalidate_query(1) == 6
    assert sizes(manager) == {
        "features": 3,
        "predictions": 6,
        "fingerprints": 3,
        "explain_plans": 3,
        "anomalies": 3,
    }
    assert manager.get_features(12) == features_of(12)
    assert manager.get_prediction(-1, "current", "model-v2") == "model v2"
    assert manager.get_fingerprint(21) == "fingerprint 21"


def test_invalidate_query_of_an_unknown_query_removes_nothing(manager: CacheManager) -> None:
    fill_every_cache(manager, 5)
    assert manager.invalidate_query(6) == 0
    assert sum(sizes(manager).values()) == 6


def test_invalidate_query_does_not_count_lookups(manager: CacheManager) -> None:
    fill_every_cache(manager, 5)
    manager.invalidate_query(5)
    assert all(m.hits == 0 and m.misses == 0 for m in manager.metrics().values())


def test_invalidate_query_rejects_a_bad_query_hash(manager: CacheManager) -> None:
    with pytest.raises(TypeError, match=r"^query_hash=.*: expected an int"):
        manager.invalidate_query("5")  # type: ignore[arg-type]


def test_clear_empties_all_five_caches(manager: CacheManager) -> None:
    fill_every_cache(manager, 5)
    manager.clear()
    assert sizes(manager) == dict.fromkeys(CACHE_NAMES, 0)


# --- disabled mode ----------------------------------------------------------------------------


def test_a_disabled_manager_stores_nothing(make_manager: MakeManager) -> None:
    manager = make_manager(enabled=False)
    fill_every_cache(manager, 5)
    assert sizes(manager) == dict.fromkeys(CACHE_NAMES, 0)


def test_a_disabled_manager_misses_every_get_and_counts_the_misses(
    make_manager: MakeManager,
) -> None:
    manager = make_manager(enabled=False)
    fill_every_cache(manager, 5)
    for name in CACHE_NAMES:
        assert _GETTERS[name](manager, 5) is None
        assert _GETTERS[name](manager, 5) is None
    assert {name: (m.hits, m.misses) for name, m in manager.metrics().items()} == dict.fromkeys(
        CACHE_NAMES, (0, 2)
    )


def test_a_disabled_manager_still_validates_arguments(make_manager: MakeManager) -> None:
    manager = make_manager(enabled=False)
    with pytest.raises(TypeError, match=r"^query_hash=.*: expected an int"):
        manager.set_anomaly("5", "a")  # type: ignore[arg-type]


# --- life cycle -------------------------------------------------------------------------------


def test_close_closes_all_five_caches(manager: CacheManager) -> None:
    assert manager.closed is False
    manager.close()
    assert manager.closed is True
    assert all(cache.closed for cache in manager.caches.values())


def test_close_is_idempotent(manager: CacheManager) -> None:
    manager.close()
    manager.close()
    assert manager.closed is True


def test_any_use_after_close_raises_cache_closed_error(manager: CacheManager) -> None:
    manager.close()
    with pytest.raises(CacheClosedError):
        manager.get_features(1)
    with pytest.raises(CacheClosedError):
        manager.set_anomaly(1, "a")
    with pytest.raises(CacheClosedError):
        manager.invalidate_query(1)


def test_the_with_block_closes_the_manager_even_on_error() -> None:
    def use_and_fail() -> CacheManager:
        with CacheManager() as manager:
            manager.set_anomaly(1, "a")
            raise RuntimeError(manager)

    with pytest.raises(RuntimeError) as raised:
        use_and_fail()
    manager = raised.value.args[0]
    assert isinstance(manager, CacheManager)
    assert manager.closed is True


async def test_the_async_with_block_closes_the_manager() -> None:
    async with CacheManager() as manager:
        manager.set_anomaly(1, "a")
        assert manager.get_anomaly(1) == "a"
    assert manager.closed is True


def test_repr_shows_the_state(make_manager: MakeManager) -> None:
    manager = make_manager(enabled=False, max_size=7)
    assert repr(manager) == "<CacheManager disabled max_size=7>"
    manager.close()
    assert repr(manager) == "<CacheManager closed max_size=7>"
