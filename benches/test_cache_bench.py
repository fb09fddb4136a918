"""pytest-benchmark suite for pgcache.Cache.

Run with ``pytest benches --benchmark-only -p no:timeout`` (``make bench``); the default
``pytest`` run (testpaths = tests) never collects it. One benchmark round is a fixed batch of
operations (``extra_info["ops_per_round"]``), so ns per operation = round time / that number.
Every benchmark also checks something cheap about the result, so a fast but wrong cache fails.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pgcache = pytest.importorskip("pgcache")

TTL = 900.0  # long enough that nothing expires during a run: the TTL path runs, never fires
MAX_SIZE = 10_000
BATCH = 1_000  # operations per round of the single-threaded benchmarks
THREADS = 4
OPS_PER_THREAD = 2_000  # operations per thread per round of the concurrent benchmarks
VALUE = {"plan": "Seq Scan on t", "cost": 42.0}
KEYS = [f"query:{i:06d}" for i in range(MAX_SIZE)]


def plans(keys: list[str], seed: int) -> list[list[str]]:
    """One pre-built list of OPS_PER_THREAD random keys per thread."""
    rng = random.Random(seed)
    return [rng.choices(keys, k=OPS_PER_THREAD) for _ in range(THREADS)]


@pytest.fixture
def cache() -> Iterator[Any]:
    with pgcache.Cache(ttl=TTL, max_size=MAX_SIZE) as c:
        yield c


@pytest.fixture
def full_cache(cache: Any) -> Any:
    cache.set_many((k, VALUE) for k in KEYS)
    cache.reset_metrics()
    return cache


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=THREADS) as executor:
        yield executor


def in_threads(
    pool: ThreadPoolExecutor, work: Callable[[list[str]], int], plan: list[list[str]]
) -> int:
    """Run work(keys) on every thread at once; return the sum of what they return."""
    return sum(f.result() for f in [pool.submit(work, keys) for keys in plan])


def test_cache_get_set(benchmark: Any, cache: Any) -> None:
    keys = KEYS[:BATCH]

    def round_() -> int:
        s, g = cache.set, cache.get
        found = 0
        for k in keys:
            s(k, VALUE)
            if g(k) is VALUE:
                found += 1
        return found

    benchmark.extra_info["ops_per_round"] = 2 * BATCH
    assert benchmark(round_) == BATCH
    assert len(cache) == BATCH


def test_cache_concurrent_reads(benchmark: Any, full_cache: Any, pool: ThreadPoolExecutor) -> None:
    plan = plans(KEYS, seed=1)

    def read(keys: list[str]) -> int:
        g = full_cache.get
        return sum(1 for k in keys if g(k) is VALUE)

    benchmark.extra_info["ops_per_round"] = THREADS * OPS_PER_THREAD
    assert benchmark(in_threads, pool, read, plan) == THREADS * OPS_PER_THREAD
    assert full_cache.metrics().misses == 0


def test_cache_concurrent_writes(benchmark: Any, cache: Any, pool: ThreadPoolExecutor) -> None:
    keyspace = [f"write:{i:06d}" for i in range(2 * MAX_SIZE)]  # twice the size: evictions too
    plan = plans(keyspace, seed=2)

    def write(keys: list[str]) -> int:
        s = cache.set
        for k in keys:
            s(k, VALUE)
        return len(keys)

    benchmark.extra_info["ops_per_round"] = THREADS * OPS_PER_THREAD
    assert benchmark(in_threads, pool, write, plan) == THREADS * OPS_PER_THREAD
    m = cache.metrics()
    assert len(cache) == m.size <= MAX_SIZE
    assert all(cache.get(k) is VALUE for k in cache.keys()[:100])


def test_cache_concurrent_mixed(benchmark: Any, full_cache: Any, pool: ThreadPoolExecutor) -> None:
    """80 % get / 20 % set per thread over a key space 1.5x the cache size."""
    keyspace = [f"query:{i:06d}" for i in range(MAX_SIZE + MAX_SIZE // 2)]
    plan = plans(keyspace, seed=3)
    rng = random.Random(4)
    is_write = [[rng.random() < 0.2 for _ in keys] for keys in plan]
    lookups = sum(not w for writes in is_write for w in writes)
    rounds = []

    def mixed(i: int) -> int:
        g, s = full_cache.get, full_cache.set
        for k, write in zip(plan[i], is_write[i], strict=True):
            if write:
                s(k, VALUE)
            else:
                g(k)
        return OPS_PER_THREAD

    def round_() -> int:
        rounds.append(1)
        return sum(f.result() for f in [pool.submit(mixed, i) for i in range(THREADS)])

    benchmark.extra_info["ops_per_round"] = THREADS * OPS_PER_THREAD
    assert benchmark(round_) == THREADS * OPS_PER_THREAD
    m = full_cache.metrics()
    assert m.hits + m.misses == lookups * len(rounds)  # every lookup counted exactly once
    assert len(full_cache) <= MAX_SIZE


def test_cache_eviction(benchmark: Any) -> None:
    """Every set inserts a new key into a full cache: two disjoint key sets of max_size keys
    alternate, so each round evicts the whole other set (exact LRU: under W-TinyLFU a newcomer
    can lose the admission duel instead)."""
    size = BATCH
    halves = [[f"evict{j}:{i:06d}" for i in range(size)] for j in range(2)]
    inserted = []

    with pgcache.Cache(ttl=TTL, max_size=size, policy="lru") as c:

        def round_() -> int:
            keys = halves[len(inserted) % 2]
            s = c.set
            for k in keys:
                s(k, VALUE)
            inserted.append(len(keys))
            return len(c)

        benchmark.extra_info["ops_per_round"] = size
        assert benchmark(round_) == size
        assert c.metrics().evictions == sum(inserted) - size
        assert set(c.keys()) == set(halves[(len(inserted) - 1) % 2])


def test_cache_hit_rate(benchmark: Any, cache: Any) -> None:
    """The 80 % hit scenario: 8,000 stored keys, lookups of those and 2,000 absent ones."""
    stored = KEYS[:8_000]
    cache.set_many((k, VALUE) for k in stored)
    lookups = stored + [f"absent:{i:06d}" for i in range(2_000)]
    random.Random(5).shuffle(lookups)
    cache.reset_metrics()

    def round_() -> int:
        g = cache.get
        return sum(1 for k in lookups if g(k) is VALUE)

    benchmark.extra_info["ops_per_round"] = len(lookups)
    assert benchmark(round_) == len(stored)
    assert cache.metrics().hit_rate == pytest.approx(80.0, abs=0.01)


def test_cache_delete(benchmark: Any, cache: Any) -> None:
    """Delete BATCH live keys per round (refilled, untimed, before each round)."""
    keys = KEYS[:BATCH]
    order = random.Random(6).sample(keys, len(keys))

    def refill() -> None:
        cache.set_many((k, VALUE) for k in keys)

    def round_() -> int:
        d = cache.delete
        return sum(1 for k in order if d(k))

    benchmark.extra_info["ops_per_round"] = BATCH
    removed = benchmark.pedantic(round_, setup=refill, rounds=200, warmup_rounds=5)
    assert removed == BATCH
    assert len(cache) == 0


def test_cache_metrics(benchmark: Any, full_cache: Any) -> None:
    full_cache.get(KEYS[0])
    full_cache.get("absent")

    benchmark.extra_info["ops_per_round"] = 1
    m = benchmark(full_cache.metrics)
    assert (m.hits, m.misses, m.size, m.max_size) == (1, 1, MAX_SIZE, MAX_SIZE)
    assert m.hit_rate == pytest.approx(50.0)
    assert m.to_dict()["size"] == MAX_SIZE
