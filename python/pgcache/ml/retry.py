"""One call to the ML service across its attempts: endpoints, retry policy, the call's deadline
(cut into every network wait), classification of failures."""

from __future__ import annotations

import contextvars
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal, TypeVar

import httpcore
import httpx
from httpcore import SOCKET_OPTION
from pydantic import BaseModel, ValidationError

from pgcache._validate import validation_text
from pgcache.errors import MLServiceError, MLServiceResponseError, MLServiceUnavailable
from pgcache.resilience.breaker import CircuitBreaker, CircuitState

_M = TypeVar("_M", bound=BaseModel)

RETRYABLE_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
BODY_EXCERPT: Final = 200

# --- one call: its endpoint, its retry state -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    method: Literal["GET", "POST"]
    path: str
    idempotent: bool


PREDICT: Final = Endpoint("predict", "POST", "/api/predict/query-execution", idempotent=True)
VALIDATE: Final = Endpoint("validate", "POST", "/api/validate/prediction", idempotent=False)
TRAIN: Final = Endpoint("train", "POST", "/api/train/performance-model", idempotent=False)
HEALTH: Final = Endpoint("health", "GET", "/api/health", idempotent=True)

Verdict = Literal["success", "failure", "neutral"]


class AttemptError(Exception):
    """One attempt failed; carries what to raise if it is not retried (internal only)."""

    def __init__(
        self,
        kind: type[MLServiceError],
        message: str,
        *,
        retryable: bool,
        verdict: Verdict,
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
class RetryPolicy:
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


class Call:
    """The state of one client call across its attempts; its ``should_retry`` is stamina's hook."""

    def __init__(
        self,
        endpoint: Endpoint,
        policy: RetryPolicy,
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
        if not isinstance(exc, AttemptError) or not exc.retryable:
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


# The deadline of the call the current thread is making with the blocking client.
_CALL_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "pgcache_ml_call_deadline", default=None
)


@contextmanager
def call_deadline(call: Call) -> Iterator[None]:
    """Within it, every network wait of :class:`DeadlineBackend` ends by ``call``'s deadline."""
    remaining = call.remaining()
    token = _CALL_DEADLINE.set(None if remaining is None else time.monotonic() + remaining)
    try:
        yield
    finally:
        _CALL_DEADLINE.reset(token)


def _cut(timeout: float | None, error: type[httpcore.TimeoutException]) -> float | None:
    deadline = _CALL_DEADLINE.get()
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise error("the call's deadline was reached")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _cut(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _cut(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _cut(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's blocking network backend, each wait cut to the current call's deadline.

    httpcore gives every read one timeout, so a server that trickles its answer a byte at a
    time is never caught by it. Cutting each read (of the head and of the body), write and
    connect to the time left before :func:`call_deadline`'s deadline bounds the whole call.
    (The asyncio client bounds its attempts with ``asyncio.timeout`` instead.)
    """

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _cut(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _cut(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def deadline_transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """An httpx transport whose connections use :class:`DeadlineBackend`."""
    transport = httpx.HTTPTransport(limits=limits)
    # httpx offers no way to give its pool a network backend; its pool is httpcore's public
    # ConnectionPool, built here as HTTPTransport builds it (no proxy), with the backend.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=DeadlineBackend(),
    )
    return transport


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


def _not_retried(endpoint: Endpoint) -> str:
    """Why a failure the service may have processed is not retried (nothing when it is)."""
    return "" if endpoint.idempotent else "; not retried: the request may have been processed"


def excerpt(text: str) -> str:
    return text if len(text) <= BODY_EXCERPT else text[:BODY_EXCERPT] + "..."


def classify_transport_error(exc: Exception, endpoint: Endpoint) -> AttemptError:
    """What an httpx exception means for retries and for the breaker."""
    name = type(exc).__name__
    detail = f"{name}: {exc}" if str(exc) else name
    if isinstance(exc, httpx.PoolTimeout):
        return AttemptError(
            MLServiceUnavailable,
            f"no free connection in the local pool ({detail})",
            retryable=False,
            verdict="neutral",
        )
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return AttemptError(
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
        return AttemptError(
            MLServiceUnavailable,
            f"no complete answer ({detail}){_not_retried(endpoint)}",
            retryable=endpoint.idempotent,
            verdict="failure",
        )
    if isinstance(exc, httpx.DecodingError):
        return AttemptError(
            MLServiceResponseError,
            f"undecodable answer ({detail})",
            retryable=False,
            verdict="success",
        )
    return AttemptError(MLServiceError, detail, retryable=False, verdict="neutral")


def parse_answer(response: httpx.Response, endpoint: Endpoint, model: type[_M]) -> _M:
    """The answer as ``model``, or raise :class:`AttemptError` for a failure status."""
    status = response.status_code
    if 200 <= status < 300:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise AttemptError(
                MLServiceResponseError,
                f"invalid {model.__name__} answer ({validation_text(exc, limit=3)})",
                retryable=False,
                verdict="success",
                status=status,
                body=excerpt(response.text),
            ) from None
    body = excerpt(response.text)
    if status in RETRYABLE_STATUSES:
        retry_after = (
            _retry_after_seconds(response.headers.get("retry-after"))
            if status in RETRY_AFTER_STATUSES
            else None
        )
        raise AttemptError(
            MLServiceUnavailable,
            f"HTTP {status}{_not_retried(endpoint)}",
            retryable=endpoint.idempotent,
            verdict="failure",
            status=status,
            body=body,
            retry_after=retry_after,
        )
    raise AttemptError(
        MLServiceError,
        f"HTTP {status}",
        retryable=False,
        verdict="success",
        status=status,
        body=body,
    )
