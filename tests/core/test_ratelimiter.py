"""pgcache.RateLimiter: a GCRA token bucket per key in the Rust core.

Time is a ManualClock except in one test, so every number below is exact: a limiter of ``rate``
requests per second and ``burst`` allows ``burst`` requests at once, then one every
``1 / rate`` seconds, and tells a denied request how long to wait.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from pgcache._core import ManualClock, RateLimitDecision, RateLimiter


def _limiter(
    rate: float = 10.0, burst: int | None = 5, **kwargs: Any
) -> tuple[RateLimiter, ManualClock]:
    clock = ManualClock(1000.0)
    return RateLimiter(rate, burst, clock=clock, **kwargs), clock


# --- the bucket ------------------------------------------------------------------------------


def test_a_quiet_key_may_make_its_whole_burst_at_once() -> None:
    limiter, _ = _limiter(rate=10, burst=5)
    assert [limiter.allow("client") for _ in range(5)] == [0.0] * 5
    assert limiter.allow("client") == pytest.approx(0.1)


def test_the_wait_of_a_denied_request_is_when_it_would_be_allowed() -> None:
    limiter, clock = _limiter(rate=4, burst=1)
    assert limiter.allow("client") == 0.0
    wait = limiter.allow("client")
    assert wait == pytest.approx(0.25)
    clock.advance(wait * 0.99)
    assert limiter.allow("client") > 0
    clock.advance(wait * 0.01)
    assert limiter.allow("client") == 0.0


def test_denied_requests_are_not_counted_against_the_key() -> None:
    limiter, clock = _limiter(rate=1, burst=1)
    limiter.allow("client")
    for _ in range(100):
        assert limiter.allow("client") > 0
    clock.advance(1.0)
    assert limiter.allow("client") == 0.0


def test_over_time_the_rate_is_the_configured_rate() -> None:
    limiter, clock = _limiter(rate=100, burst=10)
    allowed = 0
    for _ in range(10_000):  # ten attempts every millisecond for ten seconds
        allowed += sum(limiter.allow("client") == 0.0 for _ in range(10))
        clock.advance(0.001)
    assert allowed == 10 + 999  # the burst, then one every 10 ms from 10 ms to 9,990 ms


def test_keys_have_separate_buckets() -> None:
    limiter, _ = _limiter(rate=1, burst=1)
    assert limiter.allow("10.0.0.1") == 0.0
    assert limiter.allow("10.0.0.1") > 0
    assert limiter.allow("10.0.0.2") == 0.0


def test_a_fractional_rate_is_one_request_every_so_many_seconds() -> None:
    limiter, _ = _limiter(rate=0.5, burst=1)
    limiter.allow("client")
    assert limiter.allow("client") == pytest.approx(2.0)


def test_the_default_burst_is_one_seconds_worth() -> None:
    assert RateLimiter(100).burst == 100
    assert RateLimiter(2.5).burst == 3
    assert RateLimiter(0.1).burst == 1


def test_decide_says_what_the_rate_limit_headers_need() -> None:
    limiter, _ = _limiter(rate=10, burst=3)
    first = limiter.decide("client")
    assert isinstance(first, RateLimitDecision)
    assert (first.allowed, first.wait, first.remaining) == (True, 0.0, 2)
    assert first.reset == pytest.approx(0.1)
    limiter.decide("client")
    limiter.decide("client")
    denied = limiter.decide("client")
    assert (denied.allowed, denied.remaining) == (False, 0)
    assert denied.wait == pytest.approx(0.1)
    assert denied.reset == pytest.approx(0.3)


def test_clear_fills_every_bucket() -> None:
    limiter, _ = _limiter(rate=1, burst=1)
    limiter.allow("client")
    limiter.clear()
    assert len(limiter) == 0
    assert limiter.allow("client") == 0.0


def test_stats_count_allowed_and_limited_requests() -> None:
    limiter, _ = _limiter(rate=1, burst=2)
    for _ in range(5):
        limiter.allow("a")
    limiter.allow("b")
    assert limiter.stats() == {"allowed": 3, "limited": 3, "evicted": 0, "keys": 2}


def test_repr_shows_the_limit() -> None:
    assert repr(RateLimiter(100.0, 20, max_keys=50)) == (
        "RateLimiter(rate=100.0, burst=20, max_keys=50)"
    )


# --- the key table ---------------------------------------------------------------------------


def test_the_key_table_never_holds_more_than_max_keys() -> None:
    limiter, _ = _limiter(rate=1, burst=1, max_keys=100)
    for n in range(10_000):
        assert limiter.allow(f"client-{n}") == 0.0
    assert len(limiter) == 100
    assert limiter.stats()["evicted"] == 10_000 - 100


def test_a_full_table_forgets_a_key_whose_bucket_is_full_before_one_that_owes() -> None:
    limiter, clock = _limiter(rate=1, burst=1, max_keys=16)
    for n in range(15):
        limiter.allow(f"old-{n}")
    clock.advance(60.0)  # every old bucket is full again: forgetting them costs nothing
    limiter.allow("limited")
    for n in range(5):
        limiter.allow(f"new-{n}")
    assert limiter.allow("limited") > 0


def test_a_flood_of_new_keys_takes_memory_bounded_by_max_keys() -> None:
    limiter, _ = _limiter(rate=1, burst=1, max_keys=1000)
    for n in range(50_000):
        limiter.allow(f"{n:08d}" * 100)  # 800-character keys
    assert len(limiter) == 1000


# --- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"rate": 0}, ValueError, "rate must be a positive number"),
        ({"rate": -1.0}, ValueError, "rate must be a positive number"),
        ({"rate": math.nan}, ValueError, "rate must be a positive number"),
        ({"rate": math.inf}, ValueError, "rate must be a positive number"),
        ({"rate": 2e9}, ValueError, "up to 1e9"),
        ({"rate": 10**400}, ValueError, "rate must be a positive number"),
        ({"rate": True}, TypeError, "rate must be a number of requests per second, not bool"),
        ({"rate": "100/s"}, TypeError, "not str"),
        ({"rate": 1, "burst": 0}, ValueError, "burst must be between 1 and"),
        ({"rate": 1, "burst": 1.5}, TypeError, "burst must be an int, not float"),
        ({"rate": 1, "burst": True}, TypeError, "burst must be an int, not bool"),
        ({"rate": 1, "max_keys": 0}, ValueError, "max_keys must be between 1 and"),
        ({"rate": 1, "max_keys": 2**40}, ValueError, "max_keys must be between 1 and"),
        ({"rate": 1, "clock": time.monotonic}, TypeError, "clock must be a pgcache.ManualClock"),
    ],
    ids=repr,
)
def test_a_bad_argument_is_one_error_naming_it(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        RateLimiter(**kwargs)


@pytest.mark.parametrize("key", [1, b"client", None, ("a",)], ids=repr)
def test_a_key_that_is_not_a_str_is_a_type_error_that_changes_nothing(key: object) -> None:
    limiter, _ = _limiter()
    with pytest.raises(TypeError, match="key must be a str, not"):
        limiter.allow(key)  # type: ignore[arg-type]
    assert limiter.stats() == {"allowed": 0, "limited": 0, "evicted": 0, "keys": 0}


def test_a_key_whose_hash_fails_changes_nothing() -> None:
    class BadKey(str):
        __slots__ = ()

        def __hash__(self) -> int:
            raise RuntimeError("no hash")

    limiter, _ = _limiter()
    with pytest.raises(RuntimeError, match="no hash"):
        limiter.allow(BadKey("client"))
    assert len(limiter) == 0


def test_a_timedelta_clock_step_moves_the_bucket() -> None:
    limiter, clock = _limiter(rate=1, burst=1)
    limiter.allow("client")
    clock.advance(timedelta(seconds=1))
    assert limiter.allow("client") == 0.0


# --- threads and the real clock --------------------------------------------------------------


def test_threads_share_one_budget_exactly() -> None:
    limiter, _ = _limiter(rate=1, burst=1000)
    allowed: list[int] = []
    start = threading.Barrier(8)

    def client() -> None:
        start.wait()
        allowed.append(sum(limiter.allow("shared") == 0.0 for _ in range(500)))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(allowed) == 1000
    assert limiter.stats()["limited"] == 8 * 500 - 1000


def test_with_the_real_clock_a_request_retried_after_its_wait_is_allowed() -> None:
    limiter = RateLimiter(20.0, 1)
    retried = 0
    for _ in range(10_000):  # a loaded machine may refill the bucket between two calls
        wait = limiter.allow("client")
        if wait == 0.0:
            continue
        assert wait <= 0.1
        time.sleep(wait)
        # The limiter reads the kernel's coarse clock and adds its resolution to every wait;
        # on a loaded VM the coarse clock can lag by more than one tick (a tick handled late),
        # so a retry may be early by that much: it is then told to wait again, no longer.
        again = limiter.allow("client")
        if again != 0.0:
            assert again <= wait
            time.sleep(again)
            assert limiter.allow("client") == 0.0
        retried += 1
        if retried == 5:
            break
    assert retried == 5
