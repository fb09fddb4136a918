"""CacheManager on the shared tier: REDIS_* settings read by Settings, tiered caches built by
from_settings when REDIS_URL is set, accessors and invalidation reaching every instance."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from tests.support.caches import WaitUntil
from tests.support.factories import make_features
from tests.support.redis import delivered

from pgcache import CacheManager, ConfigError, QueryFeatures, Settings
from pgcache.keys import feature_key

MakeManager = Callable[..., CacheManager]
PLAN = {"Plan": {"Node Type": "Seq Scan"}}


@pytest.fixture
def make_manager(redis_url: str, key_prefix: str) -> Iterator[MakeManager]:
    """Managers from Settings on the test's Redis and namespace (two are two instances)."""
    created: list[CacheManager] = []

    def make(**overrides: Any) -> CacheManager:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "redis_key_prefix": key_prefix,
            "redis_socket_timeout": "500ms",
            "redis_connect_timeout": "500ms",
            "cache_cleanup_interval": "1h",
        }
        values.update(overrides)
        manager = CacheManager.from_settings(Settings.load(**values))
        created.append(manager)
        return manager

    yield make
    for manager in created:
        manager.close()


def _delivered(*managers: CacheManager) -> bool:
    return delivered(*(manager.tier("features") for manager in managers))


# --- settings ------------------------------------------------------------------------------------


def test_redis_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis+cluster://10.0.0.5:7000")
    monkeypatch.setenv("REDIS_KEY_PREFIX", "app-a:")
    monkeypatch.setenv("REDIS_SOCKET_TIMEOUT", "100ms")
    monkeypatch.setenv("REDIS_CONNECT_TIMEOUT", "2s")
    monkeypatch.setenv("REDIS_CACHE_TTLS", "features=1h, explain_plans=2h")
    settings = Settings.load()
    assert settings.redis_url == "redis+cluster://10.0.0.5:7000"
    assert settings.redis_key_prefix == "app-a:"
    assert settings.redis_socket_timeout == timedelta(milliseconds=100)
    assert settings.redis_connect_timeout == timedelta(seconds=2)
    assert settings.redis_ttls() == {
        "features": timedelta(hours=1),
        "explain_plans": timedelta(hours=2),
    }


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("REDIS_URL", "http://cache:6379", "REDIS_URL='http://cache:6379': expected a URL"),
        ("REDIS_URL", "redis://:hunter2@cache:x/0", "REDIS_URL='redis://:***@cache:x/0'"),
        ("REDIS_KEY_PREFIX", "two words", "REDIS_KEY_PREFIX='two words'"),
        ("REDIS_SOCKET_TIMEOUT", "soon", "REDIS_SOCKET_TIMEOUT='soon'"),
        ("REDIS_CACHE_TTLS", "plans=1h", "REDIS_CACHE_TTLS='plans=1h': expected cache=duration"),
        ("REDIS_CACHE_TTLS", "features=-1s", "durations must be positive"),
    ],
)
def test_a_bad_redis_variable_is_named_with_its_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert named in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_redis_password_is_never_shown() -> None:
    settings = Settings(redis_url="redis://:hunter2@cache:6379/0?password=hunter2")
    shown = [str(settings), repr(settings), settings.model_dump_json(), str(settings.describe())]
    assert ["hunter2" in text for text in shown] == [False] * 4
    assert settings.redis_url == "redis://:hunter2@cache:6379/0?password=hunter2"


def test_an_empty_redis_url_means_one_tier() -> None:
    with CacheManager.from_settings(Settings.load(redis_url="")) as manager:
        assert manager.shared_tier is None
        assert manager.tier_metrics() is None
        assert manager.shared_tier_status() is None


# --- the manager on the shared tier --------------------------------------------------------------


def test_from_settings_builds_tiered_caches_when_redis_url_is_set(
    make_manager: MakeManager, key_prefix: str
) -> None:
    manager = make_manager()
    assert manager.shared_tier is not None
    assert manager.shared_tier.keys.prefix == key_prefix
    assert all(tiered.tier is manager.shared_tier for tiered in manager.tiers.values())
    assert set(manager.tier_metrics() or {}) == set(manager.caches)


def test_a_disabled_manager_uses_no_redis(make_manager: MakeManager) -> None:
    manager = make_manager(cache_enabled=False)
    assert manager.shared_tier is None
    manager.set_explain_plan(-42, PLAN)
    assert manager.get_explain_plan(-42) is None


def test_what_one_instance_sets_the_other_reads(make_manager: MakeManager) -> None:
    first, second = make_manager(), make_manager()
    features = make_features(-42)
    first.set_features(-42, "current", features)
    first.set_explain_plan(-42, PLAN)
    first.set_prediction(-42, "current", "m1", {"ms": 12.5})
    got = second.get_features(-42)
    assert isinstance(got, QueryFeatures)
    assert got == features
    assert second.get_explain_plan(-42) == PLAN
    assert second.get_prediction(-42, "current", "m1") == {"ms": 12.5}
    assert (second.tier_metrics() or {})["features"].l2_hits == 1


def test_invalidating_a_query_in_one_instance_reaches_the_other(
    make_manager: MakeManager, wait_until: WaitUntil
) -> None:
    first, second = make_manager(), make_manager()
    first.set_features(-42, "current", make_features(-42))
    first.set_features(-42, "peak", make_features(-42, scenario="peak"))
    first.set_anomaly(-42, {"anomalous": True})
    first.set_anomaly(7, {"anomalous": False})
    assert wait_until(lambda: _delivered(first, second))
    assert second.get_features(-42, "peak") is not None
    assert second.get_anomaly(-42) is not None

    assert first.invalidate_query(-42) == 2  # the features (one entry, every scenario), the anomaly
    assert wait_until(lambda: second.cache("anomalies").get(-42) is None)
    assert wait_until(lambda: second.cache("features").get(feature_key(-42)) is None)
    assert (second.get_features(-42, "peak"), second.get_anomaly(-42)) == (None, None)
    assert second.get_anomaly(7) == {"anomalous": False}


def test_clearing_in_one_instance_empties_every_instance(
    make_manager: MakeManager, wait_until: WaitUntil
) -> None:
    first, second = make_manager(), make_manager()
    first.set_fingerprint(1, "f1")
    first.set_explain_plan(1, PLAN)
    assert wait_until(lambda: _delivered(first, second))
    assert second.get_fingerprint(1) == "f1"
    first.clear()
    assert wait_until(lambda: len(second.cache("fingerprints")) == 0)
    assert (second.get_fingerprint(1), second.get_explain_plan(1)) == (None, None)


def test_the_redis_ttl_of_a_cache_comes_from_the_settings(
    make_manager: MakeManager, redis_url: str
) -> None:
    manager = make_manager(redis_cache_ttls="explain_plans=2h")
    manager.set_explain_plan(-42, PLAN)
    manager.set_anomaly(-42, {"anomalous": False})
    tier = manager.shared_tier
    assert tier is not None
    with redis.Redis.from_url(redis_url) as raw:
        plan_ttl = raw.pttl(str(tier.keys.entry("explain_plans", -42)))
        anomaly_ttl = raw.pttl(str(tier.keys.entry("anomalies", -42)))
    assert 30 * 60_000 < plan_ttl <= 2 * 3600_000
    assert 0 < anomaly_ttl <= 5 * 60_000


def test_tier_names_only_the_five_caches(make_manager: MakeManager) -> None:
    with pytest.raises(KeyError, match="features"):
        make_manager().tier("plans")


def test_l2_ttls_naming_no_cache_are_refused() -> None:
    with pytest.raises(ValueError, match="l2_ttls names no cache"):
        CacheManager(l2_ttls={"plans": 60.0})


async def test_the_async_twins_reach_the_other_instance(
    make_manager: MakeManager, wait_until: WaitUntil
) -> None:
    first, second = make_manager(), make_manager()
    await first.tier("anomalies").aset(-42, {"anomalous": True})
    assert await second.tier("anomalies").aget(-42) == {"anomalous": True}
    assert await first.ainvalidate_query(-42) == 1
    assert wait_until(lambda: second.cache("anomalies").get(-42) is None)
    await first.tier("fingerprints").aset(5, "f")
    await first.aclear()
    assert await second.tier("fingerprints").aget(5) is None
    await first.aclose()
    await second.aclose()
