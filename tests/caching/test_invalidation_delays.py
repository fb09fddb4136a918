"""invalidation_delays: the measured time from an invalidation on one instance to another instance
no longer serving the old value (what the demo and the benchmarks report)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgcache import CacheManager, Settings
from pgcache.caching.propagation import invalidation_delays


@pytest.fixture
def two_instances(redis_url: str, key_prefix: str) -> Iterator[tuple[CacheManager, CacheManager]]:
    settings = Settings.load(redis_url=redis_url, redis_key_prefix=key_prefix)
    with (
        CacheManager.from_settings(settings) as first,
        CacheManager.from_settings(settings) as second,
    ):
        yield first, second


def test_every_sample_is_a_delay_after_which_the_receiver_misses(
    two_instances: tuple[CacheManager, CacheManager],
) -> None:
    sender, receiver = two_instances
    delays = invalidation_delays(sender, receiver, samples=20)
    assert len(delays) == 20
    assert all(delay >= 0 for delay in delays)
    assert len(receiver.cache("anomalies")) == 0  # every probe it read is gone again


def test_a_manager_without_a_shared_tier_has_nothing_to_measure() -> None:
    with (
        CacheManager() as first,
        CacheManager() as second,
        pytest.raises(ValueError, match="no shared tier"),
    ):
        invalidation_delays(first, second, samples=1)


def test_two_namespaces_are_not_two_instances(redis_url: str, key_prefix: str) -> None:
    settings = [
        Settings.load(redis_url=redis_url, redis_key_prefix=f"{key_prefix}{side}:")
        for side in ("a", "b")
    ]
    with (
        CacheManager.from_settings(settings[0]) as one,
        CacheManager.from_settings(settings[1]) as two,
        pytest.raises(TimeoutError, match="announcement"),
    ):
        invalidation_delays(one, two, samples=1, timeout=0.2)
