"""Requests that cannot finish in time answer with a JSON error, over real HTTP: an ML service that
trickles its answer a byte at a time or sleeps (503 within ``ML_SERVICE_TIMEOUT``, not one
timeout per attempt), and a PostgreSQL whose processes are stopped with SIGSTOP (504 within the
connection wait plus ``DATABASE_STATEMENT_TIMEOUT``, not as long as the database is stopped).

Elapsed times are only compared with bounds far above the configured ones: they prove that an
answer comes at all, not how fast.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import Any

import httpx
import pytest
from tests.support.http_faults import Fault, FaultServer
from tests.support.postgres import PgServer, Workload
from tests.support.processes import children

from pgcache.config import Settings
from pgcache.service.app import ServiceHandle, serve_in_thread

BOUNDED = 15.0  # the clients' timeout, far above every deadline set here: "bounded", not "fast"
PREDICT = "/api/v1/queries/{}/predict"
FEATURES = "/api/v1/queries/{}/features"


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"max_database_conns": 4, "max_idle_database_conns": 1}
    values.update(overrides)
    return Settings.load(**values)


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def service_on_faulty_ml(postgres_url: str, fault_server: FaultServer) -> Iterator[ServiceHandle]:
    settings = _settings(
        database_url=postgres_url,
        ml_service_url=fault_server.url,
        ml_service_timeout=timedelta(seconds=1),
        retry_max_attempts=3,
    )
    with serve_in_thread(settings) as handle:
        yield handle


def _post_within_bound(url: str) -> httpx.Response:
    """POST with the client's own timeout at ``BOUNDED``: a service that misses its deadline
    fails the test with a ``ReadTimeout`` (no elapsed time is asserted)."""
    with httpx.Client(timeout=BOUNDED) as http:
        return http.post(url)


@pytest.mark.parametrize(
    "fault", [Fault.trickle(0.3), Fault.trickle(0.3, head=True), Fault.slow(60.0)], ids=repr
)
def test_an_ml_service_that_trickles_or_sleeps_gets_a_503_within_the_deadline(
    service_on_faulty_ml: ServiceHandle,
    fault_server: FaultServer,
    pg_workload: Workload,
    fault: Fault,
) -> None:
    fault_server.push(fault, times=10)
    query_hash = pg_workload.negative_ids[0]
    response = _post_within_bound(service_on_faulty_ml.url + PREDICT.format(query_hash))
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "ml_service_unavailable"
    assert "deadline of 1 s reached" in response.json()["detail"]
    assert fault_server.request_count("/api/predict/query-execution") == 1


# --- a stopped database ------------------------------------------------------------------------


@contextmanager
def _stopped(server: PgServer) -> Iterator[None]:
    """Every process of ``server`` stopped (SIGSTOP) in the block, continued after it."""
    postmaster = server.pid
    assert postmaster is not None
    processes = [postmaster, *children(postmaster)]
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in processes:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture
def private_server(postgres_server: PgServer | None) -> PgServer:
    if postgres_server is None:
        pytest.skip("DATABASE_URL points to an external server, which the tests do not stop")
    return postgres_server


def test_a_stopped_database_gets_a_504_within_the_statement_timeout(
    private_server: PgServer, postgres_url: str, pg_workload: Workload
) -> None:
    settings = _settings(database_url=postgres_url, database_statement_timeout=timedelta(seconds=1))
    with (
        serve_in_thread(settings, db_timeout=1.0) as service,
        httpx.Client(base_url=service.url, timeout=120.0) as http,
    ):
        assert http.get("/readyz").status_code in (200, 503)  # the pool holds a connection
        with _stopped(private_server):
            response = http.get(FEATURES.format(pg_workload.positive_ids[0]), timeout=BOUNDED)
        assert response.status_code == 504, response.text
        assert response.json()["error"] == "database_timeout"
        # Continued, the database answers again through the same service.
        deadline = time.monotonic() + 60
        while http.get(FEATURES.format(pg_workload.positive_ids[0])).status_code != 200:
            assert time.monotonic() < deadline, "the service did not recover"
            time.sleep(0.2)


def test_the_statement_timeout_is_the_feature_querys_own(
    postgres_url: str, pg_workload: Workload
) -> None:
    from psycopg_pool import ConnectionPool

    from pgcache.postgres.features import PgStatStatementsExtractor

    with ConnectionPool(postgres_url, min_size=1, max_size=1, open=True) as pool:
        extractor = PgStatStatementsExtractor(pool, statement_timeout=0.25)
        features = extractor.extract_query_features(pg_workload.positive_ids[0], "current")
        assert features.calls > 0
        with pool.connection() as conn:  # the same, only connection: nothing leaked into it
            row = conn.execute("SHOW statement_timeout").fetchone()
    assert row == ("0",)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "1s"], ids=repr)
def test_a_bad_statement_timeout_is_refused_naming_it(bad: object) -> None:
    from pgcache.postgres.features import AsyncPgStatStatementsExtractor

    with pytest.raises((TypeError, ValueError), match="statement_timeout"):
        AsyncPgStatStatementsExtractor(None, statement_timeout=bad)  # type: ignore[arg-type]
