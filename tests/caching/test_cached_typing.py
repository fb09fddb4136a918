"""Static typing of @cached and @cached_method under mypy --strict: signatures are kept."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.typecheck import SLOW, mypy_strict

TYPED_USE = """\
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, assert_type

from pgcache import Cache, cached
from pgcache.caching.cached import (
    AsyncCachedFunction,
    AsyncCachedMethod,
    CachedFunction,
    CachedMethod,
    CacheInfo,
    cached_method,
)

cache: Cache[object, object] = Cache()

@cached(cache)
def explain(query_hash: int, verbose: bool = False) -> str:
    return str(query_hash)

@cached(cache, typed=True, condition=lambda result: result > 0)
async def predict(query_hash: int) -> float:
    return 1.0

@cached
def bare(query_hash: int) -> bytes:
    return b""

@cached
async def bare_async(query_hash: int) -> bytes:
    return b""

@cached(ttl=60, max_size=None)
def unbounded(query_hash: int) -> str | None:
    return None

class Extractor:
    def __init__(self) -> None:
        self.features: Cache[Hashable, object] = Cache()

    @cached(cache)
    def extract(self, query_hash: int) -> list[int]:
        return [query_hash]

    @cached_method(lambda self: self.features, condition=lambda result: bool(result))
    def own(self, query_hash: int) -> list[int]:
        return [query_hash]

    @cached_method(lambda self: self.features)
    async def own_async(self, query_hash: int) -> dict[str, int]:
        return {}

async def main() -> None:
    extractor = Extractor()
    assert_type(explain(1, verbose=True), str)
    assert_type(await predict(1), float)
    assert_type(bare(1), bytes)
    assert_type(await bare_async(1), bytes)
    assert_type(unbounded(1), str | None)
    assert_type(extractor.extract(1), list[int])
    assert_type(explain.invalidate(1), bool)
    assert_type(extractor.extract.invalidate(1), bool)
    assert_type(explain.cache_info(), CacheInfo)
    assert_type(explain.cache_info().currsize, int | None)
    assert_type(explain.cache_clear(), None)
    wrapped: Callable[[int, bool], str] = explain.__wrapped__
    wrapped_async: Callable[[int], Coroutine[Any, Any, float]] = predict.__wrapped__
    function: CachedFunction[[int], bytes] = bare
    function_async: AsyncCachedFunction[[int], bytes] = bare_async
    method: CachedMethod[Extractor, [int], list[int]] = Extractor.own
    method_async: AsyncCachedMethod[Extractor, [int], dict[str, int]] = Extractor.own_async
    bound: CachedFunction[[int], list[int]] = extractor.own
    bound_wrapped: Callable[[int], list[int]] = extractor.own.__wrapped__
    assert_type(extractor.own(1), list[int])
    assert_type(Extractor.own(extractor, 1), list[int])
    assert_type(await extractor.own_async(1), dict[str, int])
    assert_type(extractor.own.cache_info(), CacheInfo)
    assert_type(extractor.own_async.cache_clear(), None)
"""

MISTYPED_USE = """\
from collections.abc import Hashable

from pgcache import Cache, cached
from pgcache.caching.cached import cached_method

cache: Cache[object, object] = Cache()

@cached(cache)
def explain(query_hash: int) -> str:
    return str(query_hash)

@cached(ttl=5)
async def predict(query_hash: int) -> float:
    return 1.0

class Extractor:
    def __init__(self) -> None:
        self.features: Cache[Hashable, object] = Cache()

    @cached(cache)
    def extract(self, query_hash: int) -> str:
        return str(query_hash)

    @cached_method(lambda self: self.features)
    def own(self, query_hash: int) -> str:
        return str(query_hash)

explain("not an int")  # flagged
Extractor().extract("not an int")  # flagged
explain.invalidate("not an int")  # flagged
predict("not an int")  # flagged
Extractor().own("not an int")  # flagged
Extractor.own(Extractor(), "not an int")  # flagged
cached(cache, max_size=5)  # flagged: the cache given has its own max_size
Extractor.own.cache_info()  # flagged: no cache on the class, one per instance
"""


@SLOW
def test_mypy_strict_keeps_the_decorated_signatures_and_flags_misuse(tmp_path: Path) -> None:
    good = tmp_path / "typed_use.py"
    good.write_text(TYPED_USE)
    bad = tmp_path / "mistyped_use.py"
    bad.write_text(MISTYPED_USE)
    stdout, stderr, _ = mypy_strict(tmp_path, good, bad)
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert not [line for line in lines if line.startswith(str(good))], stdout + stderr
    flagged = {int(m.group(1)) for m in re.finditer(r"mistyped_use.py:(\d+): error", stdout)}
    expected = {n for n, line in enumerate(MISTYPED_USE.splitlines(), 1) if "# flagged" in line}
    assert flagged == expected, stdout + stderr
