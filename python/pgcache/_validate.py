"""The argument checks every part shares: one function per kind of value, one message style.

Each check returns the value in its canonical form or raises ``TypeError`` (wrong type) or
``ValueError`` (right type, bad value) naming the argument and showing what was given; the
wording of the duration checks is the same as the Rust core's. No third-party imports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pydantic import ValidationError

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
MAX_SCENARIO_LENGTH: Final = 100
# The most entries a pgcache.Cache holds: the Rust core's MAX_CAPACITY (32-bit slots less the
# reserved ones), which rejects one more; tests/core/test_unbounded.py checks the two agree.
MAX_CAPACITY: Final = 4_294_966_972


def check_query_hash(query_hash: object, argument: str = "query_hash") -> int:
    """A ``pg_stat_statements`` queryid: an int in the signed 64-bit range."""
    if isinstance(query_hash, bool) or not isinstance(query_hash, int):
        raise TypeError(
            f"{argument}={query_hash!r}: expected an int (a pg_stat_statements queryid), "
            f"got {type(query_hash).__name__}"
        )
    if not INT64_MIN <= query_hash <= INT64_MAX:
        raise ValueError(
            f"{argument}={query_hash}: outside the signed 64-bit range of a queryid "
            f"[{INT64_MIN}, {INT64_MAX}]"
        )
    return query_hash


def check_query_hashes(hashes: Iterable[int], argument: str = "hashes") -> list[int]:
    """Distinct queryids, in first-seen order."""
    if isinstance(hashes, str | bytes) or not isinstance(hashes, Iterable):
        raise TypeError(f"{argument}={hashes!r}: expected an iterable of int queryids")
    unique: dict[int, None] = {}
    for index, query_hash in enumerate(hashes):
        unique[check_query_hash(query_hash, f"{argument}[{index}]")] = None
    return list(unique)


def check_scenario(scenario: object) -> str:
    """A scenario name: a str."""
    if not isinstance(scenario, str):
        raise TypeError(f"scenario={scenario!r}: expected a str, got {type(scenario).__name__}")
    return scenario


def check_model_id(model_id: object) -> str | None:
    """A model id: a str, or None for the service's default model."""
    if model_id is not None and not isinstance(model_id, str):
        raise TypeError(f"model_id={model_id!r}: expected a str or None")
    return model_id


def check_seconds(argument: str, value: object) -> float:
    """A positive, finite duration in seconds, from a number of seconds or a timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{argument} must be a number of seconds or a datetime.timedelta, "
            f"got {value!r} of type {type(value).__name__}"
        )
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{argument} must be a positive, finite number of seconds, got {value!r}")
    return seconds


def check_optional_seconds(argument: str, value: object) -> float | None:
    """:func:`check_seconds`, or None for None."""
    return None if value is None else check_seconds(argument, value)


def validation_text(error: ValidationError, *, limit: int | None = None) -> str:
    """A pydantic error in one line: ``field.path: message; ...`` (at most ``limit`` items)."""
    items = error.errors(include_url=False, include_input=False)
    return "; ".join(
        f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']}" for item in items[:limit]
    )
