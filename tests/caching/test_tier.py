"""TieredCache against a real redis-server: L1, then L2, then the loader; write-through with PX;
invalidation reaching the other instance; one load per key across threads and instances; values
that are data, never code. Two tiers on one URL and prefix are two instances."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import redis
from tests.support.caches import WaitUntil
from tests.support.redis import Loader, MakeTier, MakeTiered, concurrent_loads, delivered

from pgcache import Cache, ManualClock
from pgcache.caching.redis_tier import RedisTier
from pgcache.caching.tiered import TieredCache

PLAN = {"Plan": {"Node Type": "Seq Scan", "Total Cost": 12.5}}
NEW_PLAN = {"Plan": {"Node Type": "Index Scan", "Total Cost": 0.5}}


@pytest.fixture
def raw(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def pair(make_tier: MakeTier, make_tiered: MakeTiered) -> tuple[TieredCache[Any, Any], ...]:
    """The cache ``plans`` in two instances."""
    return make_tiered(make_tier()), make_tiered(make_tier())


def _entry(cache: TieredCache[Any, Any], key: object) -> str:
    assert cache.tier is not None
    entry = cache.tier.keys.entry(cache.name, key)
    assert entry is not None
    return entry


# --- read path and write-through ---------------------------------------------------------------


def test_an_entry_loaded_by_one_instance_is_an_l2_hit_in_the_other(
    pair: tuple[TieredCache[Any, Any], ...],
) -> None:
    first, second = pair
    loader = Loader(PLAN)
    assert first.get_or_set(-42, loader) == PLAN
    assert second.get_or_set(-42, loader) == PLAN
    assert loader.calls == 1
    assert second.tier_metrics().l2_hits == 1
    assert second.l1.get(-42) == PLAN  # the L2 hit is now in L1


def test_an_l1_hit_does_not_touch_redis(pair: tuple[TieredCache[Any, Any], ...]) -> None:
    first, _ = pair
    first.set(-42, PLAN)
    before = first.tier_metrics().l2_operations
    assert first.get(-42) == PLAN
    assert first.tier_metrics().l2_operations == before


def test_a_miss_in_both_tiers_returns_the_default(pair: tuple[TieredCache[Any, Any], ...]) -> None:
    first, _ = pair
    assert first.get(-42, "absent") == "absent"
    assert first.tier_metrics().l2_misses == 1


def test_a_write_goes_to_both_tiers_with_the_ttl_as_px(
    make_tier: MakeTier, make_tiered: MakeTiered, raw: Any
) -> None:
    plans = make_tiered(make_tier(), ttl=90.0)
    plans.set(-42, PLAN)
    assert plans.l1.get(-42) == PLAN
    assert 0 < raw.pttl(_entry(plans, -42)) <= 90_000


def test_an_explicit_ttl_applies_to_both_tiers(
    make_tier: MakeTier, make_tiered: MakeTiered, raw: Any
) -> None:
    plans = make_tiered(make_tier(), ttl=90.0)
    plans.set(-42, PLAN, ttl=5.0)
    assert 0 < raw.pttl(_entry(plans, -42)) <= 5_000


def test_the_l2_ttl_may_differ_from_the_l1_ttl(
    make_tier: MakeTier, make_tiered: MakeTiered, raw: Any
) -> None:
    plans = make_tiered(make_tier(), ttl=90.0, l2_ttl=600.0)
    plans.set(-42, PLAN)
    assert 90_000 < raw.pttl(_entry(plans, -42)) <= 600_000


def test_an_l1_copy_never_outlives_its_l2_entry(
    make_tier: MakeTier, make_tiered: MakeTiered, raw: Any
) -> None:
    writer = make_tiered(make_tier(), ttl=600.0)
    clock = ManualClock()
    reader = make_tiered(make_tier(), ttl=600.0, clock=clock)
    writer.set(-42, PLAN)
    raw.pexpire(_entry(writer, -42), 2_000)  # the L2 entry has 2 s left

    assert reader.get(-42) == PLAN
    clock.advance(2.0)  # the L1 copy was given at most what the entry had left
    assert reader.l1.get(-42) is None


def test_get_many_reads_what_l1_lacks_in_one_round_trip(
    pair: tuple[TieredCache[Any, Any], ...], wait_until: WaitUntil
) -> None:
    first, second = pair
    first.set_many({1: "one", 2: "two", 3: "three"})
    second.set(4, "four")
    assert wait_until(lambda: delivered(first, second))
    assert second.get(1) == "one"
    before = second.tier_metrics().l2_operations
    assert second.get_many([1, 2, 3, 4, 5]) == {1: "one", 2: "two", 3: "three", 4: "four"}
    assert second.tier_metrics().l2_operations == before + 1


def test_a_value_without_a_faithful_form_stays_in_l1_and_is_counted(
    pair: tuple[TieredCache[Any, Any], ...],
) -> None:
    first, second = pair
    first.set(-42, ("a", "tuple"))
    assert first.get(-42) == ("a", "tuple")
    assert first.tier_metrics().unencodable == 1
    assert second.get(-42) is None


def test_a_key_without_a_text_form_stays_in_l1(pair: tuple[TieredCache[Any, Any], ...]) -> None:
    first, second = pair
    first.set(1.5, PLAN)
    assert first.get(1.5) == PLAN
    assert second.get(1.5) is None
    assert first.tier_metrics().unencodable == 1


def test_a_value_that_stays_in_l1_removes_the_older_one_from_redis(
    pair: tuple[TieredCache[Any, Any], ...],
) -> None:
    first, second = pair
    first.set(-42, PLAN)
    first.set(-42, {"not", "json"})
    assert second.get(-42) is None


# --- values are data, never code ---------------------------------------------------------------


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_a_crafted_pickle_under_a_pgcache_key_is_a_counted_miss_and_runs_nothing(
    pair: tuple[TieredCache[Any, Any], ...], raw: Any, tmp_path: Path
) -> None:
    other, reader = pair
    target = tmp_path / "pwned"
    raw.set(_entry(reader, -42), pickle.dumps(_Exploit(str(target))), px=60_000)

    assert reader.get(-42) is None
    assert reader.tier_metrics().undecodable == 1
    assert not target.exists()
    assert reader.get_or_set(-42, Loader(PLAN)) == PLAN  # the loader's value replaces it
    assert other.get(-42) == PLAN
    assert other.tier_metrics().undecodable == 0


# --- invalidation reaches the other instance ---------------------------------------------------


def test_a_delete_in_one_instance_is_honoured_by_the_other(
    pair: tuple[TieredCache[Any, Any], ...], wait_until: WaitUntil
) -> None:
    first, second = pair
    first.set(-42, PLAN)
    assert wait_until(lambda: delivered(first, second))
    assert second.get(-42) == PLAN
    assert first.delete(-42) is True
    assert wait_until(lambda: second.l1.get(-42) is None)
    assert second.get(-42) is None


def test_a_write_in_one_instance_replaces_the_other_instances_copy(
    pair: tuple[TieredCache[Any, Any], ...], wait_until: WaitUntil
) -> None:
    first, second = pair
    first.set(-42, PLAN)
    assert wait_until(lambda: delivered(first, second))
    assert second.get(-42) == PLAN
    first.set(-42, NEW_PLAN)
    assert wait_until(lambda: second.get(-42) == NEW_PLAN)


def test_a_clear_in_one_instance_empties_the_cache_everywhere(
    pair: tuple[TieredCache[Any, Any], ...], wait_until: WaitUntil
) -> None:
    first, second = pair
    first.set_many({1: "one", 2: "two"})
    assert wait_until(lambda: delivered(first, second))
    assert second.get_many([1, 2]) == {1: "one", 2: "two"}
    first.clear()
    assert wait_until(lambda: len(second) == 0)
    assert second.get_many([1, 2]) == {}


def test_invalidating_a_query_removes_its_entries_in_every_cache_and_instance(
    make_tier: MakeTier, make_tiered: MakeTiered, wait_until: WaitUntil
) -> None:
    tiers = [make_tier(), make_tier()]
    plans = [make_tiered(tier, "plans", keyed_by_query_hash=True) for tier in tiers]
    features = [make_tiered(tier, "features") for tier in tiers]
    plans[0].set(-42, PLAN)
    features[0].set_many({"features:-42:current": "f1", "features:-42:peak": "f2"})
    features[0].set("features:7:current", "other query")
    assert wait_until(lambda: delivered(*features))
    assert features[1].get_many(["features:-42:current", "features:-42:peak"])

    assert tiers[0].invalidate_query(-42) == 3
    assert wait_until(lambda: len(features[1]) == 0)
    assert plans[1].get(-42) is None
    assert features[1].get("features:-42:peak") is None
    assert features[1].get("features:7:current") == "other query"


def test_an_instance_skips_its_own_messages(
    pair: tuple[TieredCache[Any, Any], ...], wait_until: WaitUntil
) -> None:
    first, second = pair
    assert second.tier is not None
    assert first.tier is not None
    first.set(-42, PLAN)
    assert wait_until(lambda: second.tier.status().invalidations_received == 1)
    assert first.tier.status().invalidations_received == 0
    assert first.tier.status().invalidations_sent == 1


def test_a_load_that_overlaps_an_invalidation_stores_nothing(
    pair: tuple[TieredCache[Any, Any], ...], raw: Any, wait_until: WaitUntil
) -> None:
    first, second = pair
    assert first.tier is not None

    def load_while_the_other_instance_invalidates() -> Any:
        second.delete(-42)
        assert wait_until(lambda: first.tier.status().invalidations_received == 1)
        return "read before the invalidation"

    assert first.get_or_set(-42, load_while_the_other_instance_invalidates) == (
        "read before the invalidation"
    )
    assert first.l1.get(-42) is None
    assert raw.exists(_entry(first, -42)) == 0


# --- one load per key --------------------------------------------------------------------------


def test_concurrent_misses_in_one_instance_load_once(
    make_tier: MakeTier, make_tiered: MakeTiered
) -> None:
    plans = make_tiered(make_tier())
    loads = Loader(PLAN)
    with concurrent_loads([plans] * 16, -42, loads) as results:
        pass
    assert results == [PLAN] * 16
    assert loads.calls == 1


def test_concurrent_misses_in_three_instances_load_once(
    make_tier: MakeTier, make_tiered: MakeTiered, wait_until: WaitUntil
) -> None:
    instances = [make_tiered(make_tier()) for _ in range(3)]
    loads = Loader(PLAN)
    with concurrent_loads([c for c in instances for _ in range(4)], -42, loads) as results:
        # Two instances wait for the lock holder, which is still loading.
        assert wait_until(lambda: sum(c.tier_metrics().lock_waits for c in instances) == 2)
    assert results == [PLAN] * 12
    assert loads.calls == 1
    assert sum(c.tier_metrics().l2_hits for c in instances) == 2


def test_a_dead_lock_holder_costs_only_the_lock_expiry(
    make_tier: MakeTier, make_tiered: MakeTiered, raw: Any
) -> None:
    plans = make_tiered(make_tier())
    raw.set(plans.tier.keys.lock(_entry(plans, -42)), "a crashed instance", px=200)  # type: ignore[union-attr]
    loader = Loader(PLAN)
    assert plans.get_or_set(-42, loader) == PLAN
    assert loader.calls == 1
    metrics = plans.tier_metrics()
    assert (metrics.lock_waits, metrics.lock_timeouts) == (1, 0)


def test_waiting_for_a_stuck_lock_holder_is_bounded(
    make_tier: MakeTier, make_tiered: MakeTiered, raw: Any
) -> None:
    plans = make_tiered(make_tier(lock_ttl=0.2))
    raw.set(plans.tier.keys.lock(_entry(plans, -42)), "stuck", px=60_000)  # type: ignore[union-attr]
    loader = Loader(PLAN)
    assert plans.get_or_set(-42, loader) == PLAN
    assert loader.calls == 1
    assert plans.tier_metrics().lock_timeouts == 1


def test_a_failing_loader_raises_releases_the_lock_and_stores_nothing(
    pair: tuple[TieredCache[Any, Any], ...], raw: Any
) -> None:
    first, _ = pair

    def fail() -> Any:
        raise LookupError("no such query")

    with pytest.raises(LookupError, match="no such query"):
        first.get_or_set(-42, fail)
    assert first.tier is not None
    assert raw.exists(first.tier.keys.lock(_entry(first, -42))) == 0
    assert raw.exists(_entry(first, -42)) == 0
    assert first.l1.get(-42) is None


# --- construction ------------------------------------------------------------------------------


def test_without_a_tier_a_tiered_cache_is_its_l1(make_tiered: MakeTiered) -> None:
    plans = make_tiered(None)
    loader = Loader(PLAN)
    assert plans.get_or_set(-42, loader) == plans.get_or_set(-42, loader) == PLAN
    assert loader.calls == 1
    assert plans.metrics().hits == 1
    assert plans.tier_metrics().l2_operations == 0


def test_a_tiered_cache_needs_a_name(make_tier: MakeTier) -> None:
    with pytest.raises(ValueError, match="needs a name"):
        TieredCache(Cache(ttl=60.0), make_tier())


def test_entries_in_redis_must_expire(make_tier: MakeTier) -> None:
    with pytest.raises(ValueError, match="must expire"):
        TieredCache(Cache(name="forever"), make_tier())


def test_a_reserved_name_is_refused(make_tier: MakeTier) -> None:
    with pytest.raises(ValueError, match="'lock'"):
        TieredCache(Cache(ttl=1.0, name="lock"), make_tier())


def test_two_caches_of_one_name_on_one_tier_are_refused(
    make_tier: MakeTier, make_tiered: MakeTiered
) -> None:
    tier: RedisTier = make_tier()
    make_tiered(tier, "plans")
    with pytest.raises(ValueError, match="already has a cache of that name"):
        make_tiered(tier, "plans")
