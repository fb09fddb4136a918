"""HTTP caching of the API's answers: strong ETags, ``If-None-Match``, ``Cache-Control``, and the
JSON body and ETag of each cached value encoded once (:class:`EncodedBodies`), not on every
request that finds it in the cache.

It does not decide what is cacheable or for how long: the routes pass the ``Cache-Control``.
"""

from __future__ import annotations

import hashlib
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Final, Protocol

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from pgcache._core import Cache

_JSON: Final = b"application/json"


class CollectedValue(Protocol):
    """A cached, immutable answer: a frozen pydantic model with its extraction time."""

    @property
    def collected_at(self) -> datetime: ...

    def model_dump_json(self) -> str: ...


@dataclass(frozen=True, slots=True, eq=False)
class EncodedBody:
    """One value's JSON ``body``, its ``etag`` (quoted, as sent) and ``collected_at`` in POSIX
    seconds."""

    body: bytes
    etag: bytes
    collected_at: float


def etag_of(body: bytes) -> bytes:
    """A strong ETag of ``body``: 128 bits of BLAKE2b, in hex, quoted."""
    return b'"%s"' % hashlib.blake2b(body, digest_size=16).hexdigest().encode()


def encode(value: CollectedValue) -> EncodedBody:
    """``value``'s body, ETag and collection time, computed now."""
    body = value.model_dump_json().encode()
    return EncodedBody(body, etag_of(body), value.collected_at.timestamp())


_Entry = tuple["weakref.ref[CollectedValue]", EncodedBody]


def _forget(entries: weakref.ref[Cache[int, _Entry]], ident: int, ref: weakref.ref[Any]) -> None:
    """A value was collected: its entry goes (unless the id names a newer value already)."""
    cache = entries()
    if cache is not None and not cache.closed:
        found = cache.get(ident)
        if found is not None and found[0] is ref:
            cache.delete(ident)


class EncodedBodies:
    """The :class:`EncodedBody` of each value a cache hands out, by the value's identity.

    Cached values are frozen and handed out as the same object on every hit, so a value is
    encoded the first time it is served and then read from here (one lookup). An entry holds
    its value weakly and goes when the value is collected: once the cache has dropped a value
    (and no request still holds it), its body is gone too, never answering for it nor keeping
    it alive. Entries also live at most ``ttl`` seconds (the cache's TTL) and ``max_size`` at a
    time. ``close()`` ends it.
    """

    def __init__(self, max_size: int, ttl: float | None) -> None:
        self._encoded: Cache[int, _Entry] = Cache(max_size=max_size, ttl=ttl, name="encoded_bodies")
        self._self_ref = weakref.ref(self._encoded)

    def __call__(self, value: CollectedValue) -> EncodedBody:
        ident = id(value)
        found = self._encoded.get(ident)
        if found is not None and found[0]() is value:
            return found[1]
        encoded = encode(value)
        forget = partial(_forget, self._self_ref, ident)
        self._encoded[ident] = (weakref.ref(value, forget), encoded)
        return encoded

    def __len__(self) -> int:
        return len(self._encoded)

    def clear(self) -> None:
        self._encoded.clear()

    def close(self) -> None:
        self._encoded.close()


def _etag_matches(if_none_match: bytes, etag: bytes) -> bool:
    """RFC 9110 weak comparison, as ``If-None-Match`` asks for: ``W/"x"`` matches ``"x"``."""
    if if_none_match.strip() == b"*":
        return True
    return any(tag.strip().removeprefix(b"W/") == etag for tag in if_none_match.split(b","))


def _if_none_match(request: Request) -> bytes | None:
    for name, value in request.scope["headers"]:
        if name == b"if-none-match":
            return bytes(value)
    return None


class _RawResponse(Response):
    """A response whose status, headers and body are given as sent (nothing is derived)."""

    def __init__(self, status_code: int, raw_headers: list[tuple[bytes, bytes]], body: bytes):
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.body = body
        self.background: BackgroundTask | None = None


def cacheable_json(request: Request, body: bytes, etag: bytes, cache_control: str) -> Response:
    """``body`` (JSON) with its ``ETag`` and ``Cache-Control``; 304 with no body when the
    request's ``If-None-Match`` names ``etag``."""
    headers = [(b"etag", etag), (b"cache-control", cache_control.encode("latin-1"))]
    condition = _if_none_match(request)
    if condition is not None and _etag_matches(condition, etag):
        return _RawResponse(304, headers, b"")
    headers.append((b"content-type", _JSON))
    headers.append((b"content-length", b"%d" % len(body)))
    return _RawResponse(200, headers, body)


def max_age(ttl: float, collected_at: float) -> int:
    """Seconds left of ``ttl`` for a value collected at ``collected_at`` (POSIX seconds)."""
    return max(0, int(ttl - (time.time() - collected_at)))
