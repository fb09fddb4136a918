"""The client of the ML prediction service: pooled HTTP, retries on transient failures only.

* :class:`MLClient` / :class:`AsyncMLClient`: one pooled ``httpx`` client each, configured from
  :class:`pgcache.config.Settings`, calling the original service's four endpoints
  (``predict``, ``validate_prediction``, ``train_model``, ``health``).
* :class:`Prediction`, :class:`PredictionValidation`, :class:`TrainingJob`,
  :class:`ServiceHealth`: the answers, as pydantic models. :class:`Prediction` reads both the
  original's field names (``confidence_score``, ``confidence_interval``,
  ``prediction_timestamp``) and the short ones.
* :class:`MLServiceError` and its subclasses: the only exceptions a call raises (no raw
  ``httpx`` exception escapes; the httpx one is kept as ``__cause__``).
* :class:`CircuitBreaker`: optional fail-fast after consecutive transient failures.
* :class:`CachedPredictor` / :class:`AsyncCachedPredictor`: features from a (cached) feature
  extractor, predictions from the client, kept in the manager's ``"predictions"`` cache.

Retries are built on **stamina** (which drives tenacity): it gives the retry loop for sync and
async code alike, exponential backoff with bounded jitter, a test mode and instrumentation
hooks (logging / Prometheus / custom via ``stamina.instrumentation``) with no configuration.
tenacity alone would do, but needs a dozen parameters to say the same thing, and stamina's
backoff hook lets one predicate both decide *whether* to retry and honour ``Retry-After``.
The policy: ``RETRY_MAX_ATTEMPTS`` retries after the first try, waiting
``RETRY_INITIAL_BACKOFF x RETRY_BACKOFF_MULTIPLIER ** n`` (100, 200, 400 ms by default) plus a
jitter of at most ``jitter`` (10 % by default) of the initial backoff; no wait exceeds
``max_backoff``; a call never starts an attempt or a wait that would end after its
``deadline``, and each attempt's timeouts are cut to the time left.

What is retried: HTTP 500/502/503/504 and 429 (429 and 503 honour ``Retry-After``, capped at
``max_backoff``), connect errors and connect timeouts; for the idempotent ``predict`` and
``health`` also read/write timeouts, connection resets and early EOF (``ReadError``,
``WriteError``, ``RemoteProtocolError``). ``train_model`` and ``validate_prediction`` are not
idempotent: they retry only when nothing was sent (connect errors). Never retried: other 4xx,
``PoolTimeout`` (the local pool is saturated: retrying makes it worse), cancellation, and
invalid answers (bad JSON, wrong schema: :class:`MLServiceResponseError`).

This module deliberately does not start the service (see :mod:`pgcache.mlservice` for the
reference one), does not extract features (see :mod:`pgcache.features`), and registers nothing
in prometheus_client: :meth:`MLClient.stats` is what a metrics collector reads.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeVar

import httpx
import stamina
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pgcache._core import Cache, PgCacheError
from pgcache._singleflight import AsyncSingleFlight
from pgcache.config import Settings
from pgcache.features import _check_scenario
from pgcache.manager import _check_model_id

if TYPE_CHECKING:
    from pgcache.features import AsyncFeatureExtractor, FeatureExtractor, QueryFeatures
    from pgcache.manager import CacheManager

__all__ = [
    "AsyncCachedPredictor",
    "AsyncMLClient",
    "CachedPredictor",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "MLClient",
    "MLClientStats",
    "MLServiceError",
    "MLServiceResponseError",
    "MLServiceUnavailable",
    "Prediction",
    "PredictionValidation",
    "ServiceHealth",
    "TrainingJob",
    "features_digest",
]

_M = TypeVar("_M", bound=BaseModel)

_RETRYABLE_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
_BODY_EXCERPT: Final = 200
# Per-call latency histogram bounds in seconds (Prometheus' default buckets up to 10 s).
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


# --- errors ----------------------------------------------------------------------------------


class MLServiceError(PgCacheError):
    """A call to the ML service failed; ``attempts`` HTTP attempts were made.

    ``status`` and ``body`` (its first 200 characters) are set when the service answered.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        attempts: int,
        status: int | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(f"{endpoint}: {message} (after {attempts} attempt(s))")
        self.endpoint = endpoint
        self.attempts = attempts
        self.status = status
        self.body = body


class MLServiceUnavailable(MLServiceError):  # noqa: N818 -- the name the original's users know
    """The service could not be reached or kept failing transiently (after all retries)."""


class MLServiceResponseError(MLServiceError):
    """The service answered something that is not a valid answer (bad JSON, wrong schema)."""


class CircuitOpenError(MLServiceUnavailable):
    """The circuit breaker is open: the call failed fast, without any HTTP attempt."""


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


# --- circuit breaker -------------------------------------------------------------------------


class CircuitState(StrEnum):
    """``closed``: calls go through; ``open``: calls fail fast; ``half_open``: one probe may go."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Fails fast after ``failure_threshold`` consecutive transient failures.

    Counted as failures: attempts that ended in a retryable way (5xx 500/502/503/504, 429,
    connection errors, timeouts, resets). A 4xx or any other answer proves the service is up and
    counts as a success; local problems (pool saturation, cancellation) count as neither.
    When open, attempts raise :class:`CircuitOpenError` until ``reset_timeout`` has passed;
    then exactly one probe attempt goes through (half-open): its success closes the breaker,
    its failure opens it for another ``reset_timeout``. Thread-safe; ``clock`` is injectable
    (e.g. ``pgcache.ManualClock().now``) so tests need not sleep.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float | timedelta = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int):
            raise TypeError(f"failure_threshold={failure_threshold!r}: expected an int >= 1")
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold={failure_threshold!r}: expected an int >= 1")
        self.failure_threshold = failure_threshold
        self.reset_timeout = _seconds(reset_timeout, "reset_timeout")
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._times_opened = 0

    @property
    def state(self) -> CircuitState:
        """The state now (``open`` reads as ``half_open`` once the cool-down has passed)."""
        with self._lock:
            if self._state is CircuitState.OPEN and self._cooled_down():
                return CircuitState.HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        """Transient failures since the last success."""
        return self._consecutive_failures

    @property
    def times_opened(self) -> int:
        """How often the breaker has opened (closed or half-open -> open)."""
        return self._times_opened

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_timeout

    def _seconds_until_probe(self) -> float:
        return max(0.0, self.reset_timeout - (self._clock() - self._opened_at))

    def before_attempt(self, endpoint: str) -> None:
        """Let an attempt through, or raise :class:`CircuitOpenError`."""
        with self._lock:
            if self._state is CircuitState.CLOSED:
                return
            if self._state is CircuitState.OPEN and self._cooled_down():
                self._state = CircuitState.HALF_OPEN
            if self._state is CircuitState.HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return
            wait = self._seconds_until_probe() if self._state is CircuitState.OPEN else 0.0
        raise CircuitOpenError(
            f"circuit breaker open after {self.failure_threshold} consecutive transient"
            f" failures; next probe in {wait:.3g} s",
            endpoint=endpoint,
            attempts=0,
        )

    def record_success(self) -> None:
        """The attempt reached the service: reset the count; a successful probe closes."""
        with self._lock:
            self._consecutive_failures = 0
            self._probe_in_flight = False
            self._state = CircuitState.CLOSED

    def record_failure(self) -> None:
        """A transient failure: count it; open at the threshold or when the probe failed."""
        with self._lock:
            self._consecutive_failures += 1
            probe_failed = self._state is CircuitState.HALF_OPEN
            self._probe_in_flight = False
            if probe_failed or (
                self._state is CircuitState.CLOSED
                and self._consecutive_failures >= self.failure_threshold
            ):
                self._state = CircuitState.OPEN
                self._opened_at = self._clock()
                self._times_opened += 1

    def record_neutral(self) -> None:
        """Neither success nor failure (local problem): only frees the probe slot."""
        with self._lock:
            self._probe_in_flight = False


# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MLClientStats:
    """Counters of one client since it was created (what a metrics collector exports).

    ``calls``: client method calls; ``requests``: HTTP attempts sent (first tries and
    retries); ``retries``: attempts after a call's first; ``failures``: calls that raised an
    :class:`MLServiceError`; ``circuit_rejections``: calls refused by the open breaker (also
    counted in ``failures``); ``latency_buckets``: cumulative ``(upper bound in seconds,
    calls)`` pairs of the per-call latency (retries and waits included) in Prometheus'
    histogram form, ``latency_seconds_sum`` / ``latency_count`` its sum and count;
    ``circuit_state`` is ``None`` without a breaker.
    """

    calls: int
    requests: int
    retries: int
    failures: int
    circuit_rejections: int
    latency_seconds_sum: float
    latency_count: int
    latency_buckets: tuple[tuple[float, int], ...]
    circuit_state: CircuitState | None
    circuit_times_opened: int


class _Stats:
    """The mutable counters behind :class:`MLClientStats` (one lock, held for a few adds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.requests = 0
        self.retries = 0
        self.failures = 0
        self.circuit_rejections = 0
        self.latency_sum = 0.0
        self.latency_count = 0
        self.bucket_counts = [0] * len(LATENCY_BUCKETS)

    def request_sent(self) -> None:
        with self._lock:
            self.requests += 1

    def call_done(self, attempts: int, seconds: float, error: BaseException | None) -> None:
        with self._lock:
            self.calls += 1
            self.retries += max(0, attempts - 1)
            if isinstance(error, MLServiceError):
                self.failures += 1
                if isinstance(error, CircuitOpenError):
                    self.circuit_rejections += 1
            self.latency_sum += seconds
            self.latency_count += 1
            for index, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.bucket_counts[index] += 1
                    break

    def snapshot(self, breaker: CircuitBreaker | None) -> MLClientStats:
        with self._lock:
            cumulative, running = [], 0
            for bound, count in zip(LATENCY_BUCKETS, self.bucket_counts, strict=True):
                running += count
                cumulative.append((bound, running))
            cumulative.append((math.inf, self.latency_count))
            return MLClientStats(
                calls=self.calls,
                requests=self.requests,
                retries=self.retries,
                failures=self.failures,
                circuit_rejections=self.circuit_rejections,
                latency_seconds_sum=self.latency_sum,
                latency_count=self.latency_count,
                latency_buckets=tuple(cumulative),
                circuit_state=None if breaker is None else breaker.state,
                circuit_times_opened=0 if breaker is None else breaker.times_opened,
            )


# --- one call: its endpoint, its retry state -------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Endpoint:
    name: str
    method: Literal["GET", "POST"]
    path: str
    idempotent: bool


_PREDICT: Final = _Endpoint("predict", "POST", "/api/predict/query-execution", idempotent=True)
_VALIDATE: Final = _Endpoint("validate", "POST", "/api/validate/prediction", idempotent=False)
_TRAIN: Final = _Endpoint("train", "POST", "/api/train/performance-model", idempotent=False)
_HEALTH: Final = _Endpoint("health", "GET", "/api/health", idempotent=True)

_Verdict = Literal["success", "failure", "neutral"]


class _AttemptError(Exception):
    """One attempt failed; carries what to raise if it is not retried (internal only)."""

    def __init__(
        self,
        kind: type[MLServiceError],
        message: str,
        *,
        retryable: bool,
        verdict: _Verdict,
        status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.verdict = verdict
        self.status = status
        self.body = body
        self.retry_after = retry_after

    def to_error(self, endpoint: str, attempts: int, why_stopped: str) -> MLServiceError:
        message = self.message if not why_stopped else f"{self.message}; {why_stopped}"
        return self.kind(
            message, endpoint=endpoint, attempts=attempts, status=self.status, body=self.body
        )


@dataclass(frozen=True, slots=True)
class _RetryPolicy:
    retries: int
    initial: float
    multiplier: float
    jitter: float  # absolute seconds, added by stamina: random(0, jitter)
    max_backoff: float

    def longest_wait(self, retry_number: int) -> float:
        try:
            wait = self.initial * self.multiplier ** (retry_number - 1) + self.jitter
        except OverflowError:
            return self.max_backoff
        return min(self.max_backoff, wait)


class _Call:
    """The state of one client call across its attempts; its ``should_retry`` is stamina's hook."""

    def __init__(
        self,
        endpoint: _Endpoint,
        policy: _RetryPolicy,
        deadline: float | None,
        breaker: CircuitBreaker | None,
    ) -> None:
        self.endpoint = endpoint
        self.policy = policy
        self.breaker = breaker
        self.started = time.monotonic()
        self.deadline = deadline
        self.attempts = 0
        self.why_stopped = ""

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - (time.monotonic() - self.started)

    def should_retry(self, exc: Exception) -> bool | float:
        if not isinstance(exc, _AttemptError) or not exc.retryable:
            return False
        if self.attempts > self.policy.retries:
            self.why_stopped = "retries exhausted"
            return False
        if self.breaker is not None and self.breaker.state is CircuitState.OPEN:
            self.why_stopped = "the circuit breaker opened"
            return False
        if exc.retry_after is not None:
            wait = min(exc.retry_after, self.policy.max_backoff)
        else:
            wait = self.policy.longest_wait(self.attempts)
        remaining = self.remaining()
        if remaining is not None and wait >= remaining:
            self.why_stopped = f"deadline of {self.deadline:.3g} s reached"
            return False
        return wait if exc.retry_after is not None else True


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); ``None`` if absent."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _excerpt(text: str) -> str:
    return text if len(text) <= _BODY_EXCERPT else text[:_BODY_EXCERPT] + "..."


def _classify_transport_error(exc: Exception, endpoint: _Endpoint) -> _AttemptError:
    """What an httpx exception means for retries and for the breaker."""
    name = type(exc).__name__
    detail = f"{name}: {exc}" if str(exc) else name
    if isinstance(exc, httpx.PoolTimeout):
        return _AttemptError(
            MLServiceUnavailable,
            f"no free connection in the local pool ({detail})",
            retryable=False,
            verdict="neutral",
        )
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return _AttemptError(
            MLServiceUnavailable, f"cannot connect ({detail})", retryable=True, verdict="failure"
        )
    sent_maybe = (
        httpx.ReadTimeout,
        httpx.WriteTimeout,
        httpx.ReadError,
        httpx.WriteError,
        httpx.RemoteProtocolError,
    )
    if isinstance(exc, sent_maybe):
        why = "" if endpoint.idempotent else "; not retried: the request may have been processed"
        return _AttemptError(
            MLServiceUnavailable,
            f"no complete answer ({detail}){why}",
            retryable=endpoint.idempotent,
            verdict="failure",
        )
    if isinstance(exc, httpx.DecodingError):
        return _AttemptError(
            MLServiceResponseError,
            f"undecodable answer ({detail})",
            retryable=False,
            verdict="success",
        )
    return _AttemptError(MLServiceError, detail, retryable=False, verdict="neutral")


def _parse_answer(response: httpx.Response, endpoint: _Endpoint, model: type[_M]) -> _M:
    """The answer as ``model``, or raise :class:`_AttemptError` for a failure status."""
    status = response.status_code
    if 200 <= status < 300:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)[:3]
            )
            raise _AttemptError(
                MLServiceResponseError,
                f"invalid {model.__name__} answer ({problems})",
                retryable=False,
                verdict="success",
                status=status,
                body=_excerpt(response.text),
            ) from None
    body = _excerpt(response.text)
    if status in _RETRYABLE_STATUSES:
        retry_after = (
            _retry_after_seconds(response.headers.get("retry-after"))
            if status in _RETRY_AFTER_STATUSES
            else None
        )
        why = "" if endpoint.idempotent else "; not retried: the request may have been processed"
        raise _AttemptError(
            MLServiceUnavailable,
            f"HTTP {status}{why}",
            retryable=endpoint.idempotent,
            verdict="failure",
            status=status,
            body=body,
            retry_after=retry_after,
        )
    raise _AttemptError(
        MLServiceError,
        f"HTTP {status}",
        retryable=False,
        verdict="success",
        status=status,
        body=body,
    )


# --- configuration shared by both clients ----------------------------------------------------


def _seconds(value: float | timedelta, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"{name}={value!r}: expected seconds (a number) or a timedelta")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{name}={value!r}: expected a positive duration")
    return float(seconds)


def _optional_seconds(value: float | timedelta | None, name: str) -> float | None:
    return None if value is None else _seconds(value, name)


class _ClientBase:
    """Configuration, request bodies, retries and statistics shared by both clients."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        base_url: str | None = None,
        deadline: float | timedelta | None = None,
        jitter: float = 0.1,
        max_backoff: float | timedelta = 5.0,
        pool_timeout: float | timedelta | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        settings = Settings.load() if settings is None else settings
        url = settings.ml_service_url if base_url is None else base_url
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"base_url={url!r}: not a valid URL ({exc})") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"base_url={url!r}: expected an http:// or https:// URL with a host")
        if isinstance(jitter, bool) or not isinstance(jitter, int | float):
            raise TypeError(f"jitter={jitter!r}: expected a fraction between 0 and 1")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter={jitter!r}: expected a fraction between 0 and 1")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker={breaker!r}: expected a CircuitBreaker or None")
        self.base_url = str(parsed).rstrip("/")
        self.settings = settings
        initial = settings.retry_initial_backoff.total_seconds()
        self._policy = _RetryPolicy(
            retries=settings.retry_max_attempts,
            initial=initial,
            multiplier=settings.retry_backoff_multiplier,
            jitter=jitter * initial,
            max_backoff=_seconds(max_backoff, "max_backoff"),
        )
        self._deadline = _optional_seconds(deadline, "deadline")
        self._request_timeout = settings.ml_service_timeout.total_seconds()
        self._connect_timeout = settings.http_dial_timeout.total_seconds()
        self._pool_timeout = (
            self._request_timeout
            if pool_timeout is None
            else _seconds(pool_timeout, "pool_timeout")
        )
        self.breaker = breaker
        self._stats = _Stats()
        self._limits = httpx.Limits(
            max_connections=settings.max_http_conns,
            max_keepalive_connections=settings.max_http_conns_per_host,
            keepalive_expiry=settings.http_idle_conn_timeout.total_seconds(),
        )
        self._timeout = httpx.Timeout(
            self._request_timeout, connect=self._connect_timeout, pool=self._pool_timeout
        )
        self._connect()

    def _connect(self) -> None:
        """Create the pooled httpx client (sync or async: the subclass decides)."""
        raise NotImplementedError

    def stats(self) -> MLClientStats:
        """A snapshot of the counters (calls, requests, retries, failures, latency, breaker)."""
        return self._stats.snapshot(self.breaker)

    def _new_call(self, endpoint: _Endpoint, deadline: float | timedelta | None) -> _Call:
        limit = self._deadline if deadline is None else _seconds(deadline, "deadline")
        return _Call(endpoint, self._policy, limit, self.breaker)

    def _retrying(self, call: _Call) -> Any:
        policy = self._policy
        return stamina.retry_context(
            on=call.should_retry,
            attempts=policy.retries + 1,
            timeout=None,  # the deadline is enforced by _Call.should_retry and the timeouts
            wait_initial=policy.initial,
            wait_max=policy.max_backoff,
            wait_jitter=policy.jitter,
            wait_exp_base=policy.multiplier,
        )

    def _attempt_timeout(self, call: _Call) -> httpx.Timeout:
        """The configured timeouts, cut to the time left before the call's deadline."""
        remaining = call.remaining()
        if remaining is None:
            return self._timeout
        if remaining <= 0:
            raise _AttemptError(
                MLServiceUnavailable,
                f"deadline of {call.deadline:.3g} s reached",
                retryable=False,
                verdict="neutral",
            )
        return httpx.Timeout(
            min(self._request_timeout, remaining),
            connect=min(self._connect_timeout, remaining),
            pool=min(self._pool_timeout, remaining),
        )

    def _begin_attempt(self, call: _Call) -> httpx.Timeout:
        timeout = self._attempt_timeout(call)
        if self.breaker is not None:
            self.breaker.before_attempt(call.endpoint.name)
        call.attempts += 1
        return timeout

    def _record_verdict(self, verdict: _Verdict) -> None:
        if self.breaker is None:
            return
        if verdict == "success":
            self.breaker.record_success()
        elif verdict == "failure":
            self.breaker.record_failure()
        else:
            self.breaker.record_neutral()

    def _finish(self, call: _Call, error: BaseException | None) -> None:
        self._stats.call_done(call.attempts, time.monotonic() - call.started, error)

    @staticmethod
    def _final_error(call: _Call, failed: _AttemptError) -> MLServiceError:
        return failed.to_error(call.endpoint.name, call.attempts, call.why_stopped)

    @staticmethod
    def _predict_body(
        features: QueryFeatures,
        scenario: str,
        model_id: str | None,
        parameters: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        _check_scenario(scenario)
        if model_id is not None and not isinstance(model_id, str):
            raise TypeError(f"model_id={model_id!r}: expected a str or None")
        return {
            "query_hash": features.query_hash,
            "features": features.model_dump(mode="json"),
            "parameters": _check_parameters(parameters),
            "scenario": scenario,
            "model_id": model_id,
        }

    @staticmethod
    def _validate_body(
        query_hash: int, prediction: Prediction, actual_execution_time_ms: float
    ) -> dict[str, Any]:
        if isinstance(actual_execution_time_ms, bool) or not isinstance(
            actual_execution_time_ms, int | float
        ):
            raise TypeError(
                f"actual_execution_time_ms={actual_execution_time_ms!r}: expected a number"
            )
        if not (math.isfinite(actual_execution_time_ms) and actual_execution_time_ms >= 0):
            raise ValueError(
                f"actual_execution_time_ms={actual_execution_time_ms!r}: expected a finite"
                " number >= 0"
            )
        return {
            "query_hash": query_hash,
            "predicted_execution_time_ms": prediction.predicted_execution_time_ms,
            "actual_execution_time_ms": float(actual_execution_time_ms),
            "confidence_interval": {
                "lower_bound_ms": prediction.range_min_ms,
                "upper_bound_ms": prediction.range_max_ms,
            },
            "model_version": prediction.model_version,
        }

    @staticmethod
    def _train_body(
        training_data: Sequence[QueryFeatures],
        model_type: str,
        parameters: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        if not isinstance(model_type, str) or not model_type:
            raise ValueError(f"model_type={model_type!r}: expected a non-empty str")
        return {
            "model_type": model_type,
            "features": [features.model_dump(mode="json") for features in training_data],
            "parameters": _check_parameters(parameters),
        }


def _check_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """``parameters`` as a dict that JSON can carry (ValueError naming it otherwise)."""
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise TypeError(f"parameters={parameters!r}: expected a mapping or None")
    try:
        json.dumps(parameters, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parameters={parameters!r}: not sendable as JSON ({exc})") from None
    return dict(parameters)


def _with_digest(prediction: Prediction, features: QueryFeatures, scenario: str) -> Prediction:
    """The service's answer, completed with what the client knows about the question."""
    return prediction.model_copy(
        update={
            "features_digest": features_digest(features),
            "query_hash": features.query_hash,
            "scenario": prediction.scenario or scenario,
        }
    )


# --- the clients -----------------------------------------------------------------------------


class MLClient(_ClientBase):
    """A pooled, retrying client of the ML service (blocking; thread-safe).

    ``settings`` (default ``Settings()``) gives the URL, the pool
    (``MAX_HTTP_CONNS`` connections, ``MAX_HTTP_CONNS_PER_HOST`` kept alive for
    ``HTTP_IDLE_CONN_TIMEOUT``), the connect timeout (``HTTP_DIAL_TIMEOUT``), the per-request
    timeout (``ML_SERVICE_TIMEOUT``) and the retry policy. ``deadline`` bounds a whole call,
    retries and waits included (``None``: bounded only by the retries and timeouts; each method
    also takes its own ``deadline``). ``jitter`` is the fraction of the initial backoff added
    at random to each wait (0 turns it off). ``max_backoff`` caps every wait, ``Retry-After``
    included. ``pool_timeout`` is how long to wait for a free connection (default: the request
    timeout). Use as a context manager or call :meth:`close`.
    """

    _http: httpx.Client

    def _connect(self) -> None:
        self._http = httpx.Client(
            base_url=self.base_url, limits=self._limits, timeout=self._timeout
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._http.is_closed

    def close(self) -> None:
        """Close the pooled connections (idempotent)."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def predict(
        self,
        features: QueryFeatures,
        *,
        scenario: str = "current",
        model_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        deadline: float | timedelta | None = None,
    ) -> Prediction:
        """The predicted execution time of the query ``features`` describe."""
        body = self._predict_body(features, scenario, model_id, parameters)
        prediction = self._request(_PREDICT, body, Prediction, deadline)
        return _with_digest(prediction, features, scenario)

    def validate_prediction(
        self,
        query_hash: int,
        prediction: Prediction,
        actual_execution_time_ms: float,
        *,
        deadline: float | timedelta | None = None,
    ) -> PredictionValidation:
        """Report the measured execution time of a predicted query; the service scores it."""
        body = self._validate_body(query_hash, prediction, actual_execution_time_ms)
        return self._request(_VALIDATE, body, PredictionValidation, deadline)

    def train_model(
        self,
        training_data: Sequence[QueryFeatures] = (),
        *,
        model_type: str = "performance",
        parameters: Mapping[str, Any] | None = None,
        deadline: float | timedelta | None = None,
    ) -> TrainingJob:
        """Ask the service to (re)train its performance model on ``training_data``."""
        body = self._train_body(training_data, model_type, parameters)
        return self._request(_TRAIN, body, TrainingJob, deadline)

    def health(self, *, deadline: float | timedelta | None = None) -> ServiceHealth:
        """The service's health report."""
        return self._request(_HEALTH, None, ServiceHealth, deadline)

    def _request(
        self,
        endpoint: _Endpoint,
        body: dict[str, Any] | None,
        model: type[_M],
        deadline: float | timedelta | None,
    ) -> _M:
        call = self._new_call(endpoint, deadline)
        error: BaseException | None = None
        try:
            for attempt in self._retrying(call):
                with attempt:
                    return self._attempt(call, body, model)
            raise AssertionError("unreachable: stamina either returns or raises")
        except _AttemptError as failed:
            error = self._final_error(call, failed)
            raise error from failed.__cause__
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish(call, error)

    def _attempt(self, call: _Call, body: dict[str, Any] | None, model: type[_M]) -> _M:
        timeout = self._begin_attempt(call)
        verdict: _Verdict = "neutral"
        try:
            try:
                self._stats.request_sent()
                response = self._http.request(
                    call.endpoint.method, call.endpoint.path, json=body, timeout=timeout
                )
            except httpx.HTTPError as exc:
                failed = _classify_transport_error(exc, call.endpoint)
                verdict = failed.verdict
                raise failed from exc
            try:
                answer = _parse_answer(response, call.endpoint, model)
            except _AttemptError as failed:
                verdict = failed.verdict
                raise
            verdict = "success"
            return answer
        finally:
            self._record_verdict(verdict)


class AsyncMLClient(_ClientBase):
    """The asyncio twin of :class:`MLClient` (same arguments, same behaviour, awaitable calls).

    Use as an async context manager or await :meth:`aclose`. Cancelling a call cancels its
    current attempt or wait and is never retried.
    """

    _http: httpx.AsyncClient

    def _connect(self) -> None:
        self._http = httpx.AsyncClient(
            base_url=self.base_url, limits=self._limits, timeout=self._timeout
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._http.is_closed

    async def aclose(self) -> None:
        """Close the pooled connections (idempotent)."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def predict(
        self,
        features: QueryFeatures,
        *,
        scenario: str = "current",
        model_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        deadline: float | timedelta | None = None,
    ) -> Prediction:
        """The predicted execution time of the query ``features`` describe."""
        body = self._predict_body(features, scenario, model_id, parameters)
        prediction = await self._request(_PREDICT, body, Prediction, deadline)
        return _with_digest(prediction, features, scenario)

    async def validate_prediction(
        self,
        query_hash: int,
        prediction: Prediction,
        actual_execution_time_ms: float,
        *,
        deadline: float | timedelta | None = None,
    ) -> PredictionValidation:
        """Report the measured execution time of a predicted query; the service scores it."""
        body = self._validate_body(query_hash, prediction, actual_execution_time_ms)
        return await self._request(_VALIDATE, body, PredictionValidation, deadline)

    async def train_model(
        self,
        training_data: Sequence[QueryFeatures] = (),
        *,
        model_type: str = "performance",
        parameters: Mapping[str, Any] | None = None,
        deadline: float | timedelta | None = None,
    ) -> TrainingJob:
        """Ask the service to (re)train its performance model on ``training_data``."""
        body = self._train_body(training_data, model_type, parameters)
        return await self._request(_TRAIN, body, TrainingJob, deadline)

    async def health(self, *, deadline: float | timedelta | None = None) -> ServiceHealth:
        """The service's health report."""
        return await self._request(_HEALTH, None, ServiceHealth, deadline)

    async def _request(
        self,
        endpoint: _Endpoint,
        body: dict[str, Any] | None,
        model: type[_M],
        deadline: float | timedelta | None,
    ) -> _M:
        call = self._new_call(endpoint, deadline)
        error: BaseException | None = None
        try:
            async for attempt in self._retrying(call):
                with attempt:
                    return await self._attempt(call, body, model)
            raise AssertionError("unreachable: stamina either returns or raises")
        except _AttemptError as failed:
            error = self._final_error(call, failed)
            raise error from failed.__cause__
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish(call, error)

    async def _attempt(self, call: _Call, body: dict[str, Any] | None, model: type[_M]) -> _M:
        timeout = self._begin_attempt(call)
        verdict: _Verdict = "neutral"
        try:
            try:
                self._stats.request_sent()
                response = await self._http.request(
                    call.endpoint.method, call.endpoint.path, json=body, timeout=timeout
                )
            except httpx.HTTPError as exc:
                failed = _classify_transport_error(exc, call.endpoint)
                verdict = failed.verdict
                raise failed from exc
            try:
                answer = _parse_answer(response, call.endpoint, model)
            except _AttemptError as failed:
                verdict = failed.verdict
                raise
            verdict = "success"
            return answer
        finally:
            self._record_verdict(verdict)


# --- cached predictions ----------------------------------------------------------------------


def features_digest(features: QueryFeatures) -> str:
    """A stable digest of what ``features`` say (``collected_at`` excluded: when they were
    read does not change what they predict). Equal statistics give equal digests in every
    process; any changed feature gives another digest."""
    canonical = features.model_dump_json(exclude={"collected_at"})
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


PredictorKey = tuple[int, str, str | None, str]


def _predictor_key(features: QueryFeatures, scenario: str, model_id: str | None) -> PredictorKey:
    """``(query_hash, scenario, model_id, digest)``: the manager's prediction key (see
    :func:`pgcache.manager.prediction_cache_key`) plus :func:`features_digest`, so
    :meth:`pgcache.CacheManager.invalidate_query` finds it and changed features miss."""
    return (features.query_hash, scenario, model_id, features_digest(features))


class _PredictionStore:
    """Where predictions live: a plain Cache, or a CacheManager's ``"predictions"`` cache."""

    def __init__(self, cache_or_manager: Cache[Any, Any] | CacheManager) -> None:
        if isinstance(cache_or_manager, Cache):
            self._manager: CacheManager | None = None
            self.cache: Cache[Any, Any] = cache_or_manager
        elif callable(getattr(cache_or_manager, "cache", None)):
            self._manager = cache_or_manager
            self.cache = cache_or_manager.cache("predictions")
        else:
            raise TypeError(
                f"cache_or_manager={cache_or_manager!r}: expected a pgcache.Cache or a "
                "pgcache.CacheManager"
            )

    def enabled(self, query_hash: int, scenario: str, model_id: str | None) -> bool:
        """Whether to cache; a disabled manager still counts the miss in its metrics."""
        if self._manager is None or self._manager.enabled:
            return True
        self._manager.get_prediction(query_hash, scenario, model_id)
        return False


class CachedPredictor:
    """Predictions for queries by hash: features from ``extractor``, predictions from ``client``.

    ``extractor`` is any :class:`pgcache.features.FeatureExtractor` (typically a
    :class:`pgcache.features.CachedFeatureExtractor`). Predictions are kept in
    ``cache_or_manager`` (a :class:`pgcache.Cache` or a :class:`pgcache.CacheManager`, then its
    ``"predictions"`` cache, whose TTL is 5 minutes by default) under the key
    ``(query_hash, scenario, model_id, features_digest(features))``: the manager's prediction
    key plus :func:`features_digest`, so :meth:`pgcache.CacheManager.invalidate_query` removes
    them, a repeated call makes no HTTP request, and changed features are never answered with
    the prediction made for the old ones.
    Concurrent misses of one key from many threads make
    one request (``Cache.get_or_set``). Errors are raised and never cached.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        client: MLClient,
        cache_or_manager: Cache[Any, Any] | CacheManager,
    ) -> None:
        if not isinstance(client, MLClient):
            raise TypeError(f"client={client!r}: expected a pgcache.MLClient")
        self.extractor = extractor
        self.client = client
        self._store = _PredictionStore(cache_or_manager)

    @property
    def cache(self) -> Cache[Any, Any]:
        """The cache the predictions are kept in."""
        return self._store.cache

    def predict_query(
        self, query_hash: int, scenario: str = "current", *, model_id: str | None = None
    ) -> Prediction:
        """The prediction for ``query_hash``'s current features, from the cache when it has it."""
        scenario = _check_scenario(scenario)
        model_id = _check_model_id(model_id)
        features = self.extractor.extract_query_features(query_hash, scenario)
        if not self._store.enabled(features.query_hash, scenario, model_id):
            return self.client.predict(features, scenario=scenario, model_id=model_id)
        key = _predictor_key(features, scenario, model_id)
        prediction: Prediction = self._store.cache.get_or_set(
            key, lambda: self.client.predict(features, scenario=scenario, model_id=model_id)
        )
        return prediction


class AsyncCachedPredictor:
    """The asyncio twin of :class:`CachedPredictor` (an async extractor and
    :class:`AsyncMLClient`; concurrent misses of one key on one event loop make one request)."""

    def __init__(
        self,
        extractor: AsyncFeatureExtractor,
        client: AsyncMLClient,
        cache_or_manager: Cache[Any, Any] | CacheManager,
    ) -> None:
        if not isinstance(client, AsyncMLClient):
            raise TypeError(f"client={client!r}: expected a pgcache.AsyncMLClient")
        self.extractor = extractor
        self.client = client
        self._store = _PredictionStore(cache_or_manager)
        self._flight: AsyncSingleFlight[PredictorKey, Prediction] = AsyncSingleFlight()

    @property
    def cache(self) -> Cache[Any, Any]:
        """The cache the predictions are kept in."""
        return self._store.cache

    async def predict_query(
        self, query_hash: int, scenario: str = "current", *, model_id: str | None = None
    ) -> Prediction:
        """The prediction for ``query_hash``'s current features, from the cache when it has it."""
        scenario = _check_scenario(scenario)
        model_id = _check_model_id(model_id)
        features = await self.extractor.extract_query_features(query_hash, scenario)
        if not self._store.enabled(features.query_hash, scenario, model_id):
            return await self.client.predict(features, scenario=scenario, model_id=model_id)
        key = _predictor_key(features, scenario, model_id)
        cached: Prediction | None = self._store.cache.get(key)
        if cached is not None:
            return cached

        async def predict_and_store() -> Prediction:
            prediction = await self.client.predict(features, scenario=scenario, model_id=model_id)
            self._store.cache.set(key, prediction)
            return prediction

        return await self._flight.run(key, predict_and_store)
