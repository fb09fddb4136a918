"""One running load per key for concurrent callers (single-flight), for asyncio tasks and for
threads.

:class:`AsyncSingleFlight` is used by :func:`pgcache.cached` and the cached feature
extractors: when many tasks miss the same key at once, one coroutine does the work and every
caller awaits it. :class:`ThreadSingleFlight` is its blocking twin, used by
:class:`pgcache.caching.tiered.TieredCache` (``Cache.get_or_set`` has its own, in Rust).

Semantics of :meth:`AsyncSingleFlight.run`:

* Callers on the same event loop that ask for the same key while a flight for it is
  running await that one task and all get its result, or all get its exception (the
  same exception object, re-raised in each caller).
* A finished flight is forgotten at once: the next call for the key starts a new one,
  so neither results nor errors are remembered (storing results is the cache's job).
* Cancelling one caller never cancels the shared work while another caller still
  awaits it (each caller awaits it through :func:`asyncio.shield`). When every
  caller of a flight has been cancelled, nobody is left to want the result, so the
  shared task is cancelled too and forgotten; the next caller starts afresh.
* Flights are kept per event loop, so one instance may serve several loops (for
  example one per thread) without one loop awaiting another loop's task.
* The shared task runs in a copy of the context (``contextvars``) of the caller that
  started it.

What it deliberately does not do: it does not cache, time out, retry or limit
concurrency across different keys; it is not a cross-thread primitive within one
loop (asyncio objects belong to their loop's thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar, cast

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_T = TypeVar("_T")


class _Flight(Generic[V]):
    """One running task and how many callers currently await it."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[V]) -> None:
        self.task = task
        self.waiters = 0


async def _await_factory(factory: Callable[[], Awaitable[V]]) -> V:
    # Calling the factory inside the task delivers even its synchronous errors to
    # every caller, exactly like an error raised while awaiting.
    return await factory()


class AsyncSingleFlight(Generic[K, V]):
    """Deduplicates concurrent asyncio work by key: one coroutine per key at a time.

    >>> flight: AsyncSingleFlight[int, str] = AsyncSingleFlight()
    >>> async def load() -> str: ...
    >>> # await flight.run(42, load)   # concurrent callers for 42 share one load()
    """

    __slots__ = ("_flights",)

    def __init__(self) -> None:
        self._flights: dict[tuple[asyncio.AbstractEventLoop, K], _Flight[V]] = {}

    def __len__(self) -> int:
        """How many flights are running now (across all event loops)."""
        return sum(1 for flight in list(self._flights.values()) if not flight.task.done())

    def __repr__(self) -> str:
        return f"<AsyncSingleFlight running={len(self)}>"

    async def run(self, key: K, factory: Callable[[], Awaitable[V]]) -> V:
        """Return ``await factory()``, sharing one running call among concurrent callers.

        ``key`` must be hashable (``TypeError`` otherwise, before anything runs).
        ``factory`` is called at most once per flight, inside a new task, and only
        when no flight for ``key`` is running on this event loop.
        """
        loop = asyncio.get_running_loop()
        flight_key = (loop, key)
        flight = self._flights.get(flight_key)
        if flight is None or flight.task.done():
            task = loop.create_task(_await_factory(factory))
            flight = _Flight(task)
            self._flights[flight_key] = flight
            task.add_done_callback(lambda _: self._forget(flight_key, flight))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Every caller of this flight was cancelled: stop the orphaned work.
                flight.task.cancel()
                self._forget(flight_key, flight)

    def _forget(self, flight_key: tuple[asyncio.AbstractEventLoop, K], flight: _Flight[V]) -> None:
        # Identity check: a newer flight for the same key may already have replaced it.
        if self._flights.get(flight_key) is flight:
            del self._flights[flight_key]


class _Call:
    """One running load of :class:`ThreadSingleFlight`: its thread, then its outcome."""

    __slots__ = ("done", "error", "owner", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.owner = threading.get_ident()
        self.value: Any = None
        self.error: BaseException | None = None


class ThreadSingleFlight:
    """One running load per key for concurrent threads; the others wait and share its result
    (or its exception). A load that asks for its own key again gets ``RuntimeError`` instead of
    waiting for itself. Nothing is remembered once a load ends."""

    __slots__ = ("_calls", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call] = {}

    def run(self, key: Hashable, work: Callable[[], _T]) -> _T:
        """``work()``, or the result of the call of it another thread is running for ``key``."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if not leader:
            if call.owner == threading.get_ident():
                raise RuntimeError(f"the loader of key {key!r} asked for the same key again")
            call.done.wait()
            if call.error is not None:
                raise call.error
            return cast(_T, call.value)
        try:
            call.value = work()
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
        return cast(_T, call.value)
