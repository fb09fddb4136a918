"""``@cached(cache)``: memoize any sync or async function (or method) in a :class:`pgcache.Cache`.

A hit returns the stored value without calling the function. A miss calls it once per key,
however many callers miss at once: threads through :meth:`pgcache.Cache.get_or_set`, asyncio
tasks through :class:`pgcache.caching.singleflight.AsyncSingleFlight` (one call per key and event
loop). Exceptions propagate to every waiting caller and are never stored.

The default key (:func:`make_key`) is built from the arguments: unhashable lists, dicts, sets
and bytearrays are converted to a canonical hashable form (dicts and sets regardless of order;
a list stays apart from a tuple with the same items), keyword arguments regardless of their
order, and ``typed=True`` keeps ``f(1)`` and ``f(1.0)`` apart as :func:`functools.lru_cache`
does. Like ``lru_cache``, it does not bind arguments to the signature: ``f(1)`` and ``f(x=1)``
are two keys (binding would cost microseconds on every hit); pass ``key=`` to unify them.
Each decorated function gets its own key space, so several functions may share one cache.

What it deliberately does not do: it does not cache exceptions or ``await`` results of sync
functions, does not copy values (callers share the stored object, as with ``lru_cache``), and
does not deduplicate async calls across event loops or threads (each loop calls at most once
per key at a time).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Hashable, Mapping
from datetime import timedelta
from typing import Any, Concatenate, Final, Generic, ParamSpec, Self, TypeVar, cast, overload

from pgcache._core import Cache
from pgcache._validate import check_seconds
from pgcache.caching.singleflight import AsyncSingleFlight

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
T = TypeVar("T")


class _Marker:
    """A private tag inside keys; compares by identity, so no user value can equal it."""

    __slots__ = ("_label",)

    def __init__(self, label: str) -> None:
        self._label = label

    def __repr__(self) -> str:
        return self._label


_LIST: Final = _Marker("<list>")
_DICT: Final = _Marker("<dict>")
_KWARGS: Final = _Marker("<kwargs>")
_MISSING: Final = _Marker("<missing>")

# Immutable types whose values are their own canonical form (their hash never fails).
_SCALARS: Final = frozenset({int, float, str, bytes, bool, complex, type(None)})


class _UnhashableArgumentError(TypeError):
    """Raised inside :func:`_freeze`; :func:`make_key` names the argument and re-raises."""

    def __init__(self, value: object) -> None:
        super().__init__(value)
        self.value = value


def _freeze(value: object, typed: bool) -> Hashable:
    """The canonical hashable form of one argument."""
    kind = type(value)
    if kind in _SCALARS:
        return (kind, value) if typed else value
    if isinstance(value, tuple):
        return tuple([_freeze(item, typed) for item in value])
    if isinstance(value, list):
        return (_LIST, tuple([_freeze(item, typed) for item in value]))
    if isinstance(value, dict):
        return _freeze_mapping(value, typed)
    if isinstance(value, set | frozenset):
        # A set equals the frozenset with the same items, so both share one key.
        return frozenset([_freeze(item, typed) for item in value])
    if isinstance(value, bytearray):
        return _freeze(bytes(value), typed)
    try:
        hash(value)
    except TypeError:
        # Checked only now: an ABC isinstance check is slow, and most arguments are hashable.
        if isinstance(value, Mapping):
            return _freeze_mapping(value, typed)
        raise _UnhashableArgumentError(value) from None
    return (kind, value) if typed else value


def _freeze_mapping(value: Mapping[Any, Any], typed: bool) -> Hashable:
    return (_DICT, frozenset([(_freeze(k, typed), _freeze(v, typed)) for k, v in value.items()]))


def make_key(
    args: tuple[object, ...], kwargs: Mapping[str, object], typed: bool = False
) -> Hashable:
    """The default cache key of one call: a tuple built from its arguments.

    Lists, tuples, dicts, sets and bytearrays (also nested) become hashable; dicts, sets and
    keyword arguments are order-insensitive. ``typed=True`` includes every value's type, so
    ``1``, ``1.0`` and ``True`` give three keys instead of one. An argument that stays
    unhashable raises ``TypeError`` naming it.
    """
    key: tuple[object, ...] = args
    culprit: int | str = 0  # the argument being converted, named if it fails
    try:
        for arg in args:
            if typed or type(arg) not in _SCALARS:
                frozen: list[Hashable] = []
                for item in args:
                    culprit = len(frozen)
                    frozen.append(_freeze(item, typed))
                key = tuple(frozen)
                break
        if kwargs:
            pairs: list[tuple[str, Hashable]] = []
            for culprit, value in kwargs.items():
                pairs.append((culprit, _freeze(value, typed)))
            key = (*key, _KWARGS, frozenset(pairs))
    except _UnhashableArgumentError as error:
        where = (
            f"positional argument {culprit}"
            if isinstance(culprit, int)
            else f"keyword argument {culprit!r}"
        )
        raise TypeError(
            f"cannot build a cache key: {where} is {error.value!r} of unhashable type "
            f"{type(error.value).__name__}; make it hashable or pass key= to cached()"
        ) from None
    return key


class _FunctionTag:
    """Leads every default key of one decorated function: keeps functions sharing a cache apart."""

    __slots__ = ("_name",)

    def __init__(self, func: Callable[..., object]) -> None:
        self._name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)}"

    def __repr__(self) -> str:
        return f"<{self._name}>"


class _CachedBase(Generic[P, R]):
    """What the sync and async wrappers share: the cache, the key, invalidation."""

    cache: Cache[Hashable, Any]
    """The cache the results are stored in."""

    def __init__(
        self,
        func: Callable[P, Any],
        cache: Cache[Hashable, Any],
        key: Callable[..., Hashable] | None,
        ttl: float | None,
        typed: bool,
    ) -> None:
        self.cache = cache
        self._func: Callable[..., Any] = func
        self._key = key
        self._ttl = ttl
        self._typed = typed
        self._tag = _FunctionTag(func)
        # The instance of a bound method, passed first to the function and to the key.
        self._bound_to: tuple[object, ...] = ()
        functools.update_wrapper(cast(Any, self), func)

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> Hashable:
        """The key a call with these arguments is stored under."""
        return self._key_of((*self._bound_to, *args), kwargs)

    def _key_of(self, args: tuple[object, ...], kwargs: dict[str, object]) -> Hashable:
        # `args` already starts with the instance of a bound method.
        if self._key is not None:
            return self._key(*args, **kwargs)
        return (self._tag, make_key(args, kwargs, self._typed))

    def _bind(self, instance: object) -> Any:
        # A shallow copy sharing cache, key space and (async) flights; cheaper than a new
        # wrapper, since this runs on every attribute access of a cached method.
        bound = object.__new__(type(self))
        bound.__dict__.update(self.__dict__)
        bound._bound_to = (instance,)
        return bound

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Forget the stored result of a call with these arguments; whether there was one."""
        return self.cache.delete(self.cache_key(*args, **kwargs))

    def __repr__(self) -> str:
        return f"<cached {self._tag._name} in {self.cache!r}>"


class CachedFunction(_CachedBase[P, R]):
    """A sync function whose results are cached: what ``@cached(cache)`` makes of a ``def``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        full_args = (*self._bound_to, *args) if self._bound_to else args
        func = self._func
        result: R = self.cache.get_or_set(
            self._key_of(full_args, kwargs), lambda: func(*full_args, **kwargs), self._ttl
        )
        return result

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self: CachedFunction[Concatenate[T, P2], R], instance: T, owner: type[Any] | None = None
    ) -> CachedFunction[P2, R]: ...
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return self._bind(instance)


class AsyncCachedFunction(_CachedBase[P, R]):
    """An async function whose results are cached: what ``@cached(cache)`` makes of an
    ``async def``. Awaiting a call gives the function's result; ``R`` is that result's type."""

    def __init__(
        self,
        func: Callable[P, Coroutine[Any, Any, R]],
        cache: Cache[Hashable, Any],
        key: Callable[..., Hashable] | None,
        ttl: float | None,
        typed: bool,
    ) -> None:
        super().__init__(func, cache, key, ttl, typed)
        self._async_func: Callable[..., Coroutine[Any, Any, R]] = func
        self._flight: AsyncSingleFlight[Hashable, R] = AsyncSingleFlight()

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        full_args = (*self._bound_to, *args) if self._bound_to else args
        key = self._key_of(full_args, kwargs)
        found = self.cache.get(key, _MISSING)
        if found is not _MISSING:
            hit: R = found
            return hit
        return await self._flight.run(key, lambda: self._load(key, full_args, kwargs))

    async def _load(self, key: Hashable, args: tuple[object, ...], kwargs: dict[str, object]) -> R:
        value = await self._async_func(*args, **kwargs)
        # Stored before the flight ends, so a caller arriving later hits instead of calling.
        self.cache.set(key, value, self._ttl)
        return value

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self: AsyncCachedFunction[Concatenate[T, P2], R],
        instance: T,
        owner: type[Any] | None = None,
    ) -> AsyncCachedFunction[P2, R]: ...
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return self._bind(instance)


class _Decorator:
    """What ``cached(...)`` returns: turns a function into a cached one."""

    __slots__ = ("_cache", "_key", "_ttl", "_typed")

    def __init__(
        self,
        cache: Cache[Hashable, Any],
        key: Callable[..., Hashable] | None,
        ttl: float | None,
        typed: bool,
    ) -> None:
        self._cache = cache
        self._key = key
        self._ttl = ttl
        self._typed = typed

    @overload
    def __call__(  # type: ignore[overload-overlap]  # an async def also matches Callable[P, R]
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncCachedFunction[P, R]: ...
    @overload
    def __call__(self, func: Callable[P, R]) -> CachedFunction[P, R]: ...
    def __call__(self, func: Callable[P, Any]) -> _CachedBase[P, Any]:
        if not callable(func):
            raise TypeError(f"cached() decorates a function, got {func!r}")
        if inspect.iscoroutinefunction(func):
            return AsyncCachedFunction(func, self._cache, self._key, self._ttl, self._typed)
        return CachedFunction(func, self._cache, self._key, self._ttl, self._typed)


def cached(
    cache: Cache[Any, Any],
    *,
    key: Callable[..., Hashable] | None = None,
    ttl: float | timedelta | None = None,
    typed: bool = False,
) -> _Decorator:
    """Memoize a sync or async function (or method) in ``cache``.

    >>> from pgcache import Cache
    >>> plans: Cache[object, str] = Cache(ttl=1800)
    >>> @cached(plans)
    ... def explain(query_hash: int, analyze: bool = False) -> str:
    ...     return f"plan of {query_hash}"
    >>> explain(-42), explain(-42), plans.metrics().hits
    ('plan of -42', 'plan of -42', 1)

    ``key(*args, **kwargs)``, when given, builds the key instead of :func:`make_key` (for
    example to store under a :class:`pgcache.CacheManager` key scheme); it receives ``self``
    too for methods. ``ttl`` (seconds or timedelta) overrides the cache's TTL for the stored
    results. ``typed=True`` keeps arguments of different types apart (``f(1)``, ``f(1.0)``).

    The result exposes ``.cache``, ``.cache_key(*args, **kwargs)`` and
    ``.invalidate(*args, **kwargs) -> bool`` (also on methods, bound to their instance). On a
    method the instance is part of the default key and is kept alive by the cache while its
    results are stored (as with ``functools.lru_cache``). Apply ``@staticmethod`` or
    ``@classmethod`` above ``@cached``.
    """
    if not isinstance(cache, Cache):
        raise TypeError(f"cache must be a pgcache.Cache, got {cache!r}")
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable building the cache key or None, got {key!r}")
    if not isinstance(typed, bool):
        raise TypeError(f"typed must be a bool, got {typed!r}")
    seconds = None if ttl is None else check_seconds("ttl", ttl)
    return _Decorator(cache, key, seconds, typed)
