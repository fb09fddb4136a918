"""Invalidation that reaches every instance: the message, and the listener that applies it to L1.

Every delete, query invalidation and clear of a tiered cache is published on the namespace's
channel (``PUBLISH`` on one server, ``SPUBLISH`` on a cluster); every instance runs one
:class:`InvalidationListener` thread that removes the named entries from its L1 caches. A
message starts with the sender's instance id, so an instance skips its own messages without
parsing them.

When the subscription is lost (Redis restarted, the connection killed, a failover, a slot
moved), messages may have been missed: the listener empties every L1 cache at once, again when
the new subscription is confirmed (anything read in between may predate a missed message),
resubscribes with exponential back-off and counts it (Redisson's "clear on reconnect").
A message it cannot read also empties L1. What it deliberately does not do: queue or replay
messages (pub/sub has no history; emptying L1 is the recovery).
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from pgcache._validate import check_query_hash
from pgcache.keys import decode_key

logger = logging.getLogger("pgcache.invalidation")

Operation = Literal["delete", "query", "clear"]
_OPERATIONS: Final = ("delete", "query", "clear")
_POLL_SECONDS: Final = 0.05  # also how long stop() may wait for the thread
_FIRST_BACKOFF: Final = 0.05
_MAX_BACKOFF: Final = 2.0
_SEPARATORS: Final = (",", ":")


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What to remove from every other instance's L1.

    ``delete``: the entries ``keys`` (encoded by :func:`pgcache.keys.encode_key`) of ``cache``;
    ``query``: every entry of query ``query_hash`` in every cache; ``clear``: all of ``cache``.
    """

    operation: Operation
    cache: str | None = None
    keys: tuple[str, ...] = ()
    query_hash: int | None = None

    def encode(self, origin: str) -> bytes:
        """The message as published: ``origin``, a space, then JSON."""
        body: dict[str, Any] = {"op": self.operation}
        if self.cache is not None:
            body["cache"] = self.cache
        if self.keys:
            body["keys"] = list(self.keys)
        if self.query_hash is not None:
            body["query_hash"] = self.query_hash
        text = json.dumps(body, ensure_ascii=False, separators=_SEPARATORS)
        return f"{origin} {text}".encode()

    @classmethod
    def decode(cls, message: bytes) -> tuple[str, Invalidation]:
        """``(origin, invalidation)`` of a published message; ``ValueError`` if it is not one."""
        origin, space, text = message.partition(b" ")
        try:
            if not space:
                raise ValueError("no origin")
            body = json.loads(text)
            if not isinstance(body, dict) or body.get("op") not in _OPERATIONS:
                raise ValueError("no operation")
            cache = body.get("cache")
            keys = body.get("keys", [])
            query_hash = body.get("query_hash")
            if cache is not None and not isinstance(cache, str):
                raise ValueError("cache is not a str")
            if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
                raise ValueError("keys are not a list of str")
            if query_hash is not None:
                query_hash = check_query_hash(query_hash)
            invalidation = cls(body["op"], cache, tuple(keys), query_hash)
            if (invalidation.operation == "query") != (query_hash is not None) or (
                invalidation.operation != "query" and cache is None
            ):
                raise ValueError(f"incomplete {invalidation.operation}")
            return origin.decode(), invalidation
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not an invalidation message: {message[:100]!r} ({exc})") from None


class LocalCache(Protocol):
    """What the listener needs of one tiered cache: removing from its L1 only."""

    def drop_local(self, keys: Iterable[object]) -> None: ...

    def drop_local_query(self, query_hash: int) -> int: ...

    def clear_local(self) -> None: ...


def apply_invalidation(invalidation: Invalidation, caches: dict[str, LocalCache]) -> None:
    """Remove what ``invalidation`` names from the L1 of ``caches`` (by name; others ignored).

    A key that :func:`pgcache.keys.decode_key` cannot read raises ``ValueError`` after the
    readable ones are removed.
    """
    if invalidation.operation == "query":
        assert invalidation.query_hash is not None
        for cache in caches.values():
            cache.drop_local_query(invalidation.query_hash)
        return
    named = caches.get(invalidation.cache or "")
    if named is None:
        return  # a cache this instance does not have (another build on the same namespace)
    if invalidation.operation == "clear":
        named.clear_local()
        return
    keys, bad = [], []
    for text in invalidation.keys:
        try:
            keys.append(decode_key(text))
        except ValueError:
            bad.append(text)
    named.drop_local(keys)
    if bad:
        raise ValueError(f"unreadable keys in an invalidation: {bad[:3]!r}")


class Subscription(Protocol):
    """A redis-py ``PubSub`` already subscribed to the channel (what the listener reads)."""

    def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float = 0.0
    ) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


class InvalidationListener:
    """One thread that applies other instances' invalidations to this instance's L1 caches.

    ``subscribe()`` opens a new subscription (it raises on failure); ``on_message(data)``
    applies one message (``ValueError``: unreadable); ``flush(reason)`` empties every L1
    cache. ``on_state(subscribed)`` is told each change; ``on_idle()``, if given, runs between
    polls while subscribed (the tier replays what Redis did not take during an outage).
    :meth:`wait_subscribed` lets a caller wait for the first subscription; :meth:`stop` ends
    the thread.
    """

    def __init__(
        self,
        subscribe: Callable[[], Subscription],
        on_message: Callable[[bytes], None],
        flush: Callable[[str], None],
        on_state: Callable[[bool], None],
        *,
        on_idle: Callable[[], None] | None = None,
        name: str = "pgcache-invalidation",
    ) -> None:
        self._on_idle = on_idle
        self._subscribe = subscribe
        self._on_message = on_message
        self._flush = flush
        self._on_state = on_state
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self._subscription: Subscription | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def subscribed(self) -> bool:
        """Whether a subscription is confirmed now."""
        return self._subscribed.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a confirmed subscription; whether there is one."""
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (idempotent); its subscription is closed."""
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = _FIRST_BACKOFF
        first = True
        while not self._stopping.is_set():
            try:
                with self._lock:
                    self._subscription = self._subscribe()
                self._listen(self._subscription, first)
            except Exception as exc:  # any failure of the subscription: recover the same way
                if self._stopping.is_set():
                    break
                was_subscribed = self._subscribed.is_set()
                self._set_state(subscribed=False)
                if was_subscribed:  # not on every failed retry: L1 serves while Redis is down
                    self._flush("lost")
                    backoff = _FIRST_BACKOFF
                    logger.warning(
                        "invalidation subscription lost (%s: %s): L1 emptied, resubscribing",
                        type(exc).__name__,
                        exc,
                    )
                first = False
                # Jitter keeps many instances from resubscribing in lockstep after a restart.
                self._stopping.wait(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, _MAX_BACKOFF)
            finally:
                self._close_subscription()
        self._set_state(subscribed=False)

    def _listen(self, subscription: Subscription, first: bool) -> None:
        while not self._stopping.is_set():
            message = subscription.get_message(timeout=_POLL_SECONDS)
            if self._on_idle is not None and self._subscribed.is_set():
                self._on_idle()
            if message is None:
                continue
            kind = message.get("type")
            if kind in ("subscribe", "ssubscribe"):
                if not first or self._subscribed.is_set():
                    # Subscribed again: whatever L1 read before now may predate a missed message.
                    self._flush("resubscribed")
                    logger.info("invalidation subscription restored: L1 emptied again")
                self._set_state(subscribed=True)
            elif kind in ("message", "smessage"):
                data = message.get("data")
                if isinstance(data, bytes):
                    self._on_message(data)
            elif kind in ("unsubscribe", "sunsubscribe"):
                raise ConnectionError(f"the server ended the subscription ({kind})")

    def _set_state(self, *, subscribed: bool) -> None:
        if subscribed == self._subscribed.is_set():
            return
        if subscribed:
            self._subscribed.set()
        else:
            self._subscribed.clear()
        self._on_state(subscribed)

    def _close_subscription(self) -> None:
        with self._lock:
            subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                subscription.close()
            except Exception:  # closing a broken connection: nothing left to release
                logger.debug("closing the invalidation subscription failed", exc_info=True)
