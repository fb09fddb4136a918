"""``Cache(policy="tinylfu")``, the default: adaptive W-TinyLFU.

Which entry leaves a full cache is the policy's prediction, so these tests check what holds
under any policy (a model-based test), what W-TinyLFU promises beyond LRU (a scan does not
flush frequently used keys; a new entry is always readable at once), the counters, and the hit
rate on one recorded trace against the figure ``benches/hitrate.py`` measured. The policy's
internals (sketch, doorkeeper, regions, climber) are tested in Rust (``rust/core/policy``).
"""

from __future__ import annotations

import gzip
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pgcache import Cache, ManualClock

MISSING = object()


# --------------------------------------------------------------------------- the argument


def test_new_caches_use_tinylfu(make_cache: Any) -> None:
    assert make_cache().policy == "tinylfu"
    assert make_cache(policy="lru").policy == "lru"


def test_an_unknown_policy_is_refused_with_its_name() -> None:
    with pytest.raises(
        ValueError, match=r"policy must be one of \"tinylfu\" or \"lru\", got 'lfu'"
    ):
        Cache(policy="lfu")  # type: ignore[arg-type]


def test_a_policy_that_is_not_a_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="policy must be a str"):
        Cache(policy=1)  # type: ignore[arg-type]


def test_an_unbounded_tinylfu_cache_never_evicts(make_cache: Any) -> None:
    c = make_cache(max_size=None, policy="tinylfu")
    for i in range(5000):
        c.set(i, i)
    m = c.metrics()
    assert (len(c), m.evictions, m.rejections) == (5000, 0, 0)


# --------------------------------------------------------------------------- what it promises


def test_a_new_entry_is_readable_at_once_in_a_full_cache(make_cache: Any) -> None:
    c = make_cache(max_size=50)
    for i in range(50):
        for _ in range(5):
            c.get(i) if i in c else c.set(i, i)  # frequent keys fill the cache
    for i in range(1000, 1200):
        c.set(i, i)
        assert c.get(i) == i
        assert len(c) == 50


def test_a_scan_does_not_flush_frequently_used_keys(make_cache: Any) -> None:
    def hot_keys_kept(policy: str) -> int:
        c = make_cache(max_size=100, policy=policy)
        hot = range(50)
        for _ in range(20):
            for key in hot:
                if c.get(key) is None:
                    c.set(key, key)
        for key in range(10_000, 12_000):  # a scan of keys seen once
            c.set(key, key)
        return sum(key in c for key in hot)

    assert hot_keys_kept("lru") == 0
    assert hot_keys_kept("tinylfu") >= 45


def test_rejected_newcomers_are_counted_apart_from_evictions(make_cache: Any) -> None:
    c = make_cache(max_size=20)
    for _ in range(10):
        for key in range(20):
            c.get(key) if key in c else c.set(key, key)
    for key in range(100, 400):
        c.set(key, key)
    m = c.metrics()
    assert m.rejections > 0
    assert m.evictions + m.rejections == 20 + 300 - 20
    assert m.to_dict()["rejections"] == m.rejections
    c.reset_metrics()
    assert c.metrics().rejections == 0


def test_entries_expire_under_tinylfu(make_cache: Any, clock: ManualClock) -> None:
    c = make_cache(max_size=10, ttl=5)
    c.set("default", 1)
    c.set("short", 2, ttl=1)
    clock.advance(1)
    assert c.get("short") is None
    assert c.get("default") == 1
    clock.advance(4)
    assert c.get("default") is None
    assert c.metrics().expirations == 2


def test_get_or_set_stores_under_tinylfu(make_cache: Any) -> None:
    c = make_cache(max_size=3)
    for key in range(10):
        assert c.get_or_set(key, lambda key=key: key * 10) == key * 10
        assert c.get(key) == key * 10
    assert len(c) == 3


# --------------------------------------------------------------------------- a recorded trace

#: the traces of ``benches/hitrate.py`` (see ../shared/traces/README.md)
TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"
GLI = TRACES / "lirs-gli.trace.gz"


def replay(cache: Cache[int, bool], keys: list[int]) -> float:
    hits = 0
    for key in keys:
        if cache.get(key) is None:
            cache.set(key, True)
        else:
            hits += 1
    return hits / len(keys)


@pytest.mark.skipif(not GLI.exists(), reason=f"the LIRS traces are not at {TRACES}")
def test_gli_trace_hit_rate_matches_the_benchmark(make_cache: Any) -> None:
    # benches/hitrate.py, gli @ 500: LRU 0.009, tinylfu 0.335, theine 0.332, optimum 0.343;
    # tinylfu 0.322 to 0.338 over 2,000 runs of this code (median 0.336; each cache draws its
    # own seed), so the band is that range with a point to spare.
    with gzip.open(GLI, "rt") as lines:
        keys = [int(line.split()[0]) for line in lines if line.strip() not in ("", "*")]
    assert len(keys) == 6015
    assert replay(make_cache(max_size=500, policy="lru"), keys) == pytest.approx(0.009, abs=0.001)
    assert 0.309 <= replay(make_cache(max_size=500), keys) <= 0.347


def test_zipf_with_scans_hit_rate_matches_the_benchmark(make_cache: Any) -> None:
    # Skewed traffic over 2,000 keys, every key scanned after each 10,000 requests.
    rng = random.Random(3)
    weights = [1 / (rank + 1) for rank in range(2000)]
    keys: list[int] = []
    for _ in range(5):
        keys += rng.choices(range(2000), weights=weights, k=10_000)
        keys += range(2000)
    lru = replay(make_cache(max_size=250, policy="lru"), keys)
    tinylfu = replay(make_cache(max_size=250), keys)
    # Measured with this code: LRU 0.542; tinylfu 0.602 to 0.620 over 2,000 runs (median 0.618;
    # each cache draws its own sketch seed), so the band is that range with a point to spare.
    assert lru == pytest.approx(0.542, abs=0.001)
    assert 0.591 <= tinylfu <= 0.631


# --------------------------------------------------------------------------- model-based test


class Value:
    """Counts live instances, to check that each value is released exactly once."""

    alive = 0

    def __init__(self) -> None:
        Value.alive += 1

    def __del__(self) -> None:
        Value.alive -= 1


KEYS = st.integers(min_value=0, max_value=11)
TTLS = st.one_of(st.none(), st.sampled_from([0.5, 1.0, 3.0, timedelta(seconds=2)]))


class AnyPolicyMachine(RuleBasedStateMachine):
    """What holds whichever entry the policy gives up.

    The model keeps, for each key the cache may hold, its value object and deadline; after
    every step, the cache's live entries are checked against it and the keys the policy gave
    up are dropped from it. Invariants: size within ``max_size``; a returned value is the
    model's and not expired; a just-set key is present; hits + misses = lookups; every entry
    that left is counted once (evictions + rejections + expirations + deletions + cleared =
    entries created - entries held); live ``Value`` objects = entries held (each value is
    released exactly once, when its entry leaves).
    """

    def __init__(self) -> None:
        super().__init__()
        self.cache: Cache[int, Value] | None = None

    @property
    def c(self) -> Cache[int, Value]:
        assert self.cache is not None
        return self.cache

    @initialize(
        max_size=st.integers(min_value=1, max_value=6),
        ttl=st.one_of(st.none(), st.integers(min_value=1, max_value=10)),
    )
    def create(self, max_size: int, ttl: int | None) -> None:
        self.clock = ManualClock()
        self.now = 0.0
        self.ttl = ttl
        self.max_size = max_size
        self.cache = Cache(ttl=ttl, max_size=max_size, cleanup_interval=3600, clock=self.clock)
        self.model: dict[int, tuple[Value, float | None]] = {}
        self.lookups = 0
        self.created = 0
        self.deleted = 0
        self.cleared = 0
        self.held_at_reset = 0

    def teardown(self) -> None:
        if self.cache is not None:
            self.model.clear()
            self.cache.close()
            assert Value.alive == 0, "a value outlived its cache"

    def deadline(self, ttl: float | timedelta | None) -> float | None:
        if isinstance(ttl, timedelta):
            ttl = ttl.total_seconds()
        if ttl is None:
            ttl = self.ttl
        return None if ttl is None else self.now + ttl

    def check_found(self, key: int, found: Any) -> None:
        """A value the cache returned is the model's, and live."""
        value, deadline = self.model[key]
        assert found is value
        assert deadline is None or self.now < deadline

    # -------------------------------------------------------------- stores
    @rule(key=KEYS, ttl=TTLS)
    def set(self, key: int, ttl: float | timedelta | None) -> None:
        present = key in self.c  # removes (and counts) an expired entry
        value = Value()
        self.c.set(key, value, ttl=ttl)
        self.created += not present
        self.model[key] = (value, self.deadline(ttl))
        assert key in self.c

    @rule(key=KEYS)
    def get_or_set(self, key: int) -> None:
        made: list[Value] = []

        def factory() -> Value:
            made.append(Value())
            return made[-1]

        found = self.c.get_or_set(key, factory)
        self.lookups += 1
        if made:
            assert found is made[0]
            self.created += 1
            self.model[key] = (found, self.deadline(None))
            assert key in self.c
        else:
            self.check_found(key, found)

    # -------------------------------------------------------------- lookups
    @rule(key=KEYS)
    def get(self, key: int) -> None:
        found = self.c.get(key, MISSING)
        self.lookups += 1
        if found is not MISSING:
            self.check_found(key, found)

    @rule(key=KEYS)
    def contains(self, key: int) -> None:
        if key in self.c:
            self.check_found(key, self.model[key][0])

    # -------------------------------------------------------------- removals
    @rule(key=KEYS)
    def delete(self, key: int) -> None:
        if self.c.delete(key):
            self.deleted += 1
            self.model.pop(key)

    @rule(key=KEYS)
    def pop(self, key: int) -> None:
        found = self.c.pop(key, MISSING)
        if found is not MISSING:
            self.check_found(key, found)
            self.deleted += 1
            self.model.pop(key)

    # -------------------------------------------------------------- time and housekeeping
    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 5.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.now += seconds

    @rule()
    def expire(self) -> None:
        self.c.expire()

    @rule()
    def clear(self) -> None:
        self.cleared += len(self.c)
        self.c.clear()
        self.model.clear()

    @rule()
    def reset_metrics(self) -> None:
        self.c.reset_metrics()
        self.lookups = self.created = self.deleted = self.cleared = 0
        self.held_at_reset = len(self.c)

    # -------------------------------------------------------------- invariants
    @invariant()
    def the_cache_agrees_with_the_model(self) -> None:
        if self.cache is None:
            return
        live = dict(self.c.items())
        for key, value in live.items():
            self.check_found(key, value)
        for key in [k for k in self.model if k not in live]:
            del self.model[key]  # given up by the policy, or expired
        assert len(self.c) <= self.max_size
        m = self.c.metrics()
        assert m.hits + m.misses == self.lookups
        left = m.evictions + m.rejections + m.expirations + self.deleted + self.cleared
        assert self.held_at_reset + self.created - left == len(self.c) == m.size
        assert Value.alive == len(self.c)


TestAnyPolicyMachine = AnyPolicyMachine.TestCase
TestAnyPolicyMachine.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
