"""The encoded bodies of cached values (pgcache.service.http_caching): each value encoded once, by
identity, its ETag the digest of its body. The service's ETag, 304 and Cache-Control answers are
tested over HTTP in tests/service/test_app.py."""

from __future__ import annotations

import gc
import hashlib
import json
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from tests.support.factories import make_features

from pgcache.service.http_caching import EncodedBodies, encode, etag_of, max_age


@pytest.fixture
def bodies() -> Iterator[EncodedBodies]:
    encoded = EncodedBodies(max_size=100, ttl=60.0)
    yield encoded
    encoded.close()


def test_a_value_is_encoded_once(bodies: EncodedBodies) -> None:
    features = make_features()
    assert bodies(features) is bodies(features)
    assert len(bodies) == 1


def test_the_body_is_the_values_json_and_the_etag_its_digest(bodies: EncodedBodies) -> None:
    features = make_features()
    encoded = bodies(features)
    assert json.loads(encoded.body) == json.loads(features.model_dump_json())
    digest = hashlib.blake2b(encoded.body, digest_size=16).hexdigest()
    assert encoded.etag == f'"{digest}"'.encode()
    assert encoded.collected_at == features.collected_at.timestamp()


def test_an_equal_value_that_is_another_object_gets_its_own_entry(bodies: EncodedBodies) -> None:
    first, second = make_features(), make_features()
    assert bodies(first) is not bodies(second)
    assert bodies(first).etag == bodies(second).etag
    assert len(bodies) == 2


def test_a_different_value_gets_a_different_etag(bodies: EncodedBodies) -> None:
    later = make_features(collected_at=datetime(2025, 1, 2, tzinfo=UTC))
    assert bodies(make_features()).etag != bodies(later).etag


def test_clear_forgets_every_value(bodies: EncodedBodies) -> None:
    features = make_features()
    encoded = bodies(features)
    bodies.clear()
    assert len(bodies) == 0
    again = bodies(features)
    assert again is not encoded
    assert again.body == encoded.body


def test_encode_without_a_cache_is_the_same_encoding() -> None:
    features = make_features()
    assert encode(features).etag == etag_of(features.model_dump_json().encode())


def test_max_age_is_what_is_left_of_the_ttl_and_never_negative() -> None:
    collected_100_s_ago = datetime.now(UTC).timestamp() - 100
    assert 799 <= max_age(900.0, collected_100_s_ago) <= 800
    assert max_age(900.0, 0.0) == 0


def test_a_body_goes_with_its_value_and_never_keeps_it_alive(bodies: EncodedBodies) -> None:
    features = make_features()
    bodies(features)
    kept = make_features()
    bodies(kept)
    alive = weakref.ref(features)
    del features
    gc.collect()
    assert alive() is None  # the bodies did not keep it
    assert len(bodies) == 1  # and its entry went with it
    assert bodies(kept).body == kept.model_dump_json().encode()
