"""Model-based test: random operation sequences against a pure-Python reference model.

The model is an OrderedDict (least recently used first) of key -> (value, deadline) that
implements the rules of the spec literally:

* an entry set at ``t`` with ttl ``d`` is expired from ``now >= t + d`` on;
* every operation that finds an expired entry removes it and counts one expiration
  (lookups also count the miss);
* a live overwrite keeps the key object, restarts the ttl, makes the entry MRU, never evicts;
* inserting a new key into a full cache first removes every expired entry, then evicts the
  LRU entry if the cache is still full;
* ``keys()``/``values()``/``items()`` list live entries MRU first and change nothing;
* ``len`` is only compared after ``expire()`` (it may include unnoticed expired entries).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pgcache import Cache, ManualClock

MISSING = object()

KEYS = st.integers(min_value=0, max_value=7)
# (key, variant): lookups may use an equal key of another type (dict semantics).
LOOKUP_KEYS = st.tuples(KEYS, st.booleans())
# Multiples of 0.5 s keep every deadline exact in binary floating point.
PER_CALL_TTLS = st.one_of(
    st.none(),
    st.sampled_from([0.5, 1.0, 2, 3.5, 10.0]),
    st.sampled_from([timedelta(seconds=1), timedelta(milliseconds=1500)]),
)
STEPS = st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 11.0])


class LoadError(Exception):
    pass


class CollidingKey:
    """Equal by ``n``; only three distinct hashes, so most keys collide."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return self.n % 3

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CollidingKey) and self.n == other.n

    def __repr__(self) -> str:
        return f"CollidingKey({self.n})"


class Model:
    def __init__(self, max_size: int, ttl: float | None) -> None:
        self.max_size = max_size
        self.ttl = ttl
        self.now = 0.0
        self.data: OrderedDict[Any, tuple[Any, float | None]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expirations = 0

    # -- helpers
    def _deadline(self, ttl: float | timedelta | None) -> float | None:
        if ttl is None:
            ttl = self.ttl
        if isinstance(ttl, timedelta):
            ttl = ttl.total_seconds()
        return None if ttl is None else self.now + ttl

    def _expired(self, key: Any) -> bool:
        deadline = self.data[key][1]
        return deadline is not None and self.now >= deadline

    def _live(self, key: Any) -> bool:
        """Is there a live entry? An expired one found on the way is removed and counted."""
        if key not in self.data:
            return False
        if self._expired(key):
            del self.data[key]
            self.expirations += 1
            return False
        return True

    # -- operations
    def lookup(self, key: Any) -> Any:
        if self._live(key):
            self.hits += 1
            self.data.move_to_end(key)
            return self.data[key][0]
        self.misses += 1
        return MISSING

    def set(self, key: Any, value: Any, ttl: float | timedelta | None = None) -> None:
        deadline = self._deadline(ttl)
        if self._live(key):
            self.data[key] = (value, deadline)  # keeps the original key object
            self.data.move_to_end(key)
            return
        if len(self.data) >= self.max_size:
            self.expire()
            if len(self.data) >= self.max_size:
                self.data.popitem(last=False)
                self.evictions += 1
        self.data[key] = (value, deadline)

    def remove(self, key: Any) -> Any:
        if self._live(key):
            return self.data.pop(key)[0]
        return MISSING

    def contains(self, key: Any) -> bool:
        return self._live(key)

    def expire(self) -> int:
        expired = [k for k in self.data if self._expired(k)]
        for k in expired:
            del self.data[k]
        self.expirations += len(expired)
        return len(expired)

    def clear(self) -> None:
        self.data.clear()

    def live_items(self) -> list[tuple[Any, Any]]:
        return [(k, v) for k, (v, _) in reversed(self.data.items()) if not self._expired(k)]

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return 0.0 if total == 0 else 100.0 * self.hits / total


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.counter = 0
        self.cache: Cache[Any, Any] | None = None

    @property
    def c(self) -> Cache[Any, Any]:
        assert self.cache is not None
        return self.cache

    def store_key(self, k: int) -> Any:
        return k

    def lookup_key(self, kv: tuple[int, bool]) -> Any:
        k, other_type = kv
        return float(k) if other_type else k

    def new_value(self, none: bool = False) -> Any:
        self.counter += 1
        return None if none else ("value", self.counter)

    @initialize(
        max_size=st.integers(min_value=1, max_value=5),
        ttl=st.one_of(st.none(), st.integers(min_value=1, max_value=10)),
    )
    def create(self, max_size: int, ttl: int | None) -> None:
        self.clock = ManualClock()
        self.cache = Cache(
            ttl=ttl, max_size=max_size, cleanup_interval=3600, clock=self.clock, policy="lru"
        )
        self.model = Model(max_size, None if ttl is None else float(ttl))

    def teardown(self) -> None:
        if self.cache is not None:
            self.cache.close()

    # -------------------------------------------------------------- stores
    @rule(key=KEYS, none=st.booleans(), ttl=PER_CALL_TTLS)
    def set(self, key: Any, none: bool, ttl: Any) -> None:
        key = self.store_key(key)
        value = self.new_value(none)
        if ttl is None:
            self.c.set(key, value)
        else:
            self.c.set(key, value, ttl=ttl)
        self.model.set(key, value, ttl)

    @rule(key=KEYS)
    def setitem(self, key: Any) -> None:
        key = self.store_key(key)
        value = self.new_value()
        self.c[key] = value
        self.model.set(key, value)

    @rule(keys=st.lists(KEYS, max_size=4), ttl=PER_CALL_TTLS, as_mapping=st.booleans())
    def set_many(self, keys: list[int], ttl: Any, as_mapping: bool) -> None:
        pairs = [(self.store_key(k), self.new_value()) for k in keys]
        if as_mapping:
            pairs = list(dict(pairs).items())
            self.c.set_many(dict(pairs), ttl=ttl)
        else:
            self.c.set_many(pairs, ttl=ttl)
        for k, v in pairs:
            self.model.set(k, v, ttl)

    @rule(key=KEYS, ttl=PER_CALL_TTLS)
    def get_or_set(self, key: Any, ttl: Any) -> None:
        key = self.store_key(key)
        value = self.new_value()
        calls: list[int] = []

        def factory() -> Any:
            calls.append(1)
            return value

        got = self.c.get_or_set(key, factory, ttl=ttl)
        expected = self.model.lookup(key)
        if expected is MISSING:
            assert calls == [1]
            assert got is value
            self.model.set(key, value, ttl)
        else:
            assert calls == []
            assert got is expected

    @rule(key=KEYS)
    def get_or_set_failing(self, key: Any) -> None:
        key = self.store_key(key)

        def factory() -> Any:
            raise LoadError

        expected = self.model.lookup(key)
        if expected is MISSING:
            with pytest.raises(LoadError):
                self.c.get_or_set(key, factory)
        else:
            assert self.c.get_or_set(key, factory) is expected

    # -------------------------------------------------------------- lookups
    @rule(key=LOOKUP_KEYS)
    def get(self, key: Any) -> None:
        key = self.lookup_key(key)
        assert self.c.get(key, MISSING) is self.model.lookup(key)

    @rule(key=LOOKUP_KEYS)
    def getitem(self, key: Any) -> None:
        key = self.lookup_key(key)
        expected = self.model.lookup(key)
        if expected is MISSING:
            with pytest.raises(KeyError):
                _ = self.c[key]
        else:
            assert self.c[key] is expected

    @rule(keys=st.lists(LOOKUP_KEYS, max_size=5))
    def get_many(self, keys: list[Any]) -> None:
        keys = [self.lookup_key(k) for k in keys]
        got = self.c.get_many(keys)
        expected = {}
        for k in keys:
            v = self.model.lookup(k)
            if v is not MISSING:
                expected[k] = v
        assert got == expected
        for k, v in expected.items():
            assert got[k] is v

    # -------------------------------------------------------------- removals
    @rule(key=LOOKUP_KEYS)
    def delete(self, key: Any) -> None:
        key = self.lookup_key(key)
        assert self.c.delete(key) is (self.model.remove(key) is not MISSING)

    @rule(key=LOOKUP_KEYS, with_default=st.booleans())
    def pop(self, key: Any, with_default: bool) -> None:
        key = self.lookup_key(key)
        expected = self.model.remove(key)
        if with_default:
            assert self.c.pop(key, MISSING) is expected
        elif expected is MISSING:
            with pytest.raises(KeyError):
                self.c.pop(key)
        else:
            assert self.c.pop(key) is expected

    @rule(key=LOOKUP_KEYS)
    def delitem(self, key: Any) -> None:
        key = self.lookup_key(key)
        expected = self.model.remove(key)
        if expected is MISSING:
            with pytest.raises(KeyError):
                del self.c[key]
        else:
            del self.c[key]

    @rule(key=LOOKUP_KEYS)
    def contains(self, key: Any) -> None:
        key = self.lookup_key(key)
        assert (key in self.c) is self.model.contains(key)

    # -------------------------------------------------------------- time and housekeeping
    @rule(seconds=STEPS, as_timedelta=st.booleans())
    def advance(self, seconds: float, as_timedelta: bool) -> None:
        self.clock.advance(timedelta(seconds=seconds) if as_timedelta else seconds)
        self.model.now += seconds
        assert self.clock.now() == self.model.now

    @rule()
    def expire(self) -> None:
        assert self.c.expire() == self.model.expire()
        assert len(self.c) == len(self.model.data)
        assert self.c.metrics().size == len(self.model.data)

    @rule()
    def clear(self) -> None:
        self.c.clear()
        self.model.clear()
        assert len(self.c) == 0

    @rule()
    def reset_metrics(self) -> None:
        self.c.reset_metrics()
        self.model.hits = self.model.misses = self.model.evictions = self.model.expirations = 0

    # -------------------------------------------------------------- invariants
    @invariant()
    def metrics_match_model(self) -> None:
        m = self.c.metrics()
        model = self.model
        assert (m.hits, m.misses, m.evictions, m.expirations) == (
            model.hits,
            model.misses,
            model.evictions,
            model.expirations,
        )
        assert m.max_size == model.max_size
        assert m.hit_rate == pytest.approx(model.hit_rate)

    @invariant()
    def views_match_model(self) -> None:
        expected = self.model.live_items()
        assert self.c.items() == expected
        assert self.c.keys() == [k for k, _ in expected]
        assert list(self.c) == [k for k, _ in expected]
        values = self.c.values()
        assert len(values) == len(expected)
        assert all(got is want for got, (_, want) in zip(values, expected, strict=True))

    @invariant()
    def never_more_than_max_size(self) -> None:
        assert len(self.c) <= self.model.max_size


CacheMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCacheAgainstModel = CacheMachine.TestCase


class CollidingKeysMachine(CacheMachine):
    """The same machine with user-defined keys that mostly collide in hash.

    Every call builds a fresh key object, so lookups go through ``==`` (not identity).
    Which key *object* is kept is specified by focused tests in test_semantics/test_ttl.
    """

    def store_key(self, k: int) -> Any:
        return CollidingKey(k)

    def lookup_key(self, kv: tuple[int, bool]) -> Any:
        return CollidingKey(kv[0])


CollidingKeysMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCacheWithCollidingKeysAgainstModel = CollidingKeysMachine.TestCase
