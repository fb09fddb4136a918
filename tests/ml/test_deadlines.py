"""One deadline per ML call: attempts, waits between them and every byte of every answer.

Against the fault-injecting server on loopback: a service that trickles its answer one byte at a
time (which no per-read timeout catches), one that sleeps, and one that trickles its head. Both
clients, sync and asyncio. Elapsed times are only checked against generous bounds that prove a
call is bounded at all; what a test asserts is how many attempts were made and why they stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from tests.support.factories import make_features
from tests.support.http_faults import Fault, FaultServer

from pgcache.config import Settings
from pgcache.errors import MLServiceUnavailable
from pgcache.ml.client import AsyncMLClient, MLClient
from pgcache.ml.models import Prediction

# Far beyond any deadline below, far below what a test may take: "bounded" is proven by this.
BOUNDED = 10.0


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def _settings(url: str, **overrides: Any) -> Settings:
    overrides.setdefault("retry_initial_backoff", timedelta(milliseconds=5))
    return Settings.load(ml_service_url=url, **overrides)


def _predict(kind: str, settings: Settings, **kwargs: Any) -> Prediction:
    """One predict call with a fresh client of ``kind`` (closed afterwards)."""
    if kind == "sync":
        with MLClient(settings, jitter=0) as client:
            return client.predict(make_features(), **kwargs)

    async def call() -> Prediction:
        async with AsyncMLClient(settings, jitter=0) as client:
            return await client.predict(make_features(), **kwargs)

    return asyncio.run(call())


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("head", [False, True], ids=["body", "head"])
def test_an_answer_trickled_a_byte_at_a_time_ends_at_the_deadline(
    kind: str, fault_server: FaultServer, head: bool
) -> None:
    # A byte every 0.3 s: each read succeeds long before the read timeout, forever.
    fault_server.push(Fault.trickle(0.3, head=head), times=10)
    settings = _settings(fault_server.url, ml_service_timeout=timedelta(seconds=1))
    started = time.monotonic()
    with pytest.raises(MLServiceUnavailable, match="deadline of 1 s reached") as caught:
        _predict(kind, settings)
    assert time.monotonic() - started < BOUNDED
    assert caught.value.attempts == 1


def test_ml_service_timeout_bounds_the_whole_call_not_each_attempt(
    kind: str, fault_server: FaultServer
) -> None:
    fault_server.push(Fault.slow(30.0), times=10)
    settings = _settings(
        fault_server.url, ml_service_timeout=timedelta(seconds=1), retry_max_attempts=3
    )
    with pytest.raises(MLServiceUnavailable, match="deadline of 1 s reached") as caught:
        _predict(kind, settings)
    # Before: four attempts of one timeout each (and their waits); now the call's one second.
    assert caught.value.attempts == 1
    assert fault_server.request_count() == 1


def test_a_longer_deadline_retries_an_attempt_stuck_past_the_timeout(
    kind: str, fault_server: FaultServer
) -> None:
    fault_server.push(Fault.slow(30.0))
    settings = _settings(fault_server.url, ml_service_timeout=timedelta(milliseconds=300))
    prediction = _predict(kind, settings, deadline=BOUNDED)
    assert prediction.predicted_execution_time_ms > 0
    assert fault_server.request_count() == 2


def test_the_deadline_of_a_client_covers_its_calls(kind: str, fault_server: FaultServer) -> None:
    fault_server.push(Fault.trickle(0.3), times=10)
    settings = _settings(fault_server.url, ml_service_timeout=timedelta(seconds=30))
    started = time.monotonic()
    with pytest.raises(MLServiceUnavailable, match=r"deadline of 0\.5 s reached"):
        _predict(kind, settings, deadline=0.5)
    assert time.monotonic() - started < BOUNDED


def test_an_answer_that_arrives_in_time_is_not_cut(kind: str, fault_server: FaultServer) -> None:
    fault_server.push(Fault.trickle(0.001))
    settings = _settings(fault_server.url, ml_service_timeout=timedelta(seconds=BOUNDED))
    assert _predict(kind, settings).model_version == "fault-server"
    assert fault_server.request_count() == 1
