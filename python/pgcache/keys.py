"""The key of every cached thing, in one place: the manager, the cached extractors and
predictors, the invalidation of a query (and the shared tier) all build keys here.

=================  ===========================================  ==============================
cache              key                                          built by
=================  ===========================================  ==============================
``features``,      the query hash (an int)                      :func:`feature_key`,
``fingerprints``,                                               :func:`query_key`
``explain_plans``,
``anomalies``
``predictions``    ``PredictionKey(query_hash, scenario,        :func:`prediction_key`
                   model_id)``
=================  ===========================================  ==============================

Features are kept once per query: what ``pg_stat_statements`` says of a query does not depend on
the scenario a caller names (the scenario is only a label on :class:`pgcache.QueryFeatures`,
which the cached extractors set on the way out), so the scenario is not part of their key. A
prediction does depend on it (the ML service is asked for that scenario): its key keeps it.
Building a key costs nothing on a hit's path: the int itself, or one tuple. A plain tuple
``(query_hash, scenario, model_id)`` finds the entry stored under the equal
:class:`PredictionKey` (a named tuple is a tuple: same hash, equal), so a lookup need not build
the named tuple; a store does (its type names the key in Redis).

:func:`query_hash_of` reads the query hash back out of any of these keys, which is how
invalidating one query finds its entries. A prediction is stored with the digest of the
features it was made from (``Prediction.features_digest``), not in its key: whoever reads it
(the manager or a cached predictor) finds it under the same key, and a cached predictor
treats a prediction made from other features as a miss.

In Redis (the shared tier) every name lives under one namespace, ``{prefix}v{version}:``
(:class:`RedisKeyspace`; prefix ``pgcache:`` by default, :data:`KEY_SCHEMA_VERSION`), so two
deployments, or two versions whose keys or values differ, never read each other's bytes:

======================  =====================================================================
what                    name
======================  =====================================================================
an entry                ``{ns}{cache}:{{{query_hash}}}:{encoded key}`` (keys with a query hash;
                        the hash tag keeps one query's entries in one cluster slot)
                        or ``{ns}{cache}:{encoded key}``
its load lock           ``{ns}lock:`` + the entry name without ``{ns}``
a query's entries       ``{ns}index:{{{query_hash}}}`` (a set of entry names)
invalidation channel    ``{ns}invalidate``
======================  =====================================================================

:func:`encode_key` writes a key as text with a type tag (``s:`` str, ``i:`` int, ``p:``
:class:`PredictionKey`, ``t:`` tuple) and :func:`decode_key` reads it back, so an invalidation
message names the very key each instance holds. This module checks only what it must to build
a name and imports no third-party package.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Final, NamedTuple

CACHE_NAMES: Final = ("features", "predictions", "fingerprints", "explain_plans", "anomalies")
"""The five kinds of cached answers, in the order a :class:`pgcache.CacheManager` lists them."""

_FEATURES_PREFIX: Final = "features:"  # the keys of version 0.x, still read by query_hash_of
_new_tuple: Final = tuple.__new__


class PredictionKey(NamedTuple):
    """The key of one prediction: which query, in which scenario, by which model."""

    query_hash: int
    scenario: str
    model_id: str | None


def feature_key(query_hash: int) -> int:
    """The key of one query's features, in every scenario: its hash."""
    return query_hash


def prediction_key(query_hash: int, scenario: str, model_id: str | None) -> PredictionKey:
    """The key of one prediction: ``PredictionKey(query_hash, scenario, model_id)``."""
    # tuple.__new__ directly: the namedtuple's own __new__ is one more Python call per key.
    key: PredictionKey = _new_tuple(PredictionKey, (query_hash, scenario, model_id))
    return key


def query_key(query_hash: int) -> int:
    """The key of a query's fingerprint, EXPLAIN plan and anomaly result: its hash."""
    return query_hash


def query_hash_of(key: object) -> int | None:
    """The query hash inside any key built by this module; None for a foreign key."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, PredictionKey):
        return key.query_hash
    if isinstance(key, tuple) and key and isinstance(key[0], int):
        return key[0]  # a PredictionKey that lost its type (e.g. read back from JSON)
    if isinstance(key, str) and key.startswith(_FEATURES_PREFIX):
        number, _, _ = key[len(_FEATURES_PREFIX) :].partition(":")
        try:
            return int(number)
        except ValueError:
            return None
    return None


# --- the shared tier (Redis) -------------------------------------------------------------------

KEY_SCHEMA_VERSION: Final = 2
"""The version of the Redis key layout and value format; a change that makes old bytes
unreadable, or old keys name other entries, increments it (2: features keyed by the query hash
alone)."""

DEFAULT_KEY_PREFIX: Final = "pgcache:"
"""The namespace prefix of every Redis name when ``REDIS_KEY_PREFIX`` is not set."""

RESERVED_CACHE_NAMES: Final = frozenset({"lock", "index", "invalidate"})
"""Names a tiered cache cannot have: they name the tier's own keys in the namespace."""

_MAX_PREFIX_LENGTH: Final = 100
_GLOB_SPECIAL: Final = frozenset("*?[]\\")
_JSON_SEPARATORS: Final = (",", ":")


def _plain_tuple(value: tuple[object, ...]) -> bool:
    return all(
        type(item) in (str, int) or item is None or (type(item) is tuple and _plain_tuple(item))
        for item in value
    )


def _as_tuple(value: object) -> Hashable:
    if isinstance(value, list):
        return tuple(_as_tuple(item) for item in value)
    if value is None or type(value) in (str, int):
        return value
    raise ValueError(f"a tuple key holds {value!r}")


def encode_key(key: object) -> str | None:
    """``key`` as text for Redis names and invalidation messages; None when it has no text form.

    ``str`` -> ``s:...``, ``int`` -> ``i:...``, :class:`PredictionKey` -> ``p:[...]``, a tuple of
    str, int, None and such tuples -> ``t:[...]``. Anything else (bool, float, objects) has none:
    ``1``, ``1.0`` and ``True`` are one key in a cache but would be three in Redis.
    """
    kind = type(key)
    if kind is str:
        return f"s:{key}"
    if kind is int:
        return f"i:{key}"
    if kind is PredictionKey:
        assert isinstance(key, PredictionKey)
        if (
            type(key.query_hash) is int
            and type(key.scenario) is str
            and (key.model_id is None or type(key.model_id) is str)
        ):
            return "p:" + json.dumps(list(key), ensure_ascii=False, separators=_JSON_SEPARATORS)
        return None
    if kind is tuple:
        assert isinstance(key, tuple)
        if _plain_tuple(key):
            return "t:" + json.dumps(key, ensure_ascii=False, separators=_JSON_SEPARATORS)
    return None


def decode_key(text: str) -> Hashable:
    """The key :func:`encode_key` wrote as ``text``; ``ValueError`` for anything else."""
    tag, colon, body = text.partition(":")
    if colon:
        if tag == "s":
            return body
        if tag == "i" and body.lstrip("-").isdigit() and body.isascii():
            return int(body)
        if tag in ("p", "t"):
            try:
                items = json.loads(body)
            except ValueError:
                items = None
            if isinstance(items, list):
                if tag == "t":
                    try:
                        return _as_tuple(items)
                    except ValueError:
                        pass
                elif (
                    len(items) == 3
                    and type(items[0]) is int
                    and type(items[1]) is str
                    and (items[2] is None or type(items[2]) is str)
                ):
                    return PredictionKey(*items)
    raise ValueError(f"{text[:200]!r} is not a key written by pgcache.keys.encode_key")


def check_key_prefix(prefix: object) -> str:
    """A Redis namespace prefix: printable, without spaces, at most 100 characters."""
    if not isinstance(prefix, str):
        raise TypeError(f"key_prefix={prefix!r}: expected a str like {DEFAULT_KEY_PREFIX!r}")
    if (
        len(prefix) > _MAX_PREFIX_LENGTH
        or not prefix.isprintable()
        or any(character.isspace() for character in prefix)
    ):
        raise ValueError(
            f"key_prefix={prefix[:_MAX_PREFIX_LENGTH]!r}: expected at most {_MAX_PREFIX_LENGTH}"
            f" printable characters without spaces, like {DEFAULT_KEY_PREFIX!r}"
        )
    return prefix


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in _GLOB_SPECIAL else c for c in text)


class RedisKeyspace:
    """The names of everything the shared tier keeps in Redis under one prefix and version.

    >>> space = RedisKeyspace("pgcache:")
    >>> space.entry("explain_plans", -42)
    'pgcache:v2:explain_plans:{-42}:i:-42'
    >>> space.entry("predictions", prediction_key(-42, "current", None))
    'pgcache:v2:predictions:{-42}:p:[-42,"current",null]'
    """

    __slots__ = ("channel", "namespace", "prefix")

    def __init__(self, prefix: str = DEFAULT_KEY_PREFIX) -> None:
        self.prefix = check_key_prefix(prefix)
        self.namespace = f"{prefix}v{KEY_SCHEMA_VERSION}:"
        self.channel = f"{self.namespace}invalidate"

    def __repr__(self) -> str:
        return f"<RedisKeyspace {self.namespace!r}>"

    def entry(self, cache: str, key: object) -> str | None:
        """The name of ``key``'s entry of ``cache``; None when the key has no text form."""
        encoded = encode_key(key)
        if encoded is None:
            return None
        return self.entry_of_encoded(cache, encoded, query_hash_of(key))

    def entry_of_encoded(self, cache: str, encoded: str, query_hash: int | None) -> str:
        """The entry name of an already encoded key (``query_hash``: its hash tag, if any)."""
        if query_hash is None:
            return f"{self.namespace}{cache}:{encoded}"
        return f"{self.namespace}{cache}:{{{query_hash}}}:{encoded}"

    def lock(self, entry: str) -> str:
        """The name of the lock that one instance holds while it loads ``entry``."""
        return f"{self.namespace}lock:{entry.removeprefix(self.namespace)}"

    def query_index(self, query_hash: int) -> str:
        """The set of every entry name of one query (for invalidating the query)."""
        return f"{self.namespace}index:{{{query_hash}}}"

    def cache_pattern(self, cache: str) -> str:
        """A ``SCAN MATCH`` pattern for every entry of ``cache``."""
        return f"{_glob_escape(self.namespace)}{_glob_escape(cache)}:*"
