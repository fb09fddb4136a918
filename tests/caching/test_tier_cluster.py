"""The shared tier on a Redis Cluster of three masters (redis+cluster://): entries spread over
the masters, one query's entries in one slot, invalidation over sharded pub/sub (SPUBLISH /
SSUBSCRIBE) reaching every instance, one load per key across instances."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster
from tests.support.caches import WaitUntil
from tests.support.redis import Loader, MakeTier, MakeTiered, concurrent_loads, delivered

from pgcache.caching.tiered import TieredCache

PLAN = {"Plan": {"Node Type": "Seq Scan"}}


@pytest.fixture
def cluster(redis_cluster_url: str) -> Iterator[Any]:
    client = RedisCluster.from_url(redis_cluster_url.replace("redis+cluster://", "redis://"))
    yield client
    client.close()


@pytest.fixture
def instances(
    redis_cluster_url: str, make_tier: MakeTier, make_tiered: MakeTiered
) -> list[TieredCache[Any, Any]]:
    """The cache ``plans`` in three instances on the cluster."""
    return [make_tiered(make_tier(redis_cluster_url)) for _ in range(3)]


def test_the_tier_knows_it_talks_to_a_cluster(instances: list[TieredCache[Any, Any]]) -> None:
    assert all(cache.tier is not None and cache.tier.cluster for cache in instances)
    assert all(cache.tier is not None and cache.tier.status().subscribed for cache in instances)


def test_entries_spread_over_the_three_masters(
    instances: list[TieredCache[Any, Any]], cluster: Any
) -> None:
    writer = instances[0]
    writer.set_many({query_hash: {"plan": query_hash} for query_hash in range(60)})
    assert writer.tier is not None
    entries = [str(writer.tier.keys.entry(writer.name, query_hash)) for query_hash in range(60)]
    owners = {cluster.get_node_from_key(entry).name for entry in entries}
    assert len(owners) == 3
    assert len(cluster.get_primaries()) == 3


def test_the_entries_of_one_query_share_a_slot(
    instances: list[TieredCache[Any, Any]], cluster: Any
) -> None:
    tier = instances[0].tier
    assert tier is not None
    names = [
        tier.keys.entry("features", "features:-42:current"),
        tier.keys.entry("plans", -42),
        tier.keys.query_index(-42),
    ]
    assert len({cluster.keyslot(name) for name in names}) == 1


def test_a_load_in_one_instance_is_an_l2_hit_in_the_others(
    instances: list[TieredCache[Any, Any]],
) -> None:
    loads = []
    for cache in instances:
        assert cache.get_or_set(-42, lambda: loads.append(1) or PLAN) == PLAN
    assert len(loads) == 1
    assert sum(cache.tier_metrics().l2_hits for cache in instances) == 2


def test_an_invalidation_reaches_every_instance(
    instances: list[TieredCache[Any, Any]], wait_until: WaitUntil
) -> None:
    writer, *readers = instances
    writer.set_many({1: "one", 2: "two"})
    assert wait_until(lambda: delivered(*instances))
    assert all(reader.get_many([1, 2]) == {1: "one", 2: "two"} for reader in readers)

    writer.delete(1)
    assert wait_until(lambda: all(reader.l1.get(1) is None for reader in readers))
    writer.clear()
    assert wait_until(lambda: all(len(reader) == 0 for reader in readers))
    assert all(reader.get(2) is None for reader in readers)


def test_invalidating_a_query_reaches_every_instance(
    instances: list[TieredCache[Any, Any]], wait_until: WaitUntil
) -> None:
    writer, *readers = instances
    writer.set_many({(-42, "a"): "x", (-42, "b"): "y", (7, "a"): "z"})
    assert wait_until(lambda: delivered(*instances))
    assert all(len(reader.get_many([(-42, "a"), (-42, "b"), (7, "a")])) == 3 for reader in readers)
    assert writer.tier is not None
    assert writer.tier.invalidate_query(-42) == 2
    assert wait_until(lambda: all(len(reader) == 1 for reader in readers))
    assert all(reader.get((-42, "b")) is None for reader in readers)


def test_concurrent_misses_in_three_instances_load_once(
    instances: list[TieredCache[Any, Any]], wait_until: WaitUntil
) -> None:
    loads = Loader(PLAN)
    with concurrent_loads(instances, -7, loads) as results:
        assert wait_until(lambda: sum(c.tier_metrics().lock_waits for c in instances) == 2)
    assert (results, loads.calls) == ([PLAN] * 3, 1)


async def test_the_asyncio_client_works_on_the_cluster(
    redis_cluster_url: str, amake_tier: MakeTier, make_tiered: MakeTiered
) -> None:
    first = make_tiered(amake_tier(redis_cluster_url))
    second = make_tiered(amake_tier(redis_cluster_url))
    await first.aset_many({5: "five", 6: "six"})
    assert await second.aget_many([5, 6]) == {5: "five", 6: "six"}
    assert await second.aget_or_set(7, _seven) == 7
    await first.aclear()
    assert await second.aget(8) is None


async def _seven() -> int:
    return 7
