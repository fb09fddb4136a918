"""Thread safety, single-flight get_or_set, and re-entry into the cache from user code."""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from pgcache import CacheClosedError, ManualClock, PgCacheError

JOIN_TIMEOUT = 50.0


def run_threads(n: int, target: Callable[[int], None]) -> list[BaseException]:
    """Start ``n`` threads together on ``target(index)``; return what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def runner(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still running: {stuck}"
    return errors


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads far more often than the default 5 ms to shake out races."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


# --------------------------------------------------------------------------- mixed operations


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("fast_switching")
def test_twenty_threads_mixed_operations_keep_every_value_with_its_key(make_cache: Any) -> None:
    max_size = 64
    c = make_cache(ttl=0.05, max_size=max_size, cleanup_interval=0.01, clock=None)
    n_threads, n_ops, n_keys = 20, 1500, 100
    lookups = [0] * n_threads
    written: list[set[tuple[int, int, int]]] = [set() for _ in range(n_threads)]
    read: list[list[tuple[int, Any]]] = [[] for _ in range(n_threads)]

    def work(t: int) -> None:
        rng = random.Random(t)
        mine_written, mine_read = written[t], read[t]
        count = 0
        for i in range(n_ops):
            k = rng.randrange(n_keys)
            op = rng.randrange(13)
            if op <= 2:
                value = (k, t, i)
                mine_written.add(value)
                c.set(k, value, ttl=rng.choice([None, 0.01, 0.1]))
            elif op == 3:
                mine_read.append((k, c.get(k)))
                count += 1
            elif op == 4:
                with contextlib.suppress(KeyError):
                    mine_read.append((k, c[k]))
                count += 1
            elif op == 5:
                wanted = [rng.randrange(n_keys) for _ in range(4)]
                got = c.get_many(wanted)
                count += len(wanted)
                assert set(got) <= set(wanted)
                mine_read.extend(got.items())
            elif op == 6:
                value = (k, t, i)
                mine_written.add(value)
                mine_read.append((k, c.get_or_set(k, partial(tuple, value))))
                count += 1
            elif op == 7:
                c.delete(k)
            elif op == 8:
                mine_read.append((k, c.pop(k, None)))
            elif op == 9:
                _ = k in c
            elif op == 10:
                pairs = [(k2, (k2, t, i)) for k2 in (k, (k + 1) % n_keys)]
                mine_written.update(v for _, v in pairs)
                c.set_many(pairs)
            elif op == 11:
                mine_read.extend(c.items())
                assert len(c) <= max_size
            else:
                c.expire()
        lookups[t] = count

    errors = run_threads(n_threads, work)
    assert errors == []

    all_written = set().union(*written)
    corrupt = [
        (k, v)
        for reads in read
        for k, v in reads
        if v is not None and (v[0] != k or v not in all_written)
    ]
    assert corrupt == []
    assert len(c) <= max_size
    c.expire()
    for k, v in c.items():
        assert v[0] == k
        assert v in all_written
    m = c.metrics()
    assert m.hits + m.misses == sum(lookups)
    assert m.size <= max_size


# --------------------------------------------------------------------------- load test


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["get_or_set", "get_then_set"])
def test_load_100_threads_80_20_hot_keys_reach_over_80_percent_hit_rate(
    make_cache: Any, mode: str
) -> None:
    n_threads, n_requests, n_keys, n_hot = 100, 100, 500, 100
    c = make_cache(clock=None, cleanup_interval=1.0)
    loads: Counter[int] = Counter()
    loads_lock = threading.Lock()
    seen: list[list[tuple[int, Any]]] = [[] for _ in range(n_threads)]

    def load(k: int) -> tuple[str, int]:
        with loads_lock:
            loads[k] += 1
        return ("value", k)

    def work(t: int) -> None:
        rng = random.Random(1000 + t)
        for _ in range(n_requests):
            # 20 % of the keys get 80 % of the requests.
            k = rng.randrange(n_hot) if rng.random() < 0.8 else rng.randrange(n_hot, n_keys)
            if mode == "get_or_set":
                v = c.get_or_set(k, partial(load, k))
            else:
                v = c.get(k)
                if v is None:
                    v = load(k)
                    c.set(k, v)
            seen[t].append((k, v))

    errors = run_threads(n_threads, work)
    assert errors == []

    m = c.metrics()
    assert m.hits + m.misses == n_threads * n_requests
    assert m.hit_rate > 80.0, m.to_dict()
    assert m.evictions == 0

    requested = {k for reads in seen for k, _ in reads}
    stored = dict(c.items())
    assert set(stored) == requested  # nothing lost
    assert all(v == ("value", k) for k, v in stored.items())  # nothing corrupt
    assert all(v == ("value", k) for reads in seen for k, v in reads)
    if mode == "get_or_set":
        assert set(loads) == requested
        assert max(loads.values()) == 1  # one load per key
        assert all(v is stored[k] for reads in seen for k, v in reads)


# --------------------------------------------------------------------------- single flight


@pytest.mark.timeout(60)
def test_concurrent_get_or_set_on_missing_key_runs_factory_once(make_cache: Any) -> None:
    c = make_cache(clock=None)
    n_threads = 32
    calls: list[int] = []
    value = object()
    results: list[Any] = [None] * n_threads

    def factory() -> object:
        calls.append(1)
        time.sleep(0.2)  # keep the load in flight while the other threads arrive
        return value

    def work(t: int) -> None:
        results[t] = c.get_or_set("k", factory)

    assert run_threads(n_threads, work) == []
    assert calls == [1]
    assert all(r is value for r in results)
    m = c.metrics()
    assert m.hits + m.misses == n_threads
    assert m.misses >= 1
    assert c.get("k") is value
    assert len(c) == 1


@pytest.mark.timeout(60)
def test_concurrent_get_or_set_waiters_all_get_the_factory_exception(make_cache: Any) -> None:
    class LoadError(Exception):
        pass

    c = make_cache(clock=None)
    n_threads = 32
    calls: list[int] = []
    outcomes: list[object] = []

    def factory() -> object:
        calls.append(1)
        time.sleep(0.2)
        raise LoadError("backend down")

    def work(t: int) -> None:
        try:
            c.get_or_set("k", factory)
        except LoadError as exc:
            outcomes.append(exc)
        else:
            outcomes.append("returned without the exception")

    assert run_threads(n_threads, work) == []
    assert len(outcomes) == n_threads
    assert all(isinstance(o, LoadError) for o in outcomes), outcomes
    assert 1 <= len(calls) <= n_threads
    assert "k" not in c
    assert len(c) == 0
    # Nothing stale is left in flight: the next caller loads normally.
    assert c.get_or_set("k", lambda: 7) == 7


@pytest.mark.timeout(60)
def test_concurrent_get_or_set_on_distinct_keys_do_not_wait_for_each_other(
    make_cache: Any,
) -> None:
    c = make_cache(clock=None)
    n_threads = 8
    inside = threading.Barrier(n_threads, timeout=20)

    def work(t: int) -> None:
        # Every factory waits until all of them run at once: this only completes if
        # loads of different keys proceed in parallel.
        def factory() -> int:
            inside.wait()
            return t

        assert c.get_or_set(t, factory) == t

    assert run_threads(n_threads, work) == []
    assert sorted(c.keys()) == list(range(n_threads))


# --------------------------------------------------------------------------- colliding slow keys


class SlowEqKey:
    """Every instance collides; ``==`` releases the GIL (time.sleep(0))."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return 42

    def __eq__(self, other: object) -> bool:
        time.sleep(0)
        return isinstance(other, SlowEqKey) and self.n == other.n


@pytest.mark.timeout(60)
def test_colliding_keys_whose_eq_releases_the_gil_work_under_16_threads(make_cache: Any) -> None:
    max_size = 16
    c = make_cache(max_size=max_size, clock=None, cleanup_interval=0.01, ttl=0.5)
    n_threads = 16
    bad: list[tuple[int, Any]] = []

    def check(n: int, v: Any) -> None:
        if v is not None and v[0] != n:
            bad.append((n, v))

    def work(t: int) -> None:
        rng = random.Random(t)
        for i in range(150):
            n = rng.randrange(24)
            key = SlowEqKey(n)
            op = rng.randrange(7)
            if op <= 1:
                c.set(key, (n, t, i))
            elif op == 2:
                check(n, c.get(key))
            elif op == 3:
                c.delete(key)
            elif op == 4:
                _ = key in c
            elif op == 5:
                check(n, c.get_or_set(key, partial(tuple, (n, t, i))))
            else:
                for got_key, v in c.get_many([key, SlowEqKey((n + 1) % 24)]).items():
                    check(got_key.n, v)

    assert run_threads(n_threads, work) == []
    assert bad == []
    assert len(c) <= max_size
    items = c.items()
    assert all(v[0] == k.n for k, v in items)
    assert len({k.n for k, _ in items}) == len(items)  # no duplicate keys


# ---------------------------------------------------------------- re-entry from __eq__ / __hash__

REENTRY_ACTIONS: list[tuple[str, Callable[[Any], object]]] = [
    ("get", lambda c: c.get("elsewhere")),
    ("set", lambda c: c.set("elsewhere", 1)),
    ("len", len),
    ("contains", lambda c: "elsewhere" in c),
    ("keys", lambda c: c.keys()),
    ("metrics", lambda c: c.metrics().hits),
]
OUTER_OPERATIONS: list[tuple[str, Callable[[Any, Any], object]]] = [
    ("get", lambda c, k: c.get(k)),
    ("set", lambda c, k: c.set(k, "new")),
    ("contains", lambda c, k: k in c),
    ("delete", lambda c, k: c.delete(k)),
]


def _record(outcomes: list[tuple[str, object]], action: Callable[[], object]) -> None:
    try:
        outcomes.append(("ok", action()))
    except RuntimeError as exc:
        outcomes.append(("RuntimeError", exc))
    except BaseException as exc:
        outcomes.append(("unexpected", exc))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "outer", [op for _, op in OUTER_OPERATIONS], ids=[n for n, _ in OUTER_OPERATIONS]
)
@pytest.mark.parametrize(
    "reentry", [op for _, op in REENTRY_ACTIONS], ids=[n for n, _ in REENTRY_ACTIONS]
)
def test_reentry_from_key_eq_raises_runtime_error_or_succeeds_never_hangs(
    make_cache: Any,
    outer: Callable[[Any, Any], object],
    reentry: Callable[[Any], object],
) -> None:
    c = make_cache()
    outcomes: list[tuple[str, object]] = []
    armed = False

    class Key:
        def __init__(self, n: int) -> None:
            self.n = n

        def __hash__(self) -> int:
            return 7

        def __eq__(self, other: object) -> bool:
            if armed:
                _record(outcomes, lambda: reentry(c))
            return isinstance(other, Key) and self.n == other.n

    c.set(Key(1), "one")
    armed = True
    outer(c, Key(1))  # a different but equal object: __eq__ must run
    armed = False

    assert outcomes, "__eq__ was never called"
    assert all(kind in ("ok", "RuntimeError") for kind, _ in outcomes), outcomes
    # The cache is intact and usable afterwards.
    c.set("after", 1)
    assert c.get("after") == 1


@pytest.mark.timeout(60)
def test_reentry_error_raised_from_key_eq_propagates_or_succeeds(make_cache: Any) -> None:
    c = make_cache()
    armed = False

    class Key:
        def __hash__(self) -> int:
            return 7

        def __eq__(self, other: object) -> bool:
            if armed:
                c.set("elsewhere", 1)  # not caught here
            return isinstance(other, Key)

    c.set(Key(), "one")
    armed = True
    try:
        result = c.get(Key())
    except RuntimeError:
        pass
    else:
        assert result == "one"
    armed = False
    assert c.get(Key()) == "one"


@pytest.mark.timeout(60)
def test_reentry_from_key_hash_succeeds_or_raises_runtime_error(make_cache: Any) -> None:
    c = make_cache()
    outcomes: list[tuple[str, object]] = []

    class Key:
        def __hash__(self) -> int:
            _record(outcomes, lambda: c.get("elsewhere"))
            return 11

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Key)

    c.set(Key(), "v")
    assert c.get(Key()) == "v"
    assert len(outcomes) >= 2
    assert all(kind in ("ok", "RuntimeError") for kind, _ in outcomes), outcomes


# --------------------------------------------------------------------------- re-entry from __del__


class ReentrantValue:
    """A value whose __del__ uses the cache that just released it, and records the outcome."""

    def __init__(self, cache: Any, outcomes: list[tuple[str, object]]) -> None:
        self.cache = cache
        self.outcomes = outcomes

    def __del__(self) -> None:
        cache = self.cache

        def use() -> object:
            cache.set("from_del", 1)
            return (cache.get("from_del"), len(cache), "from_del" in cache)

        try:
            self.outcomes.append(("ok", use()))
        except RuntimeError as exc:
            self.outcomes.append(("RuntimeError", exc))
        except PgCacheError as exc:
            self.outcomes.append((type(exc).__name__, exc))
        except BaseException as exc:
            self.outcomes.append(("unexpected", exc))


def _evict(c: Any, clock: ManualClock, outcomes: list[tuple[str, object]]) -> None:
    c.set("a", ReentrantValue(c, outcomes))
    c.set("b", 1)
    c.set("c", 2)  # max_size=2: "a" is evicted


def _overwrite(c: Any, clock: ManualClock, outcomes: list[tuple[str, object]]) -> None:
    c.set("a", ReentrantValue(c, outcomes))
    c.set("a", 1)


def _set_many_overwrite(c: Any, clock: ManualClock, outcomes: list[tuple[str, object]]) -> None:
    c.set("a", ReentrantValue(c, outcomes))
    c.set_many({"a": 1})


def _delete(c: Any, clock: ManualClock, outcomes: list[tuple[str, object]]) -> None:
    c.set("a", ReentrantValue(c, outcomes))
    c.delete("a")


def _delitem(c: Any, clock: ManualClock, outcomes: list[tuple[str, object]]) -> None:
    c.set("a", ReentrantValue(c, outcomes))
    del c["a"]


def _clear(c: Any, clock: ManualClock, outcomes: list[tuple[str, object]]) -> None:
    c.set("a", ReentrantValue(c, outcomes))
    c.clear()


def _expire(c: Any, clock: ManualClock, outcomes: list[tuple[str, object]]) -> None:
    c.set("a", ReentrantValue(c, outcomes), ttl=1)
    clock.advance(1)
    assert c.expire() == 1


def _expired_lookup(c: Any, clock: ManualClock, outcomes: list[tuple[str, object]]) -> None:
    c.set("a", ReentrantValue(c, outcomes), ttl=1)
    clock.advance(1)
    assert c.get("a") is None


def _insert_sweeps_expired(c: Any, clock: ManualClock, outcomes: list[tuple[str, object]]) -> None:
    c.set("a", ReentrantValue(c, outcomes), ttl=1)
    c.set("b", 1)
    clock.advance(1)
    c.set("c", 2)  # full: the expired "a" is removed first


RELEASES = [
    _evict,
    _overwrite,
    _set_many_overwrite,
    _delete,
    _delitem,
    _clear,
    _expire,
    _expired_lookup,
    _insert_sweeps_expired,
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("release", RELEASES, ids=[f.__name__.lstrip("_") for f in RELEASES])
def test_value_del_may_use_the_cache_when_released(
    make_cache: Any, clock: ManualClock, release: Callable[..., None]
) -> None:
    c = make_cache(max_size=2, policy="lru")
    outcomes: list[tuple[str, object]] = []
    release(c, clock, outcomes)
    assert len(outcomes) == 1, "the released value was not dropped"
    kind, _ = outcomes[0]
    assert kind in ("ok", "RuntimeError"), outcomes


@pytest.mark.timeout(60)
def test_value_del_may_use_the_cache_when_expired_by_background_thread(
    make_cache: Any, clock: ManualClock, wait_until: Any
) -> None:
    c = make_cache(max_size=2, cleanup_interval=0.01)
    outcomes: list[tuple[str, object]] = []
    c.set("a", ReentrantValue(c, outcomes), ttl=1)
    clock.advance(1)
    assert wait_until(lambda: len(outcomes) == 1)
    assert outcomes[0][0] in ("ok", "RuntimeError"), outcomes
    assert c.metrics().expirations >= 1


@pytest.mark.timeout(60)
def test_value_del_during_close_gets_cache_closed_error_or_runtime_error(
    make_cache: Any,
) -> None:
    c = make_cache()
    outcomes: list[tuple[str, object]] = []
    c.set("a", ReentrantValue(c, outcomes))
    c.close()
    assert len(outcomes) == 1
    kind, exc = outcomes[0]
    assert kind in (CacheClosedError.__name__, "RuntimeError"), outcomes
    assert isinstance(exc, (CacheClosedError, RuntimeError))
