"""Type stubs for the Rust extension ``pgcache._core`` (kept honest by mypy.stubtest)."""

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from types import GenericAlias, TracebackType
from typing import Any, Generic, Literal, NoReturn, Self, TypeVar, final, overload

from typing_extensions import disjoint_base

_K = TypeVar("_K")
_V = TypeVar("_V")
_D = TypeVar("_D")

__all__ = [
    "Cache",
    "CacheClosedError",
    "CacheMetrics",
    "CachedCall",
    "CallCounter",
    "ManualClock",
    "PgCacheError",
    "RateLimitDecision",
    "RateLimiter",
    "__version__",
    "skip_getattr_hook",
]

__version__: str

def skip_getattr_hook(cls: type) -> None:
    """Makes ``cls``'s attribute reads ``object.__getattribute__``'s alone, without the
    ``__getattr__`` it inherits (so CPython specialises them); for a class whose
    ``__getattr__`` would only raise the same ``AttributeError``. ``TypeError`` for a static
    type or a class with a ``__getattribute__`` of its own."""

class PgCacheError(Exception):
    """Base class of every error pgcache raises on its own."""

class CacheClosedError(PgCacheError):
    """The cache was used after ``close()``."""

@final
class ManualClock:
    """A clock that moves only when told to: for testing TTLs without sleeping."""

    def __new__(cls, start: float | timedelta = 0.0) -> ManualClock: ...
    def now(self) -> float: ...
    def advance(self, seconds: float | timedelta) -> None: ...
    def __reduce__(self) -> tuple[type[ManualClock], tuple[float]]:
        """Pickled or copied: an independent clock at the same reading."""

@final
class RateLimitDecision:
    """What one request was told by :meth:`RateLimiter.decide`."""

    @property
    def allowed(self) -> bool:
        """Whether the request may go ahead (it has been counted)."""
    @property
    def wait(self) -> float:
        """Seconds until the same request would be allowed (0.0 when allowed)."""
    @property
    def remaining(self) -> int:
        """Requests the key may still make at once, after this one."""
    @property
    def reset(self) -> float:
        """Seconds until the key's bucket is full again."""

@final
class RateLimiter:
    """A token-bucket rate limit per ``str`` key (GCRA): ``rate`` requests per second, at most
    ``burst`` at once (default one second's worth); at most ``max_keys`` keys remembered; a
    ``ManualClock`` for tests. Thread-safe."""

    def __new__(
        cls,
        rate: float,
        burst: int | None = None,
        *,
        max_keys: int = 100000,
        clock: ManualClock | None = None,
    ) -> RateLimiter: ...
    @property
    def rate(self) -> float: ...
    @property
    def burst(self) -> int: ...
    @property
    def max_keys(self) -> int: ...
    def allow(self, key: str) -> float:
        """Counts the request if allowed; the seconds to wait before it would be (0.0: now)."""
    def decide(self, key: str) -> RateLimitDecision:
        """:meth:`allow`, with what the answer's headers need."""
    def clear(self) -> None:
        """Forgets every key: every bucket is full again."""
    def stats(self) -> dict[str, int]:
        """``allowed``, ``limited``, ``evicted`` (keys forgotten for room) and ``keys`` (now)."""
    def __len__(self) -> int: ...

@final
class CacheMetrics:
    """A consistent-enough snapshot of one cache's counters (read without the cache lock)."""

    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def evictions(self) -> int:
        """Entries given up to make room (LRU's oldest; W-TinyLFU's main-region victims)."""
    @property
    def rejections(self) -> int:
        """W-TinyLFU only: new entries turned away as less useful than the main region's victim."""
    @property
    def expirations(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def max_size(self) -> int | None:
        """The entry limit; None for an unbounded cache."""
    @property
    def hit_rate(self) -> float: ...
    def to_dict(self) -> dict[str, int | float | None]: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Cache(Generic[_K, _V]):
    """A thread-safe TTL cache with a bounded size. See the README for the semantics.

    A full cache makes room by its ``policy``: ``"tinylfu"`` (the default, adaptive
    W-TinyLFU: the entry predicted least useful from recency and frequency leaves) or
    ``"lru"`` (the least recently used entry leaves). A new entry is always stored and
    readable at once. ``max_size=None`` means unbounded (as ``functools.lru_cache(maxsize=None)``):
    nothing is evicted; a new key beyond the 4,294,966,972 entries its index holds
    raises ``OverflowError``. A cache can be weakly referenced; ``pickle`` and
    ``copy`` raise ``TypeError`` (copy the entries instead:
    ``new.set_many(cache.items())``).
    """

    def __new__(
        cls,
        ttl: float | timedelta | None = None,
        max_size: int | None = 10000,
        cleanup_interval: float | timedelta = 1.0,
        clock: ManualClock | None = None,
        name: str | None = None,
        policy: Literal["tinylfu", "lru"] = "tinylfu",
    ) -> Cache[_K, _V]: ...
    def __class_getitem__(cls, item: Any) -> GenericAlias: ...
    @property
    def ttl(self) -> float | None: ...
    @property
    def max_size(self) -> int | None:
        """The entry limit; None for an unbounded cache."""
    @property
    def name(self) -> str | None: ...
    @property
    def policy(self) -> Literal["tinylfu", "lru"]: ...
    @property
    def cleanup_interval(self) -> float: ...
    @property
    def closed(self) -> bool: ...
    @overload
    def get(self, key: _K, default: None = None, /) -> _V | None: ...
    @overload
    def get(self, key: _K, default: _V | _D, /) -> _V | _D: ...
    def set(self, key: _K, value: _V, ttl: float | timedelta | None = None) -> None: ...
    def delete(self, key: _K) -> bool: ...
    @overload
    def pop(self, key: _K, /) -> _V: ...
    @overload
    def pop(self, key: _K, default: _V | _D, /) -> _V | _D: ...
    def get_many(self, keys: Iterable[_K]) -> dict[_K, _V]: ...
    def set_many(
        self,
        items: Mapping[_K, _V] | Iterable[tuple[_K, _V]],
        ttl: float | timedelta | None = None,
    ) -> None: ...
    def get_or_set(
        self, key: _K, factory: Callable[[], _V], ttl: float | timedelta | None = None
    ) -> _V: ...
    def keys(self) -> list[_K]:
        """Live keys: most recently used first under ``"lru"``; under ``"tinylfu"`` the
        window's (newest first), then the main region's protected and probation segments."""
    def values(self) -> list[_V]: ...
    def items(self) -> list[tuple[_K, _V]]: ...
    def expire(self) -> int: ...
    def clear(self) -> None: ...
    def metrics(self) -> CacheMetrics: ...
    def reset_metrics(self) -> None: ...
    def close(self) -> None: ...
    def __reduce__(self) -> NoReturn:
        """Always raises TypeError: a cache holds live objects, a lock and a thread registration."""
    def __copy__(self) -> NoReturn: ...
    def __deepcopy__(self, memo: Any, /) -> NoReturn: ...
    def __enter__(self) -> Cache[_K, _V]: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> None: ...
    def __getitem__(self, key: _K, /) -> _V: ...
    def __setitem__(self, key: _K, value: _V, /) -> None: ...
    def __delitem__(self, key: _K, /) -> None: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[_K]: ...

@final
class CallCounter:
    """How many times a cached function was called (bumped by ``CachedCall.__call__``)."""

    def __new__(cls) -> CallCounter: ...
    @property
    def value(self) -> int:
        """The calls counted so far."""

@disjoint_base
class CachedCall:
    """The native base of ``pgcache.CachedFunction`` and ``AsyncCachedFunction``: builds the
    default key of calls with plain arguments and answers hits without running Python code;
    calls back into its subclass (``_call``, ``_load``, ``_miss``) for everything else."""

    def __new__(cls, *_args: object, **_kwargs: object) -> Self: ...
    def _configure(
        self,
        *,
        cache: Cache[Any, Any] | None,
        tag: object,
        ttl: float | None,
        typed: bool,
        native_keys: bool,
        calls: CallCounter,
        unstored: type[BaseException],
        ready: Callable[[Any], Any] | None,
        kwargs_marker: object,
    ) -> None:
        """Sets what calls need, once."""
    @property
    def cache(self) -> Cache[Any, Any]:
        """The cache the results are stored in."""
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
