"""Invalidation messages and their application to L1: what every instance reads off the channel."""

from __future__ import annotations

from typing import Any

import pytest

from pgcache.caching.invalidation import Invalidation, apply_invalidation
from pgcache.keys import encode_key, feature_key

ORIGIN = "0123456789abcdef0123456789abcdef"


class Recorder:
    """A LocalCache that records what it was told to drop."""

    def __init__(self) -> None:
        self.dropped: list[object] = []
        self.queries: list[int] = []
        self.cleared = 0

    def drop_local(self, keys: Any) -> None:
        self.dropped.extend(keys)

    def drop_local_query(self, query_hash: int) -> int:
        self.queries.append(query_hash)
        return 0

    def clear_local(self) -> None:
        self.cleared += 1


@pytest.mark.parametrize(
    "invalidation",
    [
        Invalidation("delete", "features", (str(encode_key(feature_key(-42))),)),
        Invalidation("query", query_hash=-(2**63)),
        Invalidation("clear", "explain_plans"),
        Invalidation("delete", "plans", ("s:ünïcode", "i:7")),
    ],
    ids=repr,
)
def test_a_message_reads_back_as_the_invalidation_and_its_origin(
    invalidation: Invalidation,
) -> None:
    assert Invalidation.decode(invalidation.encode(ORIGIN)) == (ORIGIN, invalidation)


def test_a_message_starts_with_its_origin_so_an_instance_can_skip_its_own() -> None:
    assert Invalidation("clear", "plans").encode(ORIGIN).startswith(ORIGIN.encode() + b" ")


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"no-space",
        ORIGIN.encode() + b" not json",
        ORIGIN.encode() + b" []",
        ORIGIN.encode() + b' {"op": "explode"}',
        ORIGIN.encode() + b' {"op": "delete", "keys": ["i:1"]}',
        ORIGIN.encode() + b' {"op": "query"}',
        ORIGIN.encode() + b' {"op": "query", "query_hash": 18446744073709551616}',
        ORIGIN.encode() + b' {"op": "delete", "cache": "p", "keys": [1]}',
        ORIGIN.encode() + b' {"op": "clear", "cache": 5}',
        b"\xff\xfe \xff",
    ],
)
def test_a_message_that_is_not_an_invalidation_is_refused(message: bytes) -> None:
    with pytest.raises(ValueError, match="not an invalidation message"):
        Invalidation.decode(message)


def test_a_delete_drops_the_decoded_keys_from_the_named_cache_only() -> None:
    features, plans = Recorder(), Recorder()
    key = feature_key(-42)
    apply_invalidation(
        Invalidation("delete", "features", (str(encode_key(key)), "i:7")),
        {"features": features, "plans": plans},
    )
    assert features.dropped == [key, 7]
    assert plans.dropped == []


def test_a_query_invalidation_reaches_every_cache() -> None:
    caches = {"features": Recorder(), "plans": Recorder()}
    apply_invalidation(Invalidation("query", query_hash=-42), dict(caches))
    assert [cache.queries for cache in caches.values()] == [[-42], [-42]]


def test_a_clear_empties_the_named_cache() -> None:
    plans = Recorder()
    apply_invalidation(Invalidation("clear", "plans"), {"plans": plans})
    assert plans.cleared == 1


def test_a_cache_this_instance_does_not_have_is_ignored() -> None:
    apply_invalidation(Invalidation("clear", "elsewhere"), {"plans": Recorder()})


def test_unreadable_keys_are_reported_after_the_readable_ones_are_dropped() -> None:
    plans = Recorder()
    with pytest.raises(ValueError, match="unreadable keys"):
        apply_invalidation(Invalidation("delete", "plans", ("i:7", "zz")), {"plans": plans})
    assert plans.dropped == [7]
