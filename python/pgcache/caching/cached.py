"""``@cached`` and ``@cached_method``: memoize sync and async functions and methods in a
:class:`pgcache.Cache`, with the conventions of :func:`functools.lru_cache` and cachetools.

A miss calls the function once per key however many callers miss at once: threads through
:meth:`pgcache.Cache.get_or_set`, asyncio tasks through
:class:`pgcache.caching.singleflight.AsyncSingleFlight` (one call per key, cache and event loop).
Errors reach every waiting caller and are never stored; nor is a result ``condition`` rejects,
which still reaches every waiting caller (sync: carried out of ``get_or_set`` by ``_Unstored``).

A cached function is a :class:`pgcache._core.CachedCall`, which CPython calls natively (vectorcall,
enabled per class when ``_configure`` first runs, unless the class defines a ``__call__`` of its
own). It builds the default key of calls with plain arguments (exact scalars and tuples of them,
positional or by keyword) exactly as :func:`make_key` does and answers a hit without running
Python code (an async hit as a finished coroutine); it calls back here for a miss (``_load``,
``_miss``) and for every other call (``_call``: other argument types, ``key=``, a method whose
instance is in the key).

Calls are counted natively (a :class:`pgcache._core.CallCounter`), loads (calls that ran the
function) by an ``itertools.count``; hits are the difference. A cached ``async def`` passes
:func:`inspect.iscoroutinefunction`: on 3.12+ through :func:`inspect.markcoroutinefunction`; on
3.11, whose check reads the code flags of function-like objects only, the wrapper carries the
code of a coroutine function and the attributes of a function that check reads.

What it deliberately does not do: it does not cache exceptions or ``await`` results of sync
functions, does not copy values (callers share the stored object, as with ``lru_cache``), does
not bind arguments to the signature (``f(1)`` and ``f(x=1)`` are two keys, as with
``lru_cache``), and does not deduplicate async calls across event loops or threads.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
import weakref
from collections.abc import Callable, Coroutine, Hashable
from datetime import timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Final,
    Generic,
    NamedTuple,
    ParamSpec,
    Self,
    TypeVar,
    cast,
    overload,
)

from pgcache._core import Cache, CachedCall
from pgcache._validate import check_optional_seconds
from pgcache.caching.callcounts import (
    CacheInfo as CacheInfo,  # re-exported: its first home
    CallCounts,
)
from pgcache.caching.callkeys import KWARGS, FunctionTag, make_key
from pgcache.caching.singleflight import AsyncSingleFlight

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T")
B = TypeVar("B", bound="_CachedBase[Any, Any]")


class _Absent:
    """No value: what a lookup returns on a miss, the default of ``max_size``."""


_ABSENT: Final = _Absent()


class _Unstored(Exception):  # noqa: N818  # a carrier, not an error anyone sees
    """Carries a result (``args[0]``) that ``condition`` rejected out of ``Cache.get_or_set``:
    nothing is stored, and every thread waiting for the same key receives it too."""


async def _ready(value: T) -> T:
    """An async hit: the native ``__call__`` returns this finished coroutine (awaiting a
    coroutine hands back its value without raising ``StopIteration``)."""
    return value


_CacheOf = Callable[[Any], Cache[Hashable, Any]]  # the cache of an instance, from the instance


class _Options(NamedTuple):
    key: Callable[..., Hashable] | None
    ttl: float | None
    typed: bool
    condition: Callable[[Any], bool] | None


class _Wrapper:
    """What every cached callable holds: the function, how keys are built, what is stored."""

    __name__: str
    __qualname__: str  # both copied from the function, as functools.wraps does

    def __init__(self, func: Callable[..., Any], options: _Options) -> None:
        # As functools.update_wrapper (whose __wrapped__ would hit our property), state after.
        for name in functools.WRAPPER_ASSIGNMENTS:
            if hasattr(func, name):
                setattr(self, name, getattr(func, name))
        self.__dict__.update(getattr(func, "__dict__", {}))
        if not isinstance(getattr(self, "__name__", None), str):
            self.__name__ = type(func).__name__
        self._func: Callable[..., Any] = func
        self._key, self._ttl, self._typed, self._condition = options
        self._tag = FunctionTag(func)
        self._owns_cache = False
        self._counts = CallCounts()
        self._calls = self._counts.calls  # handed to the native __call__
        self._bound_to: tuple[object, ...] = ()  # the instance of a bound method: first argument
        self._key_bound: tuple[object, ...] = ()  # ... and first in the default key, or not
        self._plain_key = self._key is None  # the key is (tag, make_key(args, kwargs)): native
        if isinstance(self, _Coroutine):
            self._flight: AsyncSingleFlight[Hashable, Any] = AsyncSingleFlight()
            if sys.version_info >= (3, 12):
                inspect.markcoroutinefunction(self)

    def _key_of(self, args: tuple[object, ...], kwargs: dict[str, object]) -> Hashable:
        if self._key is not None:
            return self._key(*self._bound_to, *args, **kwargs)
        if self._key_bound:
            args = (*self._key_bound, *args)
        return (self._tag, make_key(args, kwargs, self._typed))

    def _load(self, args: tuple[object, ...], kwargs: dict[str, object]) -> Any:
        next(self._counts.loads)
        value = self._func(*self._bound_to, *args, **kwargs)
        if self._condition is not None and not self._condition(value):
            raise _Unstored(value)
        return value

    def _unwrapped(self) -> Any:
        if self._bound_to:
            return types.MethodType(self._func, self._bound_to[0])
        return self._func

    def _copy(self, cls: type[B], changes: dict[str, object], cache: Cache[Hashable, Any]) -> B:
        # Shares key space, counts and flights; runs on every attribute access of a method.
        bound = cls.__new__(cls)
        state = self.__dict__.copy()  # a clone of the table, no re-insertion
        state.update(changes)
        bound.__dict__ = state
        bound._arm(cache)
        return bound


class _CachedBase(CachedCall, _Wrapper, Generic[P, R]):
    """What the sync and async cached functions share: keys, invalidation, info, clearing."""

    def __init__(
        self, func: Callable[..., Any], options: _Options, cache: Cache[Hashable, Any]
    ) -> None:
        _Wrapper.__init__(self, func, options)
        self._arm(cache)

    def _arm(self, cache: Cache[Hashable, Any]) -> None:
        """Hands the native __call__ what it needs (once per object)."""
        self._configure(
            cache=cache,
            tag=self._tag,
            ttl=self._ttl,
            typed=self._typed,
            native_keys=self._plain_key,
            calls=self._calls,
            unstored=_Unstored,
            ready=_ready if isinstance(self, _Coroutine) else None,
            kwargs_marker=KWARGS,
        )

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> Hashable:
        """The key a call with these arguments is stored under."""
        return self._key_of(args, kwargs)

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Forget the stored result of a call with these arguments; whether there was one."""
        return self.cache.delete(self._key_of(args, kwargs))

    def cache_info(self) -> CacheInfo:
        """Hits, misses, the cache's limit and the number of this function's stored results."""
        hits, misses = self._counts.hits_and_misses()
        if self._owns_cache:
            size: int | None = len(self.cache)
        elif self._key is not None:
            size = None
        else:
            size = len(self._own_keys())
        return CacheInfo(hits, misses, self.cache.max_size, size)

    def cache_clear(self) -> None:
        """Remove this function's stored results (only them) and reset its hits and misses."""
        if self._owns_cache:
            self.cache.clear()
        elif self._key is not None:
            raise TypeError(
                f"cache_clear() cannot tell the entries of {self._tag.name} from others in "
                "the cache it shares: its keys come from key=; clear that cache or invalidate "
                "calls one by one"
            )
        else:
            for key in self._own_keys():
                self.cache.delete(key)
        self._counts.reset()

    def _own_keys(self) -> list[Hashable]:
        tag = self._tag
        return [k for k in self.cache if type(k) is tuple and len(k) == 2 and k[0] is tag]

    def _bind(self, instance: object) -> Any:
        bound_to = (instance,)
        changes = {"_bound_to": bound_to, "_key_bound": bound_to, "_plain_key": False}
        return self._copy(type(self), changes, self.cache)

    def __repr__(self) -> str:
        return f"<cached {self._tag.name} in {self.cache!r}>"


class CachedFunction(_CachedBase[P, R]):
    """A sync function whose results are cached: what ``@cached`` makes of a ``def``."""

    @property
    def __wrapped__(self) -> Callable[P, R]:
        """The function called on a miss (bound to the instance on a bound method)."""
        return cast("Callable[P, R]", self._unwrapped())

    if TYPE_CHECKING:  # the native CachedCall.__call__, typed

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def _call(self, args: tuple[object, ...], kwargs: dict[str, object]) -> R:
        key = self._key_of(args, kwargs)
        try:
            result: R = self.cache.get_or_set(key, lambda: self._load(args, kwargs), self._ttl)
        except _Unstored as unstored:
            return cast(R, unstored.args[0])
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


class _Coroutine:
    """Makes a callable object that returns coroutines pass :func:`inspect.iscoroutinefunction`
    (see the module docstring)."""

    __code__: types.CodeType = _ready.__code__  # the code of a coroutine function
    __defaults__ = None
    __kwdefaults__ = None


class AsyncCachedFunction(_CachedBase[P, R], _Coroutine):
    """An async function whose results are cached: what ``@cached`` makes of an ``async def``.
    Awaiting a call gives the function's result; ``R`` is that result's type."""

    @property
    def __wrapped__(self) -> Callable[P, Coroutine[Any, Any, R]]:
        """The function called on a miss (bound to the instance on a bound method)."""
        return cast("Callable[P, Coroutine[Any, Any, R]]", self._unwrapped())

    if TYPE_CHECKING:  # the native CachedCall.__call__, typed

        async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    async def _call(self, args: tuple[object, ...], kwargs: dict[str, object]) -> R:
        key = self._key_of(args, kwargs)
        found = self.cache.get(key, _ABSENT)
        if found is not _ABSENT:
            hit: R = found
            return hit
        return await self._miss(key, args, kwargs)

    def _miss(
        self, key: Hashable, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> Coroutine[Any, Any, R]:
        cache = self.cache
        # Keyed by the cache too: instances of a cached_method have caches of their own.
        return self._flight.run((cache, key), lambda: self._load_async(cache, key, args, kwargs))

    async def _load_async(
        self,
        cache: Cache[Hashable, Any],
        key: Hashable,
        args: tuple[object, ...],
        kwargs: dict[str, object],
    ) -> R:
        if key in cache:  # stored since the call looked (its coroutine was awaited later)
            found = cache.get(key, _ABSENT)
            if found is not _ABSENT:
                stored: R = found
                return stored
        next(self._counts.loads)
        value: R = await self._func(*self._bound_to, *args, **kwargs)
        if self._condition is None or self._condition(value):
            # Stored before the flight ends, so a caller arriving later hits instead of calling.
            cache.set(key, value, self._ttl)
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


class _PerInstance(_Wrapper):
    """What the sync and async cached methods share: a cache taken from each instance."""

    def __init__(self, func: Callable[..., Any], options: _Options, cache_of: _CacheOf) -> None:
        super().__init__(func, options)
        self._cache_of = cache_of
        self._counts_by_cache: dict[int, CallCounts] = {}

    def _bound_as(self, cls: type[B], instance: object) -> B:
        cache = self._cache_of(instance)
        if not isinstance(cache, Cache):
            raise TypeError(
                f"the cache of {self._tag.name} for {instance!r} must be a pgcache.Cache, "
                f"got {cache!r}"
            )
        counts = self._counts_by_cache.get(id(cache))
        if counts is None:
            counts = self._count_in(cache)
        changes = {"_bound_to": (instance,), "_counts": counts, "_calls": counts.calls}
        return self._copy(cls, changes, cache)

    def _count_in(self, cache: Cache[Hashable, Any]) -> CallCounts:
        mine = CallCounts()
        counts = self._counts_by_cache.setdefault(id(cache), mine)
        if counts is mine:  # forget the counts with the cache (before its id can be reused)
            weakref.finalize(cache, self._counts_by_cache.pop, id(cache), None).atexit = False
        return counts

    def __repr__(self) -> str:
        return f"<cached method {self._tag.name}, a cache per instance>"


class CachedMethod(_PerInstance, Generic[S, P, R]):
    """A sync method cached per instance: what ``@cached_method`` makes of a ``def``. Bound to
    an instance it is a :class:`CachedFunction` whose ``cache`` is the instance's cache."""

    @property
    def __wrapped__(self) -> Callable[Concatenate[S, P], R]:
        return cast("Callable[Concatenate[S, P], R]", self._func)

    def __call__(self, instance: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        bound: CachedFunction[P, R] = self._bound_as(CachedFunction, instance)
        return bound(*args, **kwargs)

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, instance: S, owner: type[Any] | None = None) -> CachedFunction[P, R]: ...
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return self._bound_as(CachedFunction, instance)


class AsyncCachedMethod(_PerInstance, _Coroutine, Generic[S, P, R]):
    """An async method cached per instance: what ``@cached_method`` makes of an ``async def``.
    Bound to an instance it is an :class:`AsyncCachedFunction` on the instance's cache."""

    @property
    def __wrapped__(self) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
        return cast("Callable[Concatenate[S, P], Coroutine[Any, Any, R]]", self._func)

    async def __call__(self, instance: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        bound: AsyncCachedFunction[P, R] = self._bound_as(AsyncCachedFunction, instance)
        return await bound(*args, **kwargs)

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, instance: S, owner: type[Any] | None = None) -> AsyncCachedFunction[P, R]: ...
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return self._bound_as(AsyncCachedFunction, instance)


_DEFAULT_MAX_SIZE: Final = 10_000


def _options(
    key: object, ttl: float | timedelta | None, typed: object, condition: object
) -> _Options:
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable building the cache key or None, got {key!r}")
    if not isinstance(typed, bool):
        raise TypeError(f"typed must be a bool, got {typed!r}")
    if condition is not None and not callable(condition):
        raise TypeError(
            "condition must be a callable taking a result and returning whether to store it, "
            f"or None, got {condition!r}"
        )
    return _Options(key, check_optional_seconds("ttl", ttl), typed, condition)


class _Decorator:
    """What ``cached(...)`` returns: turns a function into a cached one."""

    def __init__(
        self, cache: Cache[Hashable, Any] | None, max_size: int | None, options: _Options
    ) -> None:
        self.cache = cache  # None: a new cache for each function decorated
        self.max_size = max_size
        self.options = options

    @overload
    def __call__(  # type: ignore[overload-overlap]  # an async def also matches Callable[P, R]
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncCachedFunction[P, R]: ...
    @overload
    def __call__(self, func: Callable[P, R]) -> CachedFunction[P, R]: ...
    def __call__(self, func: Callable[P, Any]) -> _CachedBase[P, Any]:
        if not callable(func):
            raise TypeError(f"cached() decorates a function, got {func!r}")
        options, cache = self.options, self.cache
        if cache is None:  # its own cache applies the TTL to every entry itself
            name = FunctionTag(func).name
            cache = Cache(ttl=options.ttl, max_size=self.max_size, name=name)
            options = options._replace(ttl=None)
        kind = AsyncCachedFunction if inspect.iscoroutinefunction(func) else CachedFunction
        wrapper: _CachedBase[P, Any] = kind(func, options, cache)
        wrapper._owns_cache = self.cache is None
        return wrapper


@overload
def cached(  # type: ignore[overload-overlap]  # an async def also matches Callable[P, R]
    cache: Callable[P, Coroutine[Any, Any, R]], /
) -> AsyncCachedFunction[P, R]: ...
@overload
def cached(cache: Callable[P, R], /) -> CachedFunction[P, R]: ...
@overload
def cached(
    cache: Cache[Any, Any],
    *,
    key: Callable[..., Hashable] | None = None,
    ttl: float | timedelta | None = None,
    typed: bool = False,
    condition: Callable[[Any], bool] | None = None,
) -> _Decorator: ...
@overload
def cached(
    cache: None = None,
    *,
    key: Callable[..., Hashable] | None = None,
    ttl: float | timedelta | None = None,
    max_size: int | None = _DEFAULT_MAX_SIZE,
    typed: bool = False,
    condition: Callable[[Any], bool] | None = None,
) -> _Decorator: ...
def cached(
    cache: object = None,
    *,
    key: Callable[..., Hashable] | None = None,
    ttl: float | timedelta | None = None,
    max_size: int | _Absent | None = _ABSENT,
    typed: bool = False,
    condition: Callable[[Any], bool] | None = None,
) -> Any:
    """Memoize a sync or async function (or method), in ``cache`` or in a cache of its own.

    >>> from pgcache import Cache
    >>> plans: Cache[object, str] = Cache(ttl=1800)
    >>> @cached(plans)
    ... def explain(query_hash: int, analyze: bool = False) -> str:
    ...     return f"plan of {query_hash}"
    >>> explain(-42), explain(-42), explain.cache_info()
    ('plan of -42', 'plan of -42', CacheInfo(hits=1, misses=1, maxsize=10000, currsize=1))

    ``@cached``, ``@cached()``, ``@cached(ttl=..., max_size=...)``: a cache of its own
    (``max_size`` 10,000, None: unbounded). ``@cached(cache)``: results go to ``cache``, which
    other functions may share (each has its own key space); ``ttl`` then overrides its TTL.
    ``key(*args, **kwargs)`` replaces :func:`make_key` (it receives ``self`` on methods);
    ``typed=True`` keeps ``f(1)`` and ``f(1.0)`` apart; ``condition(result)`` false: the
    result is returned, not stored. The result has ``.cache``, ``.cache_key()``,
    ``.invalidate()``, ``.cache_info()``, ``.cache_clear()`` and ``.__wrapped__``, also bound
    on methods, whose instance is part of the key and kept alive by the cache while its results
    are stored (as with ``lru_cache``; :func:`cached_method` keeps a cache per instance).
    ``cache_info()``/``cache_clear()`` concern the function's own entries: all of a cache it
    owns, else those under its default keys; under a ``key=`` in a shared cache they cannot be
    told apart (``currsize`` None, ``cache_clear()`` raises ``TypeError``).
    """
    options = _options(key, ttl, typed, condition)
    if isinstance(cache, Cache):
        if max_size is not _ABSENT:
            raise TypeError(
                f"max_size={max_size!r} sizes a cache of the function's own; the cache given "
                f"has its own max_size ({cache.max_size}): pass one or the other"
            )
        return _Decorator(cache, None, options)
    if isinstance(max_size, _Absent):
        max_size = _DEFAULT_MAX_SIZE
    else:
        Cache(max_size=max_size).close()  # a bad max_size fails now, in the cache's own words
    if cache is None:
        return _Decorator(None, max_size, options)
    if callable(cache):  # @cached without parentheses
        return _Decorator(None, max_size, options)(cache)
    raise TypeError(f"cache must be a pgcache.Cache or None (a cache of its own), got {cache!r}")


class _MethodDecorator:
    """What ``cached_method(...)`` returns: turns a method into one cached per instance."""

    def __init__(self, cache_of: _CacheOf, options: _Options) -> None:
        self.cache_of = cache_of
        self.options = options

    @overload
    def __call__(  # type: ignore[overload-overlap]  # an async def also matches Callable[P, R]
        self, method: Callable[Concatenate[S, P], Coroutine[Any, Any, R]]
    ) -> AsyncCachedMethod[S, P, R]: ...
    @overload
    def __call__(self, method: Callable[Concatenate[S, P], R]) -> CachedMethod[S, P, R]: ...
    def __call__(self, method: Callable[..., Any]) -> _PerInstance:
        if not callable(method):
            raise TypeError(f"cached_method() decorates a method, got {method!r}")
        if inspect.iscoroutinefunction(method):
            return AsyncCachedMethod(method, self.options, self.cache_of)
        return CachedMethod(method, self.options, self.cache_of)


def cached_method(
    cache: Callable[[Any], Cache[Any, Any]],
    *,
    key: Callable[..., Hashable] | None = None,
    ttl: float | timedelta | None = None,
    typed: bool = False,
    condition: Callable[[Any], bool] | None = None,
) -> _MethodDecorator:
    """Memoize a sync or async method in a cache per instance: ``cache(self)`` gives it.

    >>> from pgcache import Cache
    >>> class Planner:
    ...     def __init__(self) -> None:
    ...         self.plans: Cache[object, str] = Cache(ttl=1800)
    ...     @cached_method(lambda self: self.plans)
    ...     def explain(self, query_hash: int) -> str:
    ...         return f"plan of {query_hash}"
    >>> planner = Planner()
    >>> planner.explain(-42), planner.explain(-42), planner.explain.cache_info().hits
    ('plan of -42', 'plan of -42', 1)

    As cachetools' ``cachedmethod``. ``self`` is not in the default key and no instance is
    kept alive; methods may share the instance's cache. The options are those of
    :func:`cached`. ``instance.method`` is a :class:`CachedFunction` (or
    :class:`AsyncCachedFunction`) on the instance's cache, counting the calls on it.
    """
    if not callable(cache):
        raise TypeError(
            "cache must be a callable taking the instance and returning its pgcache.Cache "
            f"(for example lambda self: self.cache), got {cache!r}"
        )
    return _MethodDecorator(cache, _options(key, ttl, typed, condition))
