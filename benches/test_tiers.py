"""Benchmarks of the shared tier: what L1, L2 and a miss cost, the tier's overhead over a plain
redis-py GET, what several processes save with Redis, and how fast an invalidation reaches
another instance.

Run with ``pytest benches/test_tiers.py --benchmark-only -p no:timeout -s`` (``make bench``);
the default ``pytest`` run never collects it. Redis is a private ``redis-server`` on loopback
(``REDIS_URL`` is not used: the benchmark must not write into a real deployment).

* latency (pytest-benchmark, one round = ``OPS`` operations): an L1 hit, an L2 hit (the L1
  copy removed before each read), a miss in both tiers (lock, re-read, load, write-through,
  unlock), a plain ``redis.Redis.get`` of the same bytes; the asyncio twins; and the same L1+L2
  workload through cashews' client-side cache (``client_side=true``, JSON, not pickle).
* ``test_tier_overhead_ratio``: the L2 hit's median beside the plain GET's, printed.
* ``test_loads_per_1000_requests``: 1,000 requests (features and predictions, 80/20 hot keys
  over the workload's real queries, half each) spread over 1, 2 and 4 processes running at once,
  with and without Redis: how many database queries and ML calls they made in all.
* ``test_invalidation_propagation``: p50 and p99 of :func:`invalidation_delays` (500 samples).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pgcache import Cache, CacheManager, Settings
from pgcache.caching.codec import ValueCodec
from pgcache.caching.propagation import invalidation_delays
from pgcache.caching.redis_tier import RedisTier
from pgcache.caching.redisserver import RedisServer
from pgcache.caching.tiered import TieredCache
from pgcache.cli.report import hot_key_picker, percentile

OPS = 200  # operations per round of the Redis benchmarks
L1_OPS = 1_000  # per round of the L1 benchmark
VALUE = {"Plan": {"Node Type": "Seq Scan", "Total Cost": 12.5, "Plans": [], "Rows": 1000}}
REQUESTS = 1_000
ROOT = Path(__file__).resolve().parents[1]
MEDIANS: dict[str, float] = {}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def tier(redis_url: str) -> Iterator[RedisTier]:
    tier = RedisTier(redis_url, key_prefix=f"bench-{uuid.uuid4().hex[:8]}:", socket_timeout=2.0)
    yield tier
    tier.close()


@pytest.fixture
def plans(tier: RedisTier) -> Iterator[TieredCache[Any, Any]]:
    tiered: TieredCache[Any, Any] = TieredCache(Cache(ttl=600.0, name="plans"), tier)
    yield tiered
    tiered.close()


def _keep_median(name: str, benchmark: Any) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        MEDIANS[name] = stats.stats.median / benchmark.extra_info["ops_per_round"]


# --- latency ---------------------------------------------------------------------------------


def test_l1_hit(benchmark: Any, plans: TieredCache[Any, Any]) -> None:
    keys = list(range(L1_OPS))
    plans.set_many((key, VALUE) for key in keys)

    def round_() -> int:
        get = plans.get
        return sum(1 for key in keys if get(key) is not None)

    benchmark.extra_info["ops_per_round"] = L1_OPS
    assert benchmark(round_) == L1_OPS
    _keep_median("l1_hit", benchmark)


def test_l2_hit(benchmark: Any, plans: TieredCache[Any, Any]) -> None:
    keys = list(range(OPS))
    plans.set_many((key, VALUE) for key in keys)

    def round_() -> int:
        forget, get = plans.l1.delete, plans.get
        found = 0
        for key in keys:
            forget(key)
            found += get(key) == VALUE
        return found

    benchmark.extra_info["ops_per_round"] = OPS
    assert benchmark(round_) == OPS
    assert plans.tier_metrics().l2_hits >= OPS
    _keep_median("l2_hit", benchmark)


def test_plain_redis_get_of_the_same_bytes(benchmark: Any, redis_url: str) -> None:
    raw = ValueCodec().encode(VALUE)
    with redis.Redis.from_url(redis_url) as client:
        keys = [f"bench-plain:{key}" for key in range(OPS)]
        for key in keys:
            client.set(key, raw, px=600_000)

        def round_() -> int:
            get = client.get
            return sum(1 for key in keys if get(key) == raw)

        benchmark.extra_info["ops_per_round"] = OPS
        assert benchmark(round_) == OPS
    _keep_median("plain_get", benchmark)


def test_miss_in_both_tiers(benchmark: Any, plans: TieredCache[Any, Any]) -> None:
    counter = iter(range(10**9))

    def round_() -> int:
        start = next(counter) * OPS
        return sum(1 for key in range(start, start + OPS) if plans.get_or_set(key, lambda: VALUE))

    benchmark.extra_info["ops_per_round"] = OPS
    assert benchmark(round_) == OPS
    _keep_median("miss", benchmark)


def test_async_l2_hit(benchmark: Any, plans: TieredCache[Any, Any]) -> None:
    keys = list(range(OPS))
    plans.set_many((key, VALUE) for key in keys)
    loop = asyncio.new_event_loop()

    async def read_all() -> int:
        found = 0
        for key in keys:
            plans.l1.delete(key)
            found += await plans.aget(key) == VALUE
        return found

    try:
        benchmark.extra_info["ops_per_round"] = OPS
        assert benchmark(lambda: loop.run_until_complete(read_all())) == OPS
    finally:
        assert plans.tier is not None
        loop.run_until_complete(plans.tier.aclose())
        loop.close()
    _keep_median("async_l2_hit", benchmark)


def test_async_plain_redis_get(benchmark: Any, redis_url: str) -> None:
    import redis.asyncio

    raw = ValueCodec().encode(VALUE)
    loop = asyncio.new_event_loop()
    client = redis.asyncio.Redis.from_url(redis_url)
    keys = [f"bench-plain-async:{key}" for key in range(OPS)]

    async def prepare() -> None:
        for key in keys:
            await client.set(key, raw, px=600_000)

    async def read_all() -> int:
        return sum([1 for key in keys if await client.get(key) == raw])

    try:
        loop.run_until_complete(prepare())
        benchmark.extra_info["ops_per_round"] = OPS
        assert benchmark(lambda: loop.run_until_complete(read_all())) == OPS
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
    _keep_median("async_plain_get", benchmark)


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
@pytest.mark.parametrize("kind", ["l1_hit", "l2_hit"])
def test_cashews_client_side(benchmark: Any, redis_url: str, kind: str) -> None:
    cashews = pytest.importorskip("cashews")
    cache = cashews.Cache()
    prefix = f"bench-cashews-{uuid.uuid4().hex[:8]}:"
    cache.setup(
        f"{redis_url}?client_side=true&client_side_prefix={prefix}",
        pickle_type="json",
        socket_timeout=2.0,
    )
    loop = asyncio.new_event_loop()
    keys = [f"{prefix}{key}" for key in range(OPS)]

    async def prepare() -> None:
        await cache.init() if hasattr(cache, "init") else None
        for key in keys:
            await cache.set(key, VALUE, expire=600)

    async def read_all() -> int:
        found = 0
        for key in keys:
            if kind == "l2_hit":
                # The local copy goes: the next get reads Redis (the L2 hit).
                await cache._backends[""]._local_cache.delete(key)
            found += await cache.get(key) == VALUE
        return found

    try:
        loop.run_until_complete(prepare())
        benchmark.extra_info["ops_per_round"] = OPS
        assert benchmark(lambda: loop.run_until_complete(read_all())) == OPS
    finally:
        loop.run_until_complete(cache.close())
        loop.close()
    _keep_median(f"cashews_{kind}", benchmark)


def test_tier_overhead_ratio(benchmark: Any) -> None:
    """Printed from the medians above (a one-round 'benchmark' so that --benchmark-only runs it)."""
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    lines = [f"  {name:<22} {median * 1e6:9.1f} us" for name, median in MEDIANS.items()]
    print("\nmedian per operation:\n" + "\n".join(lines))
    for tiered, plain in (("l2_hit", "plain_get"), ("async_l2_hit", "async_plain_get")):
        if tiered in MEDIANS and plain in MEDIANS:
            ratio = MEDIANS[tiered] / MEDIANS[plain]
            benchmark.extra_info[f"{tiered}_over_{plain}"] = ratio
            print(f"{tiered} / {plain} of the same bytes: {ratio:.2f}x")


def test_tier_cpu_per_operation(
    benchmark: Any, plans: TieredCache[Any, Any], redis_url: str
) -> None:
    """CPU time of this process per L2 hit and per plain GET: the tier's own cost, which the
    waiting for Redis (wall-clock time, noisy on a shared machine) does not blur."""
    raw = ValueCodec().encode(VALUE)
    keys = list(range(2_000))
    plans.set_many((key, VALUE) for key in keys)
    with redis.Redis.from_url(redis_url) as client:
        for key in keys:
            client.set(f"bench-cpu:{key}", raw, px=600_000)

        def measure() -> tuple[float, float]:
            forget, get, plain = plans.l1.delete, plans.get, client.get
            started = time.process_time()
            for key in keys:
                forget(key)
                get(key)
            tiered = (time.process_time() - started) / len(keys)
            started = time.process_time()
            for key in keys:
                plain(f"bench-cpu:{key}")
            return tiered, (time.process_time() - started) / len(keys)

        tiered, plain = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update({"l2_hit_cpu_us": tiered * 1e6, "plain_get_cpu_us": plain * 1e6})
    print(
        f"\nCPU per operation: L2 hit {tiered * 1e6:.1f} us, plain GET {plain * 1e6:.1f} us "
        f"({tiered / plain:.2f}x)"
    )


# --- what several processes save -------------------------------------------------------------


def _worker(spec: dict[str, Any]) -> dict[str, int]:
    """One process: ``requests`` requests (features, then predictions, alternating)."""
    from pgcache.keys import feature_key, prediction_key
    from pgcache.ml.client import MLClient
    from pgcache.postgres.features import PgStatStatementsExtractor
    from pgcache.postgres.pools import PoolSettings, make_pool

    settings = Settings.load(
        database_url=spec["postgres_url"],
        ml_service_url=spec["ml_url"],
        redis_url=spec["redis_url"],
        redis_key_prefix=spec["prefix"],
        redis_socket_timeout="2s",
    )
    loads = {"db": 0, "ml": 0}
    with (
        CacheManager.from_settings(settings) as manager,
        make_pool(PoolSettings(conninfo=spec["postgres_url"], min_size=1, max_size=2)) as pool,
        MLClient(settings) as ml,
    ):
        extractor = PgStatStatementsExtractor(pool)
        features_cache, predictions = manager.tier("features"), manager.tier("predictions")
        pick = hot_key_picker(spec["hashes"], random.Random(spec["seed"]))
        while time.time() < spec["start_at"]:
            time.sleep(0.001)

        def features_of(query_hash: int) -> Any:
            def extract() -> Any:
                loads["db"] += 1
                return extractor.extract_query_features(query_hash, "current")

            return features_cache.get_or_set(feature_key(query_hash), extract)

        for number in range(spec["requests"]):
            query_hash = pick()
            features = features_of(query_hash)
            if number % 2:

                def predict(features: Any = features) -> Any:
                    loads["ml"] += 1
                    return ml.predict(features, scenario="current")

                predictions.get_or_set(prediction_key(query_hash, "current", None), predict)
    return loads


def _run_processes(spec: dict[str, Any], processes: int) -> dict[str, int]:
    start_at = time.time() + 3.0 + processes  # every process imported and connected by then
    children = []
    for number in range(processes):
        child_spec = {
            **spec,
            "requests": REQUESTS // processes,
            "seed": number,
            "start_at": start_at,
        }
        children.append(
            subprocess.Popen(
                [sys.executable, __file__, json.dumps(child_spec)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        )
    totals = {"db": 0, "ml": 0}
    for child in children:
        output, _ = child.communicate(timeout=600)
        assert child.returncode == 0, output
        for name, count in json.loads(output.splitlines()[-1]).items():
            totals[name] += count
    return totals


def test_loads_per_1000_requests(
    benchmark: Any, postgres_url: str, pg_workload: Any, redis_url: str
) -> None:
    from pgcache.ml.reference import serve_in_thread

    hashes = sorted(pg_workload.queryids.values())
    rows: list[tuple[int, bool, int, int]] = []
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # measured below, printed
    with serve_in_thread() as ml_service:
        for with_redis in (False, True):
            for processes in (1, 2, 4):
                spec = {
                    "postgres_url": postgres_url,
                    "ml_url": ml_service.url,
                    "redis_url": redis_url if with_redis else None,
                    "prefix": f"bench-{uuid.uuid4().hex[:8]}:",
                    "hashes": hashes,
                }
                totals = _run_processes(spec, processes)
                rows.append((processes, with_redis, totals["db"], totals["ml"]))
    print(f"\n{REQUESTS} requests (half also predict), {len(hashes)} queries, 80/20 hot keys:")
    print("processes  redis  DB queries  ML calls")
    for processes, with_redis, db, ml in rows:
        print(f"{processes:>9}  {'yes' if with_redis else 'no':>5}  {db:>10}  {ml:>8}")
        benchmark.extra_info[f"{processes}_processes_{'redis' if with_redis else 'alone'}"] = {
            "db_queries": db,
            "ml_calls": ml,
        }
    by = {(p, r): (db, ml) for p, r, db, ml in rows}
    assert by[(4, True)][0] <= by[(4, False)][0]


# --- invalidation propagation ----------------------------------------------------------------


def test_invalidation_propagation(benchmark: Any, redis_url: str) -> None:
    settings = Settings.load(redis_url=redis_url, redis_key_prefix=f"bench-{uuid.uuid4().hex}:")
    with (
        CacheManager.from_settings(settings) as sender,
        CacheManager.from_settings(settings) as receiver,
    ):
        delays = sorted(
            benchmark.pedantic(
                lambda: invalidation_delays(sender, receiver, samples=500), rounds=1, iterations=1
            )
        )
    p50, p99 = percentile(delays, 0.50), percentile(delays, 0.99)
    print(
        f"\ninvalidation reaches the other instance: p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms"
    )
    benchmark.extra_info.update({"p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3})
    assert len(delays) == 500


if __name__ == "__main__":  # one process of test_loads_per_1000_requests
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
