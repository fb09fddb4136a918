"""Typing: runtime generics, the stub under mypy --strict, and stubtest."""

from __future__ import annotations

import types
from pathlib import Path

from tests.support.typecheck import SLOW, mypy_strict, stubtest

from pgcache import Cache

GOOD_MODULE = """\
from datetime import timedelta
from typing import assert_type

from pgcache import Cache, CacheMetrics, ManualClock


def load(key: str) -> int:
    return len(key)


def use(cache: Cache[str, int]) -> int:
    cache.set("a", 1)
    cache.set("b", 2, ttl=timedelta(seconds=5))
    cache["c"] = 3
    assert_type(cache.get("a"), int | None)
    assert_type(cache.get("a", 0), int)
    assert_type(cache.get("a", "none"), int | str)
    assert_type(cache["a"], int)
    assert_type(cache.pop("a"), int)
    assert_type(cache.pop("a", None), int | None)
    assert_type(cache.delete("b"), bool)
    assert_type(cache.get_many(["a", "b"]), dict[str, int])
    cache.set_many({"x": 1})
    cache.set_many([("y", 2)], ttl=1.5)
    assert_type(cache.get_or_set("z", lambda: load("z")), int)
    assert_type(cache.keys(), list[str])
    assert_type(cache.values(), list[int])
    assert_type(cache.items(), list[tuple[str, int]])
    assert_type("a" in cache, bool)
    assert_type(len(cache), int)
    for key in cache:
        assert_type(key, str)
    assert_type(cache.expire(), int)
    metrics = cache.metrics()
    assert_type(metrics, CacheMetrics)
    assert_type(metrics.hits, int)
    assert_type(metrics.hit_rate, float)
    assert_type(metrics.to_dict(), dict[str, int | float | None])
    assert_type(cache.ttl, float | None)
    assert_type(cache.name, str | None)
    return metrics.hits


def main() -> None:
    clock = ManualClock()
    clock.advance(timedelta(seconds=1))
    cache: Cache[str, int] = Cache(ttl=60.0, max_size=100, clock=clock, name="features")
    with cache as c:
        assert_type(c, Cache[str, int])
        use(c)
    with Cache[str, int](max_size=10) as other:
        assert_type(other, Cache[str, int])
"""

BAD_MODULE = """\
from pgcache import Cache

cache: Cache[str, int] = Cache()
cache.set("a", "not an int")
value: str = cache.get_or_set("b", lambda: 1)
"""


def test_cache_subscript_returns_generic_alias_at_runtime() -> None:
    alias = Cache[str, int]
    assert isinstance(alias, types.GenericAlias)
    assert alias.__origin__ is Cache
    assert alias.__args__ == (str, int)


def test_subscripted_cache_can_be_instantiated() -> None:
    with Cache[str, int](max_size=3) as c:
        assert isinstance(c, Cache)
        c.set("a", 1)
        assert c.get("a") == 1


@SLOW
def test_mypy_strict_accepts_generic_use_and_reports_type_errors(tmp_path: Path) -> None:
    good = tmp_path / "good_use.py"
    good.write_text(GOOD_MODULE)
    bad = tmp_path / "bad_use.py"
    bad.write_text(BAD_MODULE)
    stdout, stderr, status = mypy_strict(tmp_path, good, bad)
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert status == 1, (stdout, stderr)
    assert not [line for line in lines if "good_use.py" in line], stdout
    bad_lines = [line for line in lines if "bad_use.py" in line]
    assert any("bad_use.py:4:" in line and "[arg-type]" in line for line in bad_lines), stdout
    assert any("bad_use.py:5:" in line for line in bad_lines), stdout
    assert len(bad_lines) >= 2, stdout


@SLOW
def test_stubtest_finds_the_stub_consistent_with_the_extension(tmp_path: Path) -> None:
    result = stubtest("pgcache._core", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().startswith("Success"), result.stdout
