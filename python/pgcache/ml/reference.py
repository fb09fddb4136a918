"""A reference ML prediction service: the original service's four endpoints, on Starlette.

It gives the client (:mod:`pgcache.ml.client`), the demo and the tests a real HTTP peer:

* ``POST /api/predict/query-execution``: ``{query_hash, features, parameters, scenario,
  model_id}`` -> a prediction in the original's format (``predicted_execution_time_ms``,
  ``confidence_score``, ``confidence_interval{lower_bound_ms, upper_bound_ms}``,
  ``model_version``, ``prediction_timestamp``);
* ``POST /api/validate/prediction``: the error of a prediction against the measured time;
* ``POST /api/train/performance-model``: accepts a training request, returns a job id;
* ``GET /api/health``.

The estimate is a **reference formula, not a trained model**: the mean execution time,
raised with the execution complexity (stddev / mean), the share of blocks read from disk and
the call rate, with an interval of 1.96 standard deviations. The same features always give
the same numbers. Bad JSON gets 400, a body that does not match gets 422, both with a short
``detail``.

Run it with ``python -m pgcache.ml.reference --port 8081`` (or :func:`main`), or in a
background thread with :func:`serve_in_thread` (tests, demos). This module does not train
anything, keeps no state beyond its start time, and does no authentication.
"""

from __future__ import annotations

from pgcache._extras import require

require("service", "pgcache.ml.reference")

import argparse
import json
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pgcache._validate import validation_text
from pgcache.postgres.features import QueryFeatures
from pgcache.service.serving import check_port, serve_in_background

MODEL_VERSION: Final = "reference-1"
_Z95: Final = 1.96


class _PredictRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query_hash: int
    features: QueryFeatures
    parameters: dict[str, Any] = Field(default_factory=dict)
    scenario: str = "current"
    model_id: str | None = None


class _Interval(BaseModel):
    lower_bound_ms: float | None = None
    upper_bound_ms: float | None = None


class _ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query_hash: int
    predicted_execution_time_ms: float = Field(ge=0, allow_inf_nan=False)
    actual_execution_time_ms: float = Field(ge=0, allow_inf_nan=False)
    confidence_interval: _Interval | None = None
    model_version: str | None = None


class _TrainRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model_type: str = "performance"
    features: list[QueryFeatures] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Estimate:
    """The reference formula's answer for one set of features."""

    predicted_ms: float
    lower_ms: float
    upper_ms: float
    confidence: float


def estimate(features: QueryFeatures) -> Estimate:
    """The reference estimate: deterministic, monotonic in complexity, disk reads and load.

    ``predicted = mean x (1 + 0.5 complexity) x (1 + 0.25 miss_ratio) x (1 + 0.05 log10(1 +
    calls_per_minute))``; the interval is ``predicted +- 1.96 stddev`` (never below 0); the
    confidence grows with the number of calls and falls with the complexity.
    """
    miss_ratio = 1.0 - features.shared_buffer_hit_ratio
    predicted = (
        features.mean_exec_time_ms
        * (1.0 + 0.5 * features.execution_complexity)
        * (1.0 + 0.25 * miss_ratio)
        * (1.0 + 0.05 * math.log10(1.0 + features.calls_per_minute))
    )
    spread = _Z95 * features.stddev_exec_time_ms
    confidence = (1.0 - 0.5 * features.execution_complexity) * (
        features.calls / (features.calls + 10.0)
    )
    return Estimate(
        predicted_ms=predicted,
        lower_ms=max(0.0, predicted - spread),
        upper_ms=predicted + spread,
        confidence=min(0.99, max(0.01, confidence)),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


_Handler = Callable[[Request], Awaitable[JSONResponse]]


def _json_endpoint(model: type[BaseModel], answer: Callable[[Any], JSONResponse]) -> _Handler:
    """An endpoint that parses the body as ``model`` (400/422 otherwise) and answers it."""

    async def endpoint(request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            data = json.loads(raw)
        except ValueError:
            return _problem(400, "the request body is not JSON")
        try:
            parsed = model.model_validate(data)
        except ValidationError as error:
            return _problem(422, validation_text(error, limit=5))
        return answer(parsed)

    return endpoint


def _predict(body: _PredictRequest) -> JSONResponse:
    result = estimate(body.features)
    return JSONResponse(
        {
            "query_hash": body.query_hash,
            "scenario": body.scenario,
            "model_id": body.model_id,
            "predicted_execution_time_ms": result.predicted_ms,
            "confidence_score": result.confidence,
            "confidence_interval": {
                "lower_bound_ms": result.lower_ms,
                "upper_bound_ms": result.upper_ms,
            },
            "model_version": MODEL_VERSION,
            "prediction_timestamp": _now(),
        }
    )


def _validate(body: _ValidateRequest) -> JSONResponse:
    error_ms = body.predicted_execution_time_ms - body.actual_execution_time_ms
    actual = body.actual_execution_time_ms
    error_percent = (
        abs(error_ms) / actual * 100.0 if actual > 0 else (0.0 if not error_ms else 100.0)
    )
    interval = body.confidence_interval
    within: bool | None = None
    if interval and interval.lower_bound_ms is not None and interval.upper_bound_ms is not None:
        within = interval.lower_bound_ms <= actual <= interval.upper_bound_ms
    return JSONResponse(
        {
            "query_hash": body.query_hash,
            "predicted_execution_time_ms": body.predicted_execution_time_ms,
            "actual_execution_time_ms": actual,
            "error_ms": error_ms,
            "error_percent": error_percent,
            "within_interval": within,
            "validated_at": _now(),
        }
    )


def _train(body: _TrainRequest) -> JSONResponse:
    return JSONResponse(
        {
            "job_id": str(uuid.uuid4()),
            "status": "accepted",
            "model_type": body.model_type,
            "samples": len(body.features),
            "submitted_at": _now(),
        },
        status_code=202,
    )


def create_app() -> Starlette:
    """The reference service as an ASGI application."""
    started = time.monotonic()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "healthy",
                "model_version": MODEL_VERSION,
                "uptime_seconds": time.monotonic() - started,
            }
        )

    return Starlette(
        routes=[
            Route(
                "/api/predict/query-execution",
                _json_endpoint(_PredictRequest, _predict),
                methods=["POST"],
            ),
            Route(
                "/api/validate/prediction",
                _json_endpoint(_ValidateRequest, _validate),
                methods=["POST"],
            ),
            Route(
                "/api/train/performance-model",
                _json_endpoint(_TrainRequest, _train),
                methods=["POST"],
            ),
            Route("/api/health", health, methods=["GET"]),
        ]
    )


class MLServiceHandle:
    """The reference service running in a background thread; :meth:`stop` ends it."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str) -> None:
        self._server = server
        self._thread = thread
        self.url = url

    @property
    def running(self) -> bool:
        """Whether the server thread is still serving."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (open connections are closed) and wait for the thread (idempotent)."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(
                f"the reference ML service at {self.url} did not stop in {timeout} s"
            )

    def __enter__(self) -> MLServiceHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def server_config(
    host: str = "127.0.0.1",
    port: int = 8081,
    *,
    log_level: str = "info",
    log_config: dict[str, Any] | str | None = uvicorn.config.LOGGING_CONFIG,
) -> uvicorn.Config:
    """The uvicorn configuration the reference service runs with (``log_config``: uvicorn's
    own by default; the ``pgcache ml-service`` command passes its logging)."""
    return uvicorn.Config(
        create_app(),
        host=host,
        port=check_port(port),
        log_level=log_level,
        log_config=log_config,
        access_log=False,
        lifespan="off",
        loop="asyncio",
        http="h11",
        timeout_graceful_shutdown=1,
    )


def serve_in_thread(
    host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning", timeout: float = 10.0
) -> MLServiceHandle:
    """Start the reference service on ``host:port`` (0: a free port) in a daemon thread.

    Returns once it accepts connections; the handle's ``url`` is its base URL.
    """
    running = serve_in_background(
        server_config(host, port, log_level=log_level),
        name="pgcache-mlservice",
        what="the reference ML service",
        timeout=timeout,
    )
    return MLServiceHandle(running.server, running.thread, running.url)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pgcache.ml.reference [--host H] [--port N]``: serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m pgcache.ml.reference",
        description="The pgcache reference ML prediction service (a formula, not a model).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8081, help="port (default 8081)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    args = parser.parse_args(argv)
    uvicorn.Server(server_config(args.host, args.port, log_level=args.log_level)).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
