"""One process's redis-py clients for the shared tier, behind a circuit breaker.

:class:`RedisConnection` turns a ``REDIS_URL`` into clients (sync ``Redis`` or ``RedisCluster``
on first use; one ``redis.asyncio`` client per event loop) configured for a cache: short
socket and connect timeouts, no retries (a miss is cheaper than a retry). :meth:`call` and
:meth:`acall` run one operation through the :class:`pgcache.CircuitBreaker` and never raise a
Redis error: a failure is counted and answered with the caller's "nothing"; while the breaker
is open Redis is not tried, so a dead Redis costs no timeout per request, and one probe per
``reset_timeout`` finds it again. What it deliberately does not do: know any key or value.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from pgcache._extras import require

# Before redis-py is imported: without it, one ImportError naming pgcache[redis].
require("redis", "the shared Redis tier (pgcache.caching.redis_client)")

import redis  # noqa: E402
import redis.asyncio  # noqa: E402
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.cluster import RedisCluster  # noqa: E402
from redis.exceptions import (  # noqa: E402
    ClusterError,
    ConnectionError as RedisConnectionError,
    RedisClusterException,
    RedisError,
    TimeoutError as RedisTimeoutError,
)
from redis.retry import Retry  # noqa: E402

from pgcache._validate import check_seconds  # noqa: E402
from pgcache.caching.redis_url import check_redis_url, mask_redis_url  # noqa: E402
from pgcache.caching.tier_stats import TierCounters  # noqa: E402
from pgcache.resilience.breaker import CircuitBreaker  # noqa: E402

logger = logging.getLogger("pgcache.redis")

T = TypeVar("T")

DEFAULT_SOCKET_TIMEOUT: Final = 0.25
DEFAULT_CONNECT_TIMEOUT: Final = 1.0
# Errors that say Redis is unreachable or unwell (breaker failures); other errors are replies.
_OUTAGES: Final = (RedisConnectionError, RedisTimeoutError, ClusterError, RedisClusterException,
                   OSError)  # fmt: skip


class RedisConnection:
    """The redis-py clients of one instance, and the breaker every call goes through.

    ``url``: ``redis://``, ``rediss://``, ``unix://``, or ``redis+cluster://`` /
    ``rediss+cluster://`` for a Redis Cluster. ``socket_timeout`` / ``connect_timeout`` bound
    each call (seconds); ``failure_threshold`` consecutive outages open the breaker for
    ``reset_timeout`` seconds. ``name`` is the Redis ``CLIENT SETNAME`` of every connection.
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        failure_threshold: int = 3,
        reset_timeout: float = 1.0,
        name: str = "pgcache",
    ) -> None:
        self._url, self.cluster = check_redis_url(url)
        self.url = mask_redis_url(url)
        self.socket_timeout = check_seconds("socket_timeout", socket_timeout)
        self.connect_timeout = check_seconds("connect_timeout", connect_timeout)
        self.breaker = CircuitBreaker(failure_threshold, reset_timeout)
        self.name = name
        self._lock = threading.Lock()
        self._healthy = True
        self._sync: redis.Redis | RedisCluster | None = None
        self._async: dict[asyncio.AbstractEventLoop, Any] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisConnection {'cluster' if self.cluster else 'server'} {self.url}>"

    def _options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "client_name": self.name,
        }

    def client(self) -> Any:
        """The sync client (created on first use; a cluster client connects then)."""
        client = self._sync
        if client is None:
            with self._lock:
                if self._closed:
                    raise RedisConnectionError("the Redis connection is closed")
                if self._sync is None:
                    factory = RedisCluster if self.cluster else redis.Redis
                    self._sync = factory.from_url(self._url, **self._options())
                client = self._sync
        return client

    def async_client(self) -> Any:
        """The ``redis.asyncio`` client of the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            with self._lock:
                if self._closed:
                    raise RedisConnectionError("the Redis connection is closed")
                if loop not in self._async:
                    factory = AsyncRedisCluster if self.cluster else redis.asyncio.Redis
                    self._async[loop] = factory.from_url(self._url, **self._options())
                client = self._async[loop]
        return client

    # --- calls through the breaker ---------------------------------------------------------

    def _failed(self, counters: TierCounters, exc: BaseException) -> None:
        counters.add("l2_errors")
        if isinstance(exc, _OUTAGES):
            self.breaker.record_failure()
            if self._healthy:
                self._healthy = False
                logger.warning(
                    "Redis %s unreachable or slow (%s: %s): answering from L1 and loaders",
                    self.url,
                    type(exc).__name__,
                    exc,
                )
        else:
            self.breaker.record_success()  # an error reply: Redis is up
            logger.warning("Redis %s answered an error: %s", self.url, exc)

    def _broken(self, counters: TierCounters) -> None:
        counters.add("l2_errors")
        self.breaker.record_neutral()
        logger.exception("a Redis operation on %s failed unexpectedly", self.url)

    def _succeeded(self, counters: TierCounters, started: float) -> None:
        self.breaker.record_success()
        counters.observe(time.perf_counter() - started)
        if not self._healthy:
            self._healthy = True
            logger.info("Redis %s answers again", self.url)

    def call(self, counters: TierCounters, operation: Callable[[Any], T], failed: T) -> T:
        """``operation(client)``, or ``failed`` when Redis fails or the breaker is open."""
        if not self.breaker.allow_attempt():
            counters.add("bypassed")
            return failed
        started = time.perf_counter()
        try:
            result = operation(self.client())
        except (RedisError, RedisClusterException, OSError) as exc:
            self._failed(counters, exc)
            return failed
        except Exception:  # a client bug must not break a request either: loud, counted
            self._broken(counters)
            return failed
        except BaseException:
            self.breaker.record_neutral()  # interrupted: frees a half-open probe slot
            raise
        self._succeeded(counters, started)
        return result

    async def acall(
        self, counters: TierCounters, operation: Callable[[Any], Awaitable[T]], failed: T
    ) -> T:
        """:meth:`call` of an async ``operation`` with the asyncio client of this loop."""
        if not self.breaker.allow_attempt():
            counters.add("bypassed")
            return failed
        started = time.perf_counter()
        try:
            result = await operation(self.async_client())
        except (RedisError, RedisClusterException, OSError) as exc:
            self._failed(counters, exc)
            return failed
        except Exception:
            self._broken(counters)
            return failed
        except BaseException:
            self.breaker.record_neutral()  # cancelled: frees a half-open probe slot
            raise
        self._succeeded(counters, started)
        return result

    # --- life cycle ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    async def aclose(self) -> None:
        """Close the asyncio client of the running event loop (call it on every loop used)."""
        with self._lock:
            client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        """Close every client (idempotent). An asyncio client whose event loop runs in another
        thread is closed on that loop; one whose loop has ended cannot be closed cleanly
        (call :meth:`aclose` before it ends)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            client, self._sync = self._sync, None
            clients, self._async = dict(self._async), {}
        if client is not None:
            client.close()
        for loop, async_client in clients.items():
            _close_on(loop, async_client)


def _close_on(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop.is_closed():
        return
    if running is loop:
        loop.create_task(client.aclose())
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=5)
    else:
        loop.run_until_complete(client.aclose())
