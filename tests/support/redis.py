"""Redis for the tests and the benchmarks (a pytest plugin, loaded by tests/conftest.py).

* ``redis_url`` (session): ``REDIS_URL`` when it was set, else a private ``redis-server`` on a
  free port in a temporary directory, without persistence, started once per session.
* ``redis_server``: a private server of the test's own, always (for tests that kill it,
  restart it, slow it down or kill its clients: an external server is not ours to break).
* ``redis_cluster_url`` (session): ``REDIS_URL`` when it names a cluster, else a private
  3-master Redis Cluster (``redis-cli --cluster create``).
* ``key_prefix``: a namespace prefix of the test's own, so that no two tests see each other's
  keys or invalidations, even on one shared server.
* ``make_tier``: builds :class:`RedisTier` objects with short timeouts, closed at teardown.
* ``amake_tier``: the same for asyncio tests: also closes each tier's asyncio client on the
  test's event loop.
* ``make_tiered``: builds :class:`TieredCache` objects (an L1 of a given name and TTL on a
  tier), closed at teardown; two tiers on one URL and prefix are two instances.
* :class:`Loader` and :func:`concurrent_loads`: a loader that counts its calls, and
  ``get_or_set`` of one key in many threads at once while the loader is held.
* :func:`delivered`: whether every instance has applied every invalidation the others sent
  (a write announces itself to the others, which drop their copy: wait for it before reading).
* :func:`instance_main`: one instance in a process of its own, driven through its stdin (for
  the tests of two OS processes sharing one Redis).

``REDIS_URL`` is taken out of the environment when this plugin loads, so that the services and
managers other tests build from ``Settings`` stay single-tier, as those tests expect. Nothing is
skipped: a missing ``redis-server`` fails with what to install.
"""

from __future__ import annotations

import atexit
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from pgcache import Cache, ManualClock
from pgcache.caching.redis_tier import RedisTier
from pgcache.caching.redis_url import check_redis_url
from pgcache.caching.redisserver import RedisClusterServers, RedisServer
from pgcache.caching.tiered import TieredCache

MakeTier = Callable[..., RedisTier]
MakeTiered = Callable[..., "TieredCache[Any, Any]"]

#: the REDIS_URL the run was started with (None: the tests start their own servers)
EXTERNAL_REDIS_URL: str | None = os.environ.pop("REDIS_URL", None) or None

#: timeouts short enough that the fault tests wait little, long enough for a loaded machine
TEST_TIMEOUTS: dict[str, float] = {"socket_timeout": 0.5, "connect_timeout": 0.5}


def _external_is_cluster() -> bool:
    return EXTERNAL_REDIS_URL is not None and check_redis_url(EXTERNAL_REDIS_URL)[1]


def _private(factory: Callable[[], Any]) -> Any:
    try:
        return factory()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if EXTERNAL_REDIS_URL is not None:
        yield EXTERNAL_REDIS_URL
        return
    server: RedisServer = _private(lambda: RedisServer().start())
    atexit.register(server.stop)  # idempotent; covers an aborted session
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server: RedisServer = _private(lambda: RedisServer().start())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    if EXTERNAL_REDIS_URL is not None and _external_is_cluster():
        yield EXTERNAL_REDIS_URL
        return
    cluster: RedisClusterServers = _private(lambda: RedisClusterServers().start())
    atexit.register(cluster.stop)
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def key_prefix() -> str:
    return f"pgcache-test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def make_tier(redis_url: str, key_prefix: str) -> Iterator[MakeTier]:
    """``make_tier(url=redis_url, **options)``: tiers on the test's namespace, closed at the end."""
    created: list[RedisTier] = []

    def make(url: str | None = None, **options: Any) -> RedisTier:
        for name, value in TEST_TIMEOUTS.items():
            options.setdefault(name, value)
        options.setdefault("key_prefix", key_prefix)
        tier = RedisTier(url or redis_url, **options)
        created.append(tier)
        return tier

    yield make
    for tier in created:
        tier.close()


@pytest.fixture
async def amake_tier(make_tier: MakeTier) -> AsyncIterator[MakeTier]:
    created: list[RedisTier] = []

    def make(url: str | None = None, **options: Any) -> RedisTier:
        tier = make_tier(url, **options)
        created.append(tier)
        return tier

    yield make
    for tier in created:
        await tier.aclose()


@pytest.fixture
def make_tiered() -> Iterator[MakeTiered]:
    """``make_tiered(tier, name="plans", ttl=60.0, clock=None, **options)``: a tiered cache."""
    created: list[TieredCache[Any, Any]] = []

    def make(
        tier: RedisTier | None,
        name: str = "plans",
        ttl: float | None = 60.0,
        clock: ManualClock | None = None,
        **options: Any,
    ) -> TieredCache[Any, Any]:
        l1: Cache[Any, Any] = Cache(ttl=ttl, name=name, clock=clock, cleanup_interval=3600.0)
        tiered: TieredCache[Any, Any] = TieredCache(l1, tier, **options)
        created.append(tiered)
        return tiered

    yield make
    for tiered in created:
        tiered.close()


class Loader:
    """A loader that counts its calls (from any thread) and returns ``value``; while ``release``
    is clear (see :func:`concurrent_loads`) every call waits for it."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0
        self.release = threading.Event()
        self.release.set()
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
        self.release.wait(10)
        return self.value


@contextmanager
def concurrent_loads(
    caches: Sequence[TieredCache[Any, Any]], key: Any, loader: Loader
) -> Iterator[list[Any]]:
    """``cache.get_or_set(key, loader)`` for each of ``caches`` (one may come several times), each
    in a thread of its own; ``loader`` is held until the block ends, the list holds the results
    once every thread has ended."""
    results: list[Any] = []
    loader.release.clear()
    threads = [
        threading.Thread(target=lambda c=cache: results.append(c.get_or_set(key, loader)))
        for cache in caches
    ]
    for thread in threads:
        thread.start()
    try:
        yield results
    finally:
        loader.release.set()
        for thread in threads:
            thread.join(10)


def delivered(*caches: TieredCache[Any, Any]) -> bool:
    """Whether the tier of each cache has applied every message the tiers of the others sent."""
    tiers = {id(cache.tier): cache.tier for cache in caches if cache.tier is not None}
    statuses = {key: tier.status() for key, tier in tiers.items()}
    sent = sum(status.invalidations_sent for status in statuses.values())
    return all(
        status.invalidations_received == sent - status.invalidations_sent
        for status in statuses.values()
    )


def instance_main() -> None:
    """One instance (a tier and a ``plans`` cache) answering JSON commands on stdin, one per
    line: ``{"op": "load", "key": k, "value": v}`` (get_or_set), ``get``, ``delete``,
    ``status``; it answers one JSON line each and exits at end of input.
    ``argv``: the Redis URL and the key prefix."""
    import json
    import sys

    url, prefix = sys.argv[1], sys.argv[2]
    tier = RedisTier(url, key_prefix=prefix, **TEST_TIMEOUTS)
    plans: TieredCache[Any, Any] = TieredCache(Cache(ttl=60.0, name="plans"), tier)
    loads = [0]

    def loader(value: Any) -> Callable[[], Any]:
        def load() -> Any:
            loads[0] += 1
            return value

        return load

    print(json.dumps({"ready": tier.wait_subscribed(5.0)}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        op, key = command["op"], command.get("key")
        if op == "load":
            answer: Any = plans.get_or_set(key, loader(command.get("value")))
        elif op == "get":
            answer = plans.get(key)
        elif op == "delete":
            answer = plans.delete(key)
        else:
            answer = {"l1": plans.l1.get(key) if key is not None else None}
        metrics = plans.tier_metrics()
        print(
            json.dumps(
                {"answer": answer, "loads": loads[0], "l2_hits": metrics.l2_hits,
                 "received": tier.status().invalidations_received}
            ),
            flush=True,
        )  # fmt: skip
    plans.close()
    tier.close()
