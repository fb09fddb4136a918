"""The names of the shared tier in Redis: a prefix and a schema version on every one, a hash tag
per query, and keys written as text that reads back as the very key each instance holds."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from pgcache.keys import (
    KEY_SCHEMA_VERSION,
    PredictionKey,
    RedisKeyspace,
    decode_key,
    encode_key,
    feature_key,
    prediction_key,
    query_key,
)

keys = st.recursive(
    st.text() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    lambda children: st.tuples(children) | st.tuples(children, children | st.none()),
    max_leaves=6,
) | st.builds(PredictionKey, st.integers(), st.text(), st.none() | st.text())


@given(keys)
def test_every_encodable_key_reads_back_as_the_same_key_of_the_same_type(key: object) -> None:
    encoded = encode_key(key)
    assert encoded is not None
    decoded = decode_key(encoded)
    assert decoded == key
    assert type(decoded) is type(key)


@pytest.mark.parametrize("key", [1.0, True, None, b"x", frozenset(), (1.5,), object()], ids=repr)
def test_keys_whose_text_would_be_ambiguous_have_none(key: object) -> None:
    assert encode_key(key) is None


@pytest.mark.parametrize("text", ["", "x", "q:1", "i:", "i:1.5", "p:[1]", "p:{", "t:{}", "t:[1.5]"])
def test_text_that_is_not_an_encoded_key_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a key written by"):
        decode_key(text)


def test_every_name_starts_with_the_prefix_and_the_schema_version() -> None:
    space = RedisKeyspace("app-a:")
    names = [
        space.entry("features", feature_key(7)),
        space.lock(f"app-a:v{KEY_SCHEMA_VERSION}:features:x"),
        space.query_index(7),
        space.channel,
    ]
    assert all(str(name).startswith(f"app-a:v{KEY_SCHEMA_VERSION}:") for name in names)


def test_two_prefixes_never_share_a_name() -> None:
    first, second = RedisKeyspace("one:"), RedisKeyspace("two:")
    assert first.entry("fingerprints", 5) != second.entry("fingerprints", 5)
    assert first.channel != second.channel


def test_entries_of_one_query_share_its_hash_tag() -> None:
    space = RedisKeyspace()
    names = [
        space.entry("features", feature_key(-42)),
        space.entry("predictions", prediction_key(-42, "current", "m1")),
        space.entry("explain_plans", query_key(-42)),
        space.query_index(-42),
    ]
    assert all("{-42}" in str(name) for name in names)


def test_a_key_without_query_hash_has_no_hash_tag() -> None:
    assert RedisKeyspace().entry("plans", "report") == "pgcache:v2:plans:s:report"


def test_the_lock_of_an_entry_is_not_the_entry() -> None:
    space = RedisKeyspace()
    entry = str(space.entry("plans", "x"))
    assert space.lock(entry) == "pgcache:v2:lock:plans:s:x"


def test_the_scan_pattern_escapes_glob_characters_of_the_prefix() -> None:
    assert RedisKeyspace("a*b[1]:").cache_pattern("features") == "a\\*b\\[1\\]:v2:features:*"


@pytest.mark.parametrize("prefix", ["with space:", "tab\t", "x" * 101, "line\n"])
def test_a_bad_prefix_is_refused_with_its_value(prefix: str) -> None:
    with pytest.raises(ValueError, match="key_prefix="):
        RedisKeyspace(prefix)


def test_a_prefix_that_is_not_a_str_is_refused() -> None:
    with pytest.raises(TypeError, match="key_prefix=5"):
        RedisKeyspace(5)  # type: ignore[arg-type]
