"""TieredCache's asyncio API against a real redis-server: the same tiers, the same rules, through
``redis.asyncio``; one load per key across the tasks of a loop and across instances."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from tests.support.redis import MakeTier, MakeTiered, delivered

from pgcache import ManualClock
from pgcache.caching.redisserver import RedisServer
from pgcache.caching.tiered import TieredCache

PLAN = {"Plan": {"Node Type": "Seq Scan", "Total Cost": 12.5}}


class AsyncLoader:
    """An async loader that counts its calls and waits for ``release`` before answering."""

    def __init__(self, value: Any = PLAN) -> None:
        self.value = value
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self) -> Any:
        self.calls += 1
        await self.release.wait()
        return self.value


@pytest.fixture
async def raw(redis_url: str) -> Any:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def pair(amake_tier: MakeTier, make_tiered: MakeTiered) -> tuple[TieredCache[Any, Any], ...]:
    return make_tiered(amake_tier()), make_tiered(amake_tier())


def _entry(cache: TieredCache[Any, Any], key: object) -> str:
    assert cache.tier is not None
    return str(cache.tier.keys.entry(cache.name, key))


async def _until(check: Any, timeout: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def test_an_entry_loaded_by_one_instance_is_an_l2_hit_in_the_other(
    pair: tuple[TieredCache[Any, Any], ...],
) -> None:
    first, second = pair
    loader = AsyncLoader()
    assert await first.aget_or_set(-42, loader) == PLAN
    assert await second.aget_or_set(-42, loader) == PLAN
    assert loader.calls == 1
    assert second.tier_metrics().l2_hits == 1


async def test_a_write_goes_to_both_tiers_with_the_ttl_as_px(
    pair: tuple[TieredCache[Any, Any], ...], raw: Any
) -> None:
    first, second = pair
    await first.aset(-42, PLAN, ttl=30.0)
    assert await _until(lambda: delivered(first, second))
    assert first.l1.get(-42) == PLAN
    assert 0 < await raw.pttl(_entry(first, -42)) <= 30_000
    assert await second.aget(-42) == PLAN


async def test_an_l1_copy_never_outlives_its_l2_entry(
    amake_tier: MakeTier, make_tiered: MakeTiered, raw: Any
) -> None:
    writer = make_tiered(amake_tier(), ttl=600.0)
    clock = ManualClock()
    reader = make_tiered(amake_tier(), ttl=600.0, clock=clock)
    await writer.aset(-42, PLAN)
    await raw.pexpire(_entry(writer, -42), 2_000)
    assert await reader.aget(-42) == PLAN
    clock.advance(2.0)
    assert reader.l1.get(-42) is None


async def test_many_values_go_and_come_in_one_round_trip_each(
    pair: tuple[TieredCache[Any, Any], ...],
) -> None:
    first, second = pair
    await first.aset_many({1: "one", 2: "two", 3: [3]})
    assert await _until(lambda: delivered(first, second))
    before = second.tier_metrics().l2_operations
    assert await second.aget_many([1, 2, 3, 4]) == {1: "one", 2: "two", 3: [3]}
    assert second.tier_metrics().l2_operations == before + 1


async def test_a_delete_in_one_instance_is_honoured_by_the_other(
    pair: tuple[TieredCache[Any, Any], ...],
) -> None:
    first, second = pair
    await first.aset(-42, PLAN)
    assert await _until(lambda: delivered(first, second))
    assert await second.aget(-42) == PLAN
    assert await first.adelete(-42) is True
    assert await _until(lambda: second.l1.get(-42) is None)
    assert await second.aget(-42) is None


async def test_a_clear_in_one_instance_empties_the_cache_everywhere(
    pair: tuple[TieredCache[Any, Any], ...],
) -> None:
    first, second = pair
    await first.aset_many({1: "one", 2: "two"})
    assert await _until(lambda: delivered(first, second))
    assert await second.aget_many([1, 2]) == {1: "one", 2: "two"}
    await first.aclear()
    assert await _until(lambda: len(second) == 0)
    assert await second.aget_many([1, 2]) == {}


async def test_invalidating_a_query_reaches_every_instance(
    pair: tuple[TieredCache[Any, Any], ...],
) -> None:
    first, second = pair
    await first.aset_many({(-42, "a"): "x", (-42, "b"): "y", (7, "a"): "z"})
    assert await _until(lambda: delivered(first, second))
    assert len(await second.aget_many([(-42, "a"), (-42, "b"), (7, "a")])) == 3
    assert first.tier is not None
    assert await first.tier.ainvalidate_query(-42) == 2
    assert await _until(lambda: len(second) == 1)
    assert await second.aget((-42, "a")) is None
    assert await second.aget((7, "a")) == "z"


async def test_a_crafted_pickle_is_a_counted_miss_and_runs_nothing(
    pair: tuple[TieredCache[Any, Any], ...], raw: Any, tmp_path: Path
) -> None:
    _, reader = pair
    target = tmp_path / "pwned"
    crafted = b"\x80\x04" + pickle.dumps(("open", str(target)))
    await raw.set(_entry(reader, -42), crafted, px=60_000)
    assert await reader.aget(-42) is None
    assert reader.tier_metrics().undecodable == 1
    assert not target.exists()


async def test_concurrent_misses_of_one_loop_load_once(
    pair: tuple[TieredCache[Any, Any], ...],
) -> None:
    first, _ = pair
    loader = AsyncLoader()
    loader.release.clear()
    tasks = [asyncio.create_task(first.aget_or_set(-42, loader)) for _ in range(20)]
    await asyncio.sleep(0.01)
    loader.release.set()
    assert await asyncio.gather(*tasks) == [PLAN] * 20
    assert loader.calls == 1


async def test_concurrent_misses_in_three_instances_load_once(
    amake_tier: MakeTier, make_tiered: MakeTiered
) -> None:
    instances = [make_tiered(amake_tier()) for _ in range(3)]
    loader = AsyncLoader()
    loader.release.clear()
    tasks = [
        asyncio.create_task(cache.aget_or_set(-42, loader)) for cache in instances for _ in range(4)
    ]
    assert await _until(lambda: sum(c.tier_metrics().lock_waits for c in instances) == 2)
    loader.release.set()
    assert await asyncio.gather(*tasks) == [PLAN] * 12
    assert loader.calls == 1


async def test_a_dead_lock_holder_costs_only_the_lock_expiry(
    pair: tuple[TieredCache[Any, Any], ...], raw: Any
) -> None:
    first, _ = pair
    assert first.tier is not None
    await raw.set(first.tier.keys.lock(_entry(first, -42)), "a crashed instance", px=200)
    loader = AsyncLoader()
    assert await first.aget_or_set(-42, loader) == PLAN
    assert (loader.calls, first.tier_metrics().lock_waits) == (1, 1)


async def test_a_failing_loader_raises_in_every_waiting_task_and_stores_nothing(
    pair: tuple[TieredCache[Any, Any], ...], raw: Any
) -> None:
    first, _ = pair

    async def fail() -> Any:
        await asyncio.sleep(0.01)
        raise LookupError("no such query")

    results = await asyncio.gather(
        *(first.aget_or_set(-42, fail) for _ in range(3)), return_exceptions=True
    )
    assert [type(result) for result in results] == [LookupError] * 3
    assert await raw.exists(_entry(first, -42)) == 0


async def test_redis_down_answers_from_l1_and_the_loader(
    amake_tier: MakeTier, make_tiered: MakeTiered
) -> None:
    server = RedisServer()  # never started: nobody listens on its port
    server.stop()
    plans = make_tiered(amake_tier(server.url, failure_threshold=1, reset_timeout=60.0))
    assert await plans.aget_or_set(-42, AsyncLoader("loaded")) == "loaded"
    assert await plans.aget(-42) == "loaded"
    await plans.aset(7, "kept in L1")
    assert await plans.aget(7) == "kept in L1"
    assert plans.tier_metrics().bypassed > 0


async def test_the_sync_and_async_apis_share_both_tiers(
    pair: tuple[TieredCache[Any, Any], ...],
) -> None:
    first, second = pair
    first.set(-42, PLAN)
    assert await _until(lambda: delivered(first, second))
    assert await second.aget(-42) == PLAN
    await second.aset(7, "from async")
    assert await _until(lambda: delivered(first, second))
    assert await asyncio.to_thread(first.get, 7) == "from async"
