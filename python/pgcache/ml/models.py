"""The ML service's answers as pydantic models."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pgcache._pydantic import plain_attribute_reads

if TYPE_CHECKING:
    from pgcache.postgres.features import QueryFeatures


_M = TypeVar("_M", bound=BaseModel)
# --- answers ---------------------------------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Prediction(_Answer):
    """A predicted execution time with its confidence and interval.

    Accepts the original service's names: ``confidence_score`` for ``confidence``,
    ``confidence_interval: {lower_bound_ms, upper_bound_ms}`` for ``range_min_ms`` /
    ``range_max_ms``, ``prediction_timestamp`` for ``timestamp``. ``features_digest`` is
    :func:`features_digest` of the features the prediction was made from (set by the client).
    """

    predicted_execution_time_ms: float = Field(ge=0, allow_inf_nan=False)
    confidence: float = Field(ge=0, le=1, validation_alias="confidence_score")
    range_min_ms: float = Field(ge=0, allow_inf_nan=False)
    range_max_ms: float = Field(ge=0, allow_inf_nan=False)
    model_version: str
    timestamp: datetime = Field(validation_alias="prediction_timestamp")
    query_hash: int | None = None
    scenario: str | None = None
    model_id: str | None = None
    features_digest: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_original_names(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        fields = dict(data)
        interval = fields.pop("confidence_interval", None)
        if isinstance(interval, Mapping):
            fields.setdefault("range_min_ms", interval.get("lower_bound_ms"))
            fields.setdefault("range_max_ms", interval.get("upper_bound_ms"))
        for original, short in (
            ("confidence_score", "confidence"),
            ("prediction_timestamp", "timestamp"),
        ):
            if original in fields and short not in fields:
                fields[short] = fields.pop(original)
        return fields

    @model_validator(mode="after")
    def _check_interval(self) -> Self:
        if self.range_min_ms > self.range_max_ms:
            raise ValueError(
                f"range_min_ms={self.range_min_ms} is above range_max_ms={self.range_max_ms}"
            )
        return self


plain_attribute_reads(Prediction)  # a cached prediction hit reads its features_digest


class PredictionValidation(_Answer):
    """How far a prediction was from the measured execution time."""

    query_hash: int
    predicted_execution_time_ms: float
    actual_execution_time_ms: float
    error_ms: float
    error_percent: float
    within_interval: bool | None = None
    validated_at: datetime


class TrainingJob(_Answer):
    """A training request the service accepted."""

    job_id: str
    status: str
    model_type: str
    samples: int = Field(ge=0)
    submitted_at: datetime


class ServiceHealth(_Answer):
    """The service's own health report."""

    status: str
    model_version: str | None = None
    uptime_seconds: float | None = None


def features_digest(features: QueryFeatures) -> str:
    """A stable digest of what ``features`` say (``collected_at`` excluded: when they were
    read does not change what they predict). Equal statistics give equal digests in every
    process; any changed feature gives another digest."""
    canonical = features.model_dump_json(exclude={"collected_at"})
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
