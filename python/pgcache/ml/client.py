"""The pooled, retrying HTTP clients of the ML service (sync and asyncio)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import httpx
import stamina
from pydantic import BaseModel

from pgcache._validate import (
    check_model_id,
    check_optional_seconds,
    check_scenario,
    check_seconds,
)
from pgcache.errors import MLServiceUnavailable
from pgcache.ml.models import (
    Prediction,
    PredictionValidation,
    ServiceHealth,
    TrainingJob,
    features_digest,
)
from pgcache.ml.retry import (
    HEALTH,
    PREDICT,
    TRAIN,
    VALIDATE,
    AttemptError,
    Call,
    Endpoint,
    RetryPolicy,
    Verdict,
    call_deadline,
    classify_transport_error,
    deadline_transport,
    parse_answer,
)
from pgcache.ml.stats import MLClientStats, Stats
from pgcache.resilience.breaker import CircuitBreaker

if TYPE_CHECKING:
    from pgcache.config import Settings
    from pgcache.postgres.features import QueryFeatures

_M = TypeVar("_M", bound=BaseModel)


# --- configuration shared by both clients ----------------------------------------------------


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
        if settings is None:
            from pgcache.config import Settings  # pgcache[config]: only when none is given

            settings = Settings.load()
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
        self._policy = RetryPolicy(
            retries=settings.retry_max_attempts,
            initial=initial,
            multiplier=settings.retry_backoff_multiplier,
            jitter=jitter * initial,
            max_backoff=check_seconds("max_backoff", max_backoff),
        )
        self._request_timeout = settings.ml_service_timeout.total_seconds()
        self._deadline = check_optional_seconds("deadline", deadline) or self._request_timeout
        self._connect_timeout = settings.http_dial_timeout.total_seconds()
        self._pool_timeout = (
            self._request_timeout
            if pool_timeout is None
            else check_seconds("pool_timeout", pool_timeout)
        )
        self.breaker = breaker
        self._stats = Stats()
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

    def _new_call(self, endpoint: Endpoint, deadline: float | timedelta | None) -> Call:
        limit = self._deadline if deadline is None else check_seconds("deadline", deadline)
        return Call(endpoint, self._policy, limit, self.breaker)

    def _retrying(self, call: Call) -> Any:
        policy = self._policy
        return stamina.retry_context(
            on=call.should_retry,
            attempts=policy.retries + 1,
            timeout=None,  # the deadline is enforced by Call.should_retry and the timeouts
            wait_initial=policy.initial,
            wait_max=policy.max_backoff,
            wait_jitter=policy.jitter,
            wait_exp_base=policy.multiplier,
        )

    def _attempt_timeout(self, call: Call) -> httpx.Timeout:
        """The configured timeouts, cut to the time left before the call's deadline (which
        also bounds the attempt as a whole: see :func:`pgcache.ml.retry.call_deadline`)."""
        remaining = call.remaining()
        if remaining is None:
            return self._timeout
        if remaining <= 0:
            raise _deadline_reached(call)
        return httpx.Timeout(
            min(self._request_timeout, remaining),
            connect=min(self._connect_timeout, remaining),
            pool=min(self._pool_timeout, remaining),
        )

    @contextmanager
    def _calling(self, endpoint: Endpoint, deadline: float | timedelta | None) -> Iterator[Call]:
        """One call across its attempts: the last attempt's error becomes the
        :class:`MLServiceError` raised, and the call is counted however it ends."""
        call = self._new_call(endpoint, deadline)
        error: BaseException | None = None
        try:
            yield call
        except AttemptError as failed:
            error = failed.to_error(call.endpoint.name, call.attempts, call.why_stopped)
            raise error from failed.__cause__
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._stats.call_done(call.attempts, time.monotonic() - call.started, error)

    @contextmanager
    def _attempting(self, call: Call) -> Iterator[httpx.Timeout]:
        """One attempt, given its timeouts: the breaker is asked before it and told its
        verdict after it (success if the body returns, the error's own verdict if it raises
        an :class:`AttemptError`, neutral otherwise)."""
        timeout = self._attempt_timeout(call)
        if self.breaker is not None:
            self.breaker.before_attempt(call.endpoint.name)
        call.attempts += 1
        verdict: Verdict = "neutral"
        try:
            self._stats.request_sent()
            yield timeout
            verdict = "success"
        except AttemptError as failed:
            verdict = failed.verdict
            raise
        finally:
            self._record_verdict(verdict)

    def _record_verdict(self, verdict: Verdict) -> None:
        if self.breaker is None:
            return
        if verdict == "success":
            self.breaker.record_success()
        elif verdict == "failure":
            self.breaker.record_failure()
        else:
            self.breaker.record_neutral()

    @staticmethod
    def _predict_body(
        features: QueryFeatures,
        scenario: str,
        model_id: str | None,
        parameters: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        check_scenario(scenario)
        check_model_id(model_id)
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


# The asyncio bound of a whole attempt fires this long after httpx's own timeout would: when
# httpx's fires (a slow phase), its error says which wait ran out.
_ASYNC_BOUND_SLACK: Final = 0.25


def _whole_attempt_bound(call: Call) -> float | None:
    remaining = call.remaining()
    return None if remaining is None else remaining + _ASYNC_BOUND_SLACK


def _deadline_reached(call: Call, verdict: Verdict = "neutral") -> AttemptError:
    """The call's deadline passed: before an attempt (neutral for the breaker) or during one
    (``verdict="failure"``: the service did not answer in time)."""
    return AttemptError(
        MLServiceUnavailable,
        f"deadline of {call.deadline:.3g} s reached",
        retryable=False,
        verdict=verdict,
    )


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
    ``HTTP_IDLE_CONN_TIMEOUT``), the connect timeout (``HTTP_DIAL_TIMEOUT``), the timeout
    (``ML_SERVICE_TIMEOUT``) and the retry policy. ``deadline`` bounds a whole call: every
    attempt, every wait between attempts and every byte of every answer (default
    ``ML_SERVICE_TIMEOUT``; each method also takes its own ``deadline``). No single wait for the
    network lasts longer than ``ML_SERVICE_TIMEOUT`` either, so under a longer ``deadline`` a
    stuck attempt is retried. ``jitter`` is the fraction of the initial backoff added
    at random to each wait (0 turns it off). ``max_backoff`` caps every wait, ``Retry-After``
    included. ``pool_timeout`` is how long to wait for a free connection (default: the request
    timeout). Use as a context manager or call :meth:`close`.
    """

    _http: httpx.Client

    def _connect(self) -> None:
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=deadline_transport(self._limits),
            timeout=self._timeout,
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
        prediction = self._request(PREDICT, body, Prediction, deadline)
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
        return self._request(VALIDATE, body, PredictionValidation, deadline)

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
        return self._request(TRAIN, body, TrainingJob, deadline)

    def health(self, *, deadline: float | timedelta | None = None) -> ServiceHealth:
        """The service's health report."""
        return self._request(HEALTH, None, ServiceHealth, deadline)

    def _request(
        self,
        endpoint: Endpoint,
        body: dict[str, Any] | None,
        model: type[_M],
        deadline: float | timedelta | None,
    ) -> _M:
        with self._calling(endpoint, deadline) as call:
            for attempt in self._retrying(call):
                with attempt:
                    return self._attempt(call, body, model)
        raise AssertionError("unreachable: stamina either returns or raises")

    def _attempt(self, call: Call, body: dict[str, Any] | None, model: type[_M]) -> _M:
        with self._attempting(call) as timeout:
            try:
                with call_deadline(call):
                    response = self._http.request(
                        call.endpoint.method, call.endpoint.path, json=body, timeout=timeout
                    )
            except httpx.HTTPError as exc:
                raise classify_transport_error(exc, call.endpoint) from exc
            return parse_answer(response, call.endpoint, model)


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
        prediction = await self._request(PREDICT, body, Prediction, deadline)
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
        return await self._request(VALIDATE, body, PredictionValidation, deadline)

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
        return await self._request(TRAIN, body, TrainingJob, deadline)

    async def health(self, *, deadline: float | timedelta | None = None) -> ServiceHealth:
        """The service's health report."""
        return await self._request(HEALTH, None, ServiceHealth, deadline)

    async def _request(
        self,
        endpoint: Endpoint,
        body: dict[str, Any] | None,
        model: type[_M],
        deadline: float | timedelta | None,
    ) -> _M:
        with self._calling(endpoint, deadline) as call:
            async for attempt in self._retrying(call):
                with attempt:
                    return await self._attempt(call, body, model)
        raise AssertionError("unreachable: stamina either returns or raises")

    async def _attempt(self, call: Call, body: dict[str, Any] | None, model: type[_M]) -> _M:
        with self._attempting(call) as timeout:
            try:
                async with asyncio.timeout(_whole_attempt_bound(call)):
                    response = await self._http.request(
                        call.endpoint.method, call.endpoint.path, json=body, timeout=timeout
                    )
            except TimeoutError:  # the whole attempt, trickled answer included, hit the deadline
                raise _deadline_reached(call, verdict="failure") from None
            except httpx.HTTPError as exc:
                raise classify_transport_error(exc, call.endpoint) from exc
            return parse_answer(response, call.endpoint, model)
