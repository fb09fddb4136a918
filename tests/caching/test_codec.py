"""ValueCodec: what goes to Redis is data with a type tag, reads back equal, and never runs code."""

from __future__ import annotations

import math
import pickle
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, strategies as st
from tests.support.factories import make_features

from pgcache.caching.codec import ValueCodec
from pgcache.ml.models import Prediction
from pgcache.postgres.features import QueryFeatures

PLAN = {"Plan": {"Node Type": "Seq Scan", "Total Cost": 12.5, "Plans": [], "Parallel": False}}

json_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _prediction() -> Prediction:
    return Prediction(
        predicted_execution_time_ms=12.5,
        confidence=0.9,
        range_min_ms=10.0,
        range_max_ms=15.0,
        model_version="v3",
        timestamp=datetime(2025, 1, 1, tzinfo=UTC),
        query_hash=-42,
        scenario="current",
        features_digest="abc",
    )


@pytest.fixture
def codec() -> ValueCodec:
    return ValueCodec.default()


@given(json_data)
def test_plain_json_data_reads_back_equal_and_of_the_same_types(value: Any) -> None:
    codec = ValueCodec()
    decoded = codec.decode(codec.encode(value))
    assert decoded == value
    assert repr(decoded) == repr(value)  # 1 stays 1, 1.0 stays 1.0, True stays True


def test_the_default_codec_knows_query_features_and_predictions(codec: ValueCodec) -> None:
    assert set(codec.models) == {QueryFeatures, Prediction}


def test_query_features_read_back_as_query_features(codec: ValueCodec) -> None:
    features = make_features(-42)
    raw = codec.encode(features)
    assert raw.startswith(b"m:QueryFeatures:")
    decoded = codec.decode(raw)
    assert type(decoded) is QueryFeatures
    assert decoded == features


def test_predictions_read_back_as_predictions(codec: ValueCodec) -> None:
    prediction = _prediction()
    decoded = codec.decode(codec.encode(prediction))
    assert type(decoded) is Prediction
    assert decoded == prediction


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        {1: "int key"},
        {"a": (1,)},
        {1, 2},
        math.nan,
        math.inf,
        b"bytes",
        datetime(2025, 1, 1, tzinfo=UTC),
        object(),
        2**64,
    ],
    ids=repr,
)
def test_a_value_that_would_not_read_back_as_it_is_is_refused(value: object) -> None:
    with pytest.raises(TypeError, match=type(value).__name__):
        ValueCodec().encode(value)


def test_a_model_that_is_not_registered_is_refused() -> None:
    with pytest.raises(TypeError, match="QueryFeatures"):
        ValueCodec().encode(make_features(-42))


class _Exploit:
    """Unpickling this would create a file: the proof that nothing was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_a_pickle_is_refused_and_never_unpickled(codec: ValueCodec, tmp_path: Any) -> None:
    target = tmp_path / "pwned"
    crafted = pickle.dumps(_Exploit(str(target)))
    with pytest.raises(ValueError, match="not a value written by pgcache"):
        codec.decode(crafted)
    assert not target.exists()


@pytest.mark.parametrize(
    "raw",
    [b"", b"j:", b"j:{not json", b"m:QueryFeatures:{}", b"m:Unknown:{}", b"m:", b"x:1", b"\x80"],
)
def test_bytes_that_are_not_a_value_written_here_are_refused(codec: ValueCodec, raw: bytes) -> None:
    with pytest.raises(ValueError, match=r"pgcache|unreadable"):
        codec.decode(raw)


def test_two_models_with_one_name_are_refused() -> None:
    renamed = type("QueryFeatures", (Prediction,), {})
    with pytest.raises(ValueError, match="two models are called 'QueryFeatures'"):
        ValueCodec([QueryFeatures, renamed])


def test_a_class_that_is_not_a_model_is_refused() -> None:
    with pytest.raises(TypeError, match="not a pydantic model class"):
        ValueCodec([dict])  # type: ignore[list-item]
