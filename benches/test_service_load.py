"""Load benchmark of the pgcache service: requests per second and p99 latency over loopback.

Run with ``pytest benches/test_service_load.py --benchmark-only -p no:timeout -s`` (``make
bench``). The service runs as it would in production, in its own process
(``uvicorn --factory pgcache.service.app:create_app``, configured from the environment), on the
private PostgreSQL and against the reference ML service; 20 client threads, each with its own
keep-alive connection, send 200 requests each (80 % features GETs, 20 % predictions) with an
80/20 hot-key pattern over the workload's real query hashes, after a warm-up that caches every
key. One round; the figures are printed and stored in the benchmark's ``extra_info``
(``requests_per_second``, ``p50_ms``, ``p99_ms``, ``hit_rate``, and on Linux
``server_cpu_us_per_request``, the service process's CPU time per request). Client and server
share the machine's cores, so the figure is a floor for the service, not its capacity.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.service_load import (
    cache_totals,
    cpu_seconds,
    free_port,
    run_load,
    wait_until_answers,
    warm_up,
)

from pgcache.ml.reference import serve_in_thread as serve_ml_in_thread

CLIENTS = 20
REQUESTS_PER_CLIENT = 200


@pytest.fixture(scope="module")
def service(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    """The service in a subprocess, configured through the environment like a deployment."""
    with serve_ml_in_thread() as ml_service:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": postgres_url,
            "ML_SERVICE_URL": ml_service.url,
            "MAX_IDLE_DATABASE_CONNS": "2",
        }
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "pgcache.service.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        # A directory of its own: no stray .env file is read.
        process = subprocess.Popen(command, env=env, cwd=tmp_path_factory.mktemp("service"))
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_answers(f"{url}/healthz", process)
            yield url, process.pid
        finally:
            process.terminate()
            process.wait(15)


def test_service_under_20_clients_with_hot_keys(
    benchmark: Any, service: tuple[str, int], pg_workload: Any
) -> None:
    service_url, pid = service
    hashes = sorted(pg_workload.queryids.values())
    warm_up(service_url, hashes)
    hits_before, misses_before = cache_totals(service_url)
    cpu_before = cpu_seconds(pid)
    result = benchmark.pedantic(
        run_load,
        args=(service_url, hashes),
        kwargs={"clients": CLIENTS, "requests_per_client": REQUESTS_PER_CLIENT},
        rounds=1,
        iterations=1,
    )
    cpu_after = cpu_seconds(pid)
    hits, misses = cache_totals(service_url)
    hit_rate = 100 * (hits - hits_before) / max(1, (hits - hits_before) + (misses - misses_before))
    figures: dict[str, float] = {
        "requests": result.requests,
        "requests_per_second": round(result.requests_per_second),
        "p50_ms": round(result.percentile(0.50) * 1000, 2),
        "p99_ms": round(result.percentile(0.99) * 1000, 2),
        "hit_rate": round(hit_rate, 2),
    }
    if cpu_before is not None and cpu_after is not None:
        figures["server_cpu_us_per_request"] = round(
            (cpu_after - cpu_before) / result.requests * 1e6
        )
    benchmark.extra_info.update(figures)
    print(f"\nservice load, {CLIENTS} clients x {REQUESTS_PER_CLIENT} requests: {figures}")
    assert result.errors == []
