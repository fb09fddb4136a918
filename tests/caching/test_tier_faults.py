"""Redis down, slow, restarted or cutting the subscription never breaks a call: the tier answers
from L1 and the loader behind its circuit breaker, and empties L1 whenever it may have missed an
invalidation. Every test here breaks a private redis-server of its own."""

from __future__ import annotations

import threading
from typing import Any

import redis
from tests.support.caches import WaitUntil
from tests.support.redis import MakeTier, MakeTiered, delivered

from pgcache.caching.redisserver import RedisServer, ping
from pgcache.caching.tiered import TieredCache

PLAN = {"Plan": {"Node Type": "Seq Scan"}}


def _dead_url() -> str:
    server = RedisServer()  # a free port nobody listens on: never started
    server.stop()
    return server.url


def _subscribed(*caches: TieredCache[Any, Any]) -> bool:
    return all(cache.tier is not None and cache.tier.status().subscribed for cache in caches)


def test_redis_down_at_start_costs_nothing_but_the_shared_tier(
    make_tier: MakeTier, make_tiered: MakeTiered
) -> None:
    plans = make_tiered(make_tier(_dead_url(), failure_threshold=1, reset_timeout=60.0))
    assert plans.get_or_set(-42, lambda: PLAN) == PLAN
    assert plans.get(-42) == PLAN  # from L1
    assert plans.get_or_set(7, lambda: "loaded") == "loaded"
    assert plans.tier is not None
    status = plans.tier.status()
    assert (status.degraded, status.breaker, status.subscribed) == (True, "open", False)
    assert plans.tier_metrics().bypassed > 0


def test_a_killed_subscriber_connection_empties_l1_and_resubscribes(
    redis_server: RedisServer, make_tier: MakeTier, make_tiered: MakeTiered, wait_until: WaitUntil
) -> None:
    writer = make_tiered(make_tier(redis_server.url))
    reader = make_tiered(make_tier(redis_server.url))
    writer.set(-42, PLAN)
    assert reader.get(-42) == PLAN
    assert reader.tier is not None

    with redis.Redis.from_url(redis_server.url) as admin:
        assert admin.client_kill_filter(_type="pubsub") == 2
    assert wait_until(lambda: reader.tier.status().subscription_losses == 1 and _subscribed(reader))
    assert reader.l1.get(-42) is None
    assert reader.tier.status().l1_flushes == 2  # when lost, and again once resubscribed

    assert wait_until(lambda: _subscribed(writer))
    assert reader.get(-42) == PLAN
    writer.delete(-42)  # invalidation works again
    assert wait_until(lambda: reader.l1.get(-42) is None)


def test_an_unreadable_invalidation_empties_l1(
    redis_server: RedisServer, make_tier: MakeTier, make_tiered: MakeTiered, wait_until: WaitUntil
) -> None:
    plans = make_tiered(make_tier(redis_server.url))
    plans.set(-42, PLAN)
    assert plans.tier is not None
    with redis.Redis.from_url(redis_server.url) as other:
        other.publish(plans.tier.keys.channel, b"someone else's bytes")
    assert wait_until(lambda: plans.tier.status().invalidation_errors == 1)
    assert plans.l1.get(-42) is None


def test_redis_killed_under_load_and_restarted(
    redis_server: RedisServer, make_tier: MakeTier, make_tiered: MakeTiered, wait_until: WaitUntil
) -> None:
    options = {"failure_threshold": 2, "reset_timeout": 0.1}
    writer = make_tiered(make_tier(redis_server.url, **options))
    reader = make_tiered(make_tier(redis_server.url, **options))
    errors: list[BaseException] = []
    answers = 0
    stop = threading.Event()

    def load_forever(cache: TieredCache[Any, Any]) -> None:
        nonlocal answers
        while not stop.is_set():
            for key in range(20):
                try:
                    assert cache.get_or_set(key, lambda k=key: {"key": k}) == {"key": key}
                    answers += 1
                except BaseException as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=load_forever, args=(c,)) for c in (writer, reader) * 2]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: answers > 200)
        redis_server.kill()
        assert wait_until(lambda: reader.tier.status().subscription_losses == 1)  # type: ignore[union-attr]
        reader.set(-1, "written while Redis was down")  # kept in L1 only
        before = answers
        assert wait_until(lambda: answers > before + 200)  # still answering, from L1 and loaders
        redis_server.start()
        assert wait_until(lambda: _subscribed(writer, reader), timeout=10.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)

    assert errors == []
    assert reader.l1.get(-1) is None  # L1 emptied on resubscription
    writer.set(3, "after the restart")
    assert wait_until(lambda: reader.get(3) == "after the restart")


def test_a_slow_redis_opens_the_breaker_and_calls_stop_waiting_for_it(
    redis_server: RedisServer, make_tier: MakeTier, make_tiered: MakeTiered, wait_until: WaitUntil
) -> None:
    plans = make_tiered(
        make_tier(redis_server.url, socket_timeout=0.1, failure_threshold=2, reset_timeout=60.0)
    )

    def sleep_redis() -> None:
        with redis.Redis.from_url(redis_server.url) as admin:
            admin.execute_command("DEBUG", "SLEEP", 1)

    sleeper = threading.Thread(target=sleep_redis)
    sleeper.start()
    try:
        assert wait_until(lambda: not ping(redis_server.port, timeout=0.05))  # it sleeps now
        loaded = [plans.get_or_set(key, lambda k=key: k) for key in range(10)]  # type: ignore[misc]
    finally:
        sleeper.join(10)

    assert loaded == list(range(10))
    metrics = plans.tier_metrics()
    assert metrics.l2_errors == 2  # two timeouts opened the breaker...
    assert metrics.bypassed >= 8  # ...and no later call waited for Redis
    assert plans.tier is not None
    assert (plans.tier.status().breaker, plans.tier.status().degraded) == ("open", True)


def test_the_breaker_lets_redis_back_in_once_it_answers(
    redis_server: RedisServer, make_tier: MakeTier, make_tiered: MakeTiered, wait_until: WaitUntil
) -> None:
    plans = make_tiered(make_tier(redis_server.url, failure_threshold=1, reset_timeout=0.05))
    other = make_tiered(make_tier(redis_server.url))
    redis_server.kill()
    assert plans.get_or_set(-42, lambda: "from the loader") == "from the loader"
    assert plans.tier is not None
    assert plans.tier.status().breaker != "closed"
    redis_server.start()
    assert wait_until(lambda: _subscribed(plans, other), timeout=10.0)
    other.set(7, PLAN)
    assert wait_until(lambda: plans.get(7) == PLAN)
    assert plans.tier.status().breaker == "closed"


def test_an_invalidation_redis_did_not_take_is_done_once_it_answers(
    redis_server: RedisServer, make_tier: MakeTier, make_tiered: MakeTiered, wait_until: WaitUntil
) -> None:
    writer = make_tiered(make_tier(redis_server.url, failure_threshold=1, reset_timeout=0.2))
    reader = make_tiered(make_tier(redis_server.url))
    writer.set(-42, PLAN)
    assert wait_until(lambda: delivered(writer, reader))
    assert reader.get(-42) == PLAN
    assert writer.tier is not None
    writer.tier.breaker.record_failure()  # as after a timeout: the writer's breaker is open

    assert writer.delete(-42) is True  # from its L1; Redis and the reader not reached yet
    assert writer.tier.status().invalidations_pending == 1
    assert writer.tier.status().degraded
    assert reader.l1.get(-42) == PLAN

    # Once the breaker lets a probe through, the writer's listener does the delete again.
    assert wait_until(lambda: writer.tier.status().invalidations_pending == 0)  # type: ignore[union-attr]
    assert wait_until(lambda: reader.l1.get(-42) is None)
    assert reader.get(-42) is None  # gone from Redis too
    assert not writer.tier.status().degraded
