"""The shared second tier of one process: what its tiered caches do in Redis or a Redis Cluster.

:class:`RedisTier` holds the :class:`pgcache.caching.redis_client.RedisConnection`, the value
codec, the key namespace and the invalidation listener, and does the Redis side of every
operation of a :class:`pgcache.caching.tiered.TieredCache`: read an entry with what it has
left to live (``GET`` + ``PTTL`` in one script), write with ``PX`` (indexed by query), delete,
invalidate a query (every cache, every instance), clear a cache, take and release a load lock
(``SET NX PX``, compare-and-delete script), publish an invalidation.

No operation raises a Redis error: a failure is counted and answered with "nothing" (a miss, no
lock, nothing deleted). What it deliberately does not do: hold any value (that is L1's job).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal

from pgcache._validate import check_seconds
from pgcache.caching.codec import ValueCodec
from pgcache.caching.invalidation import (
    Invalidation,
    InvalidationListener,
    LocalCache,
    Subscription,
    apply_invalidation,
)
from pgcache.caching.redis_client import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_SOCKET_TIMEOUT,
    RedisConnection,
)
from pgcache.caching.redis_scripts import (
    DELETE_QUERY,
    READ,
    UNLOCK,
    WRITE_INDEXED,
    as_int,
    queue_commands,
    queue_reads,
)
from pgcache.caching.tier_stats import SharedTierStatus, TierCounters
from pgcache.keys import DEFAULT_KEY_PREFIX, RESERVED_CACHE_NAMES, RedisKeyspace
from pgcache.resilience.breaker import CircuitState

logger = logging.getLogger("pgcache.redis")

Found = tuple[bytes, float | None] | Literal[False] | None
"""A read of one entry: ``(bytes, seconds left, or None when it has no expiry)``; None when
it is absent; False when Redis did not answer (an error, a timeout, the breaker open)."""

DEFAULT_LOCK_TTL: Final = 5.0

_CLEAR_BATCH: Final = 500
_MAX_PENDING: Final = 10_000


def check_cache_name(name: object) -> str:
    """A tiered cache's name: a non-empty identifier-like str, not one the tier reserves."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a tiered cache needs a name (Cache(name=...)), got {name!r}")
    if not all(c.isalnum() or c in "_-." for c in name) or name in RESERVED_CACHE_NAMES:
        raise ValueError(
            f"name={name!r}: a tiered cache's name must be letters, digits, _ - . and not one of "
            f"{sorted(RESERVED_CACHE_NAMES)}"
        )
    return name


class RedisTier:
    """The Redis connection shared by the tiered caches of one process (one instance).

    ``url``: ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://`` (``rediss+``)
    for a Redis Cluster. ``key_prefix`` starts every name (:class:`pgcache.keys.RedisKeyspace`).
    ``socket_timeout`` / ``connect_timeout`` bound each Redis call; after
    ``failure_threshold`` consecutive outages the breaker opens for ``reset_timeout``.
    ``lock_ttl``: how long one instance may hold a key's load lock. ``codec``: the value
    codec (default: plain data, :class:`pgcache.QueryFeatures`, :class:`pgcache.Prediction`).
    ``listen=False`` runs no invalidation listener (for tools that only read). The
    constructor waits up to ``connect_timeout`` for the subscription and never fails because
    Redis is down. :meth:`close` (and :meth:`aclose` on each event loop used) releases it.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        lock_ttl: float = DEFAULT_LOCK_TTL,
        failure_threshold: int = 3,
        reset_timeout: float = 1.0,
        codec: ValueCodec | None = None,
        listen: bool = True,
    ) -> None:
        self.keys = RedisKeyspace(key_prefix)
        self.lock_ttl = check_seconds("lock_ttl", lock_ttl)
        if codec is not None and not isinstance(codec, ValueCodec):
            raise TypeError(f"codec={codec!r}: expected a pgcache.caching.codec.ValueCodec")
        self.codec = codec if codec is not None else ValueCodec.default()
        self.instance_id = uuid.uuid4().hex
        self.connection = RedisConnection(
            url,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            failure_threshold=failure_threshold,
            reset_timeout=reset_timeout,
            name=f"pgcache-{self.instance_id[:12]}",
        )
        self.cluster = self.connection.cluster
        self.url = self.connection.url
        self.breaker = self.connection.breaker
        self._own = self.instance_id.encode() + b" "
        self._lock = threading.Lock()
        self._caches: dict[str, LocalCache] = {}
        self._counters = TierCounters()  # operations of no one cache (publish, ping)
        self._events = dict.fromkeys(
            ("subscription_losses", "l1_flushes", "sent", "received", "errors", "dropped"), 0
        )
        # Changes Redis did not take yet (an outage), replayed in order by the listener.
        self._pending: deque[tuple[Invalidation, tuple[str, ...]]] = deque(maxlen=_MAX_PENDING)
        self._listener: InvalidationListener | None = None
        if listen:
            self._listener = InvalidationListener(
                self._subscribe,
                self._on_message,
                self.flush_local,
                self._on_subscription,
                on_idle=self.replay_pending,
            )
            self._listener.wait_subscribed(self.connection.connect_timeout)

    def __repr__(self) -> str:
        kind = "cluster" if self.cluster else "server"
        return f"<RedisTier {kind} {self.url} {self.keys.namespace!r}>"

    # --- caches, status --------------------------------------------------------------------

    def attach(self, name: str, cache: LocalCache) -> TierCounters:
        """Register a tiered cache under ``name`` (invalidations reach its L1); its counters."""
        check_cache_name(name)
        with self._lock:
            if name in self._caches:
                raise ValueError(f"name={name!r}: this RedisTier already has a cache of that name")
            self._caches[name] = cache
        return TierCounters()

    def detach(self, name: str) -> None:
        """Forget the cache ``name`` (it is closing)."""
        with self._lock:
            self._caches.pop(name, None)

    def flush_local(self, reason: str = "flush") -> None:
        """Empty the L1 of every attached cache (after a lost subscription or bad message)."""
        with self._lock:
            self._events["l1_flushes"] += 1
        caches = self._attached()
        for cache in caches:
            cache.clear_local()
        logger.debug("L1 of %d caches emptied (%s)", len(caches), reason)

    def status(self) -> SharedTierStatus:
        """The connection now: breaker, subscription, invalidations."""
        breaker = self.breaker.state
        subscribed = self._listener is not None and self._listener.subscribed
        with self._lock:
            events = dict(self._events)
            pending = len(self._pending)
        return SharedTierStatus(
            url=self.url,
            cluster=self.cluster,
            degraded=breaker is not CircuitState.CLOSED
            or (self._listener is not None and not subscribed)
            or pending > 0,
            breaker=breaker.value,
            breaker_opened=self.breaker.times_opened,
            subscribed=subscribed,
            subscription_losses=events["subscription_losses"],
            l1_flushes=events["l1_flushes"],
            invalidations_sent=events["sent"],
            invalidations_received=events["received"],
            invalidation_errors=events["errors"],
            invalidations_pending=pending,
            invalidations_dropped=events["dropped"],
        )

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the invalidation subscription; whether it is there."""
        return self._listener is not None and self._listener.wait_subscribed(timeout)

    # --- what the caches do: sync, then the asyncio twins ---------------------------------

    @staticmethod
    def _entry_of(reply: Any, started: float) -> Found:
        """``(bytes, seconds left or None: no expiry)`` of a ``READ`` reply; None: absent;
        False: Redis did not answer."""
        if reply is False:
            return False
        if not reply or reply[0] is None:
            return None
        milliseconds = int(reply[1])
        if milliseconds == -1:
            return bytes(reply[0]), None
        # Counted from before the request: the L1 copy expires no later than the entry.
        left = milliseconds / 1000 - (time.monotonic() - started)
        return (bytes(reply[0]), left) if left > 0 else None

    def read(self, counters: TierCounters, entry: str) -> Found:
        """``entry``'s bytes and the seconds it has left; None: absent; False: no answer."""
        started = time.monotonic()
        reply = self.connection.call(counters, lambda c: c.eval(READ, 1, entry), False)
        return self._entry_of(reply, started)

    async def aread(self, counters: TierCounters, entry: str) -> Found:
        started = time.monotonic()
        reply = await self.connection.acall(counters, lambda c: c.eval(READ, 1, entry), False)
        return self._entry_of(reply, started)

    def read_many(self, counters: TierCounters, entries: Sequence[str]) -> list[Found]:
        """:meth:`read` of many entries in one round trip (one per cluster node)."""
        started = time.monotonic()
        replies: list[Any] | None = self.connection.call(
            counters, lambda c: queue_reads(c, entries).execute(), None
        )
        return [self._entry_of(reply, started) for reply in replies or [False] * len(entries)]

    async def aread_many(self, counters: TierCounters, entries: Sequence[str]) -> list[Found]:
        started = time.monotonic()
        replies: list[Any] | None = await self.connection.acall(
            counters, lambda c: queue_reads(c, entries).execute(), None
        )
        return [self._entry_of(reply, started) for reply in replies or [False] * len(entries)]

    def _write_command(
        self, entry: str, raw: bytes, ttl: float, query_hash: int | None
    ) -> tuple[Any, ...]:
        milliseconds = max(1, round(ttl * 1000))
        if query_hash is None:
            return ("SET", entry, raw, "PX", milliseconds)
        return (
            "EVAL",
            WRITE_INDEXED,
            2,
            entry,
            self.keys.query_index(query_hash),
            raw,
            milliseconds,
        )

    def write(
        self, counters: TierCounters, writes: Iterable[tuple[str, bytes, float, int | None]]
    ) -> bool:
        """Store ``(entry, bytes, ttl seconds, query hash or None)`` items; whether it worked."""
        commands = [self._write_command(*item) for item in writes]
        if len(commands) == 1:  # no pipeline for one command: it costs more than the command
            return self.connection.call(
                counters, lambda c: c.execute_command(*commands[0]) is not None, False
            )
        return self.connection.call(
            counters, lambda c: queue_commands(c, commands).execute() is not None, False
        )

    async def awrite(
        self, counters: TierCounters, writes: Iterable[tuple[str, bytes, float, int | None]]
    ) -> bool:
        commands = [self._write_command(*item) for item in writes]

        async def run(client: Any) -> bool:
            if len(commands) == 1:
                await client.execute_command(*commands[0])
            else:
                await queue_commands(client, commands).execute()
            return True

        return await self.connection.acall(counters, run, False)

    def delete(self, counters: TierCounters, entries: Sequence[str]) -> int | None:
        """Delete entries; how many existed (None: Redis did not answer)."""
        if not entries:
            return 0
        return self.connection.call(counters, lambda c: int(c.delete(*entries)), None)

    async def adelete(self, counters: TierCounters, entries: Sequence[str]) -> int | None:
        if not entries:
            return 0
        return await self.connection.acall(counters, lambda c: as_int(c.delete(*entries)), None)

    def delete_query(self, counters: TierCounters, query_hash: int) -> int | None:
        """Delete every entry of one query, in every cache of the namespace; how many."""
        index = self.keys.query_index(query_hash)
        return self.connection.call(counters, lambda c: int(c.eval(DELETE_QUERY, 1, index)), None)

    async def adelete_query(self, counters: TierCounters, query_hash: int) -> int | None:
        index = self.keys.query_index(query_hash)
        return await self.connection.acall(
            counters, lambda c: as_int(c.eval(DELETE_QUERY, 1, index)), None
        )

    def clear_cache(self, counters: TierCounters, name: str) -> int | None:
        """Delete every entry of cache ``name`` (SCAN + UNLINK on every node); how many."""

        def clear(client: Any) -> int:
            removed, batch = 0, []
            for entry in client.scan_iter(match=self.keys.cache_pattern(name), count=_CLEAR_BATCH):
                batch.append(entry)
                if len(batch) >= _CLEAR_BATCH:
                    removed += int(client.unlink(*batch))
                    batch = []
            return removed + (int(client.unlink(*batch)) if batch else 0)

        return self.connection.call(counters, clear, None)

    async def aclear_cache(self, counters: TierCounters, name: str) -> int | None:
        async def clear(client: Any) -> int:
            removed, batch = 0, []
            async for entry in client.scan_iter(
                match=self.keys.cache_pattern(name), count=_CLEAR_BATCH
            ):
                batch.append(entry)
                if len(batch) >= _CLEAR_BATCH:
                    removed += int(await client.unlink(*batch))
                    batch = []
            return removed + (int(await client.unlink(*batch)) if batch else 0)

        return await self.connection.acall(counters, clear, None)

    def try_lock(self, counters: TierCounters, entry: str, token: str) -> bool | None:
        """Take ``entry``'s load lock: True taken, False held by another, None: no Redis."""
        lock, ttl = self.keys.lock(entry), max(1, round(self.lock_ttl * 1000))
        return self.connection.call(
            counters, lambda c: bool(c.set(lock, token, nx=True, px=ttl)), None
        )

    async def atry_lock(self, counters: TierCounters, entry: str, token: str) -> bool | None:
        lock, ttl = self.keys.lock(entry), max(1, round(self.lock_ttl * 1000))

        async def take(client: Any) -> bool:
            return bool(await client.set(lock, token, nx=True, px=ttl))

        return await self.connection.acall(counters, take, None)

    def unlock(self, counters: TierCounters, entry: str, token: str) -> None:
        """Release ``entry``'s lock if ``token`` still holds it (compare-and-delete)."""
        lock = self.keys.lock(entry)
        self.connection.call(counters, lambda c: c.eval(UNLOCK, 1, lock, token), None)

    async def aunlock(self, counters: TierCounters, entry: str, token: str) -> None:
        lock = self.keys.lock(entry)
        await self.connection.acall(counters, lambda c: c.eval(UNLOCK, 1, lock, token), None)

    def publish(self, invalidation: Invalidation) -> bool:
        """Tell every other instance (``PUBLISH``, ``SPUBLISH`` on a cluster); whether it went."""
        message, channel = invalidation.encode(self.instance_id), self.keys.channel
        if self.cluster:
            sent = self.connection.call(
                self._counters, lambda c: c.spublish(channel, message) is not None, False
            )
        else:
            sent = self.connection.call(
                self._counters, lambda c: c.publish(channel, message) is not None, False
            )
        return self._count_sent(sent)

    async def apublish(self, invalidation: Invalidation) -> bool:
        message, channel = invalidation.encode(self.instance_id), self.keys.channel

        async def publish(client: Any) -> bool:
            if self.cluster:
                await client.spublish(channel, message)
            else:
                await client.publish(channel, message)
            return True

        return self._count_sent(await self.connection.acall(self._counters, publish, False))

    # --- changes: removed from Redis and announced, or kept until Redis answers --------------

    def _remove(
        self, counters: TierCounters, change: Invalidation, entries: Sequence[str]
    ) -> int | None:
        if change.operation == "query":
            assert change.query_hash is not None
            return self.delete_query(counters, change.query_hash)
        if change.operation == "clear":
            return self.clear_cache(counters, str(change.cache))
        return self.delete(counters, entries)

    async def _aremove(
        self, counters: TierCounters, change: Invalidation, entries: Sequence[str]
    ) -> int | None:
        if change.operation == "query":
            assert change.query_hash is not None
            return await self.adelete_query(counters, change.query_hash)
        if change.operation == "clear":
            return await self.aclear_cache(counters, str(change.cache))
        return await self.adelete(counters, entries)

    def announce(
        self, counters: TierCounters, change: Invalidation, entries: Sequence[str] = ()
    ) -> int | None:
        """Remove from Redis what ``change`` names (``entries`` for a delete; the query's or the
        cache's entries), then publish it to every other instance. What Redis does not take
        now is kept (up to 10,000 changes) and done again by the listener once Redis answers:
        an outage never loses an invalidation. How many entries Redis held (None: no answer)."""
        removed = self._remove(counters, change, entries)
        if removed is None or not self.publish(change):
            self._defer(change, entries)
        return removed

    async def aannounce(
        self, counters: TierCounters, change: Invalidation, entries: Sequence[str] = ()
    ) -> int | None:
        removed = await self._aremove(counters, change, entries)
        if removed is None or not await self.apublish(change):
            self._defer(change, entries)
        return removed

    def _defer(self, change: Invalidation, entries: Sequence[str]) -> None:
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                self._events["dropped"] += 1
            self._pending.append((change, tuple(entries)))

    def replay_pending(self) -> None:
        """Do again, in order, the changes Redis did not take (the listener calls it while it
        is subscribed); stops at the first that fails, and while the breaker is open."""
        while self._pending and self.breaker.state is not CircuitState.OPEN:
            with self._lock:
                change, entries = self._pending[0]
            if self._remove(self._counters, change, entries) is None or not self.publish(change):
                return
            with self._lock:
                if self._pending and self._pending[0] == (change, entries):
                    self._pending.popleft()

    def invalidate_query(self, query_hash: int) -> int:
        """Remove every entry of one query: from Redis (every cache of the namespace), from the
        L1 of every attached cache, and from every other instance's L1 (later, if Redis does
        not answer now: see :meth:`announce`); how many entries this instance's L1 held."""
        change = Invalidation("query", query_hash=query_hash)
        removed = self.delete_query(self._counters, query_hash)
        local = sum(cache.drop_local_query(query_hash) for cache in self._attached())
        if removed is None or not self.publish(change):
            self._defer(change, ())
        return local

    async def ainvalidate_query(self, query_hash: int) -> int:
        change = Invalidation("query", query_hash=query_hash)
        removed = await self.adelete_query(self._counters, query_hash)
        local = sum(cache.drop_local_query(query_hash) for cache in self._attached())
        if removed is None or not await self.apublish(change):
            self._defer(change, ())
        return local

    def _attached(self) -> list[LocalCache]:
        with self._lock:
            return list(self._caches.values())

    def ping(self) -> bool:
        """Whether Redis answers now (through the breaker: False at once while it is open)."""
        return self.connection.call(self._counters, lambda c: bool(c.ping()), False)

    async def aping(self) -> bool:
        async def ping(client: Any) -> bool:
            return bool(await client.ping())

        return await self.connection.acall(self._counters, ping, False)

    def _count_sent(self, sent: bool) -> bool:
        if sent:
            with self._lock:
                self._events["sent"] += 1
        return sent

    # --- invalidations from the other instances -------------------------------------------

    def _subscribe(self) -> Subscription:
        client: Any = self.connection.client()
        channel = self.keys.channel
        if self.cluster:
            client.nodes_manager.initialize()  # the channel's owner may have moved
            node = client.get_node_from_key(channel)
            pubsub = client.get_redis_connection(node).pubsub()
            pubsub.ssubscribe(channel)
        else:
            pubsub = client.pubsub()
            pubsub.subscribe(channel)
        subscription: Subscription = pubsub
        return subscription

    def _on_message(self, data: bytes) -> None:
        if data.startswith(self._own):
            return  # our own: applied locally before it was sent
        with self._lock:
            caches = dict(self._caches)
        try:
            _, invalidation = Invalidation.decode(data)
            apply_invalidation(invalidation, caches)
        except ValueError as exc:
            with self._lock:
                self._events["errors"] += 1
            logger.warning("%s: L1 emptied", exc)
            self.flush_local("unreadable invalidation")
            return
        with self._lock:
            self._events["received"] += 1

    def _on_subscription(self, subscribed: bool) -> None:
        if not subscribed:
            with self._lock:
                self._events["subscription_losses"] += 1

    # --- life cycle ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self.connection.closed

    async def aclose(self) -> None:
        """Close the asyncio client of the running event loop (call it on every loop used)."""
        await self.connection.aclose()

    def close(self) -> None:
        """Stop the listener and close every client (idempotent)."""
        if self._listener is not None:
            self._listener.stop()
        self.connection.close()
