"""Settings for the benchmark run (``pytest benches --benchmark-only -p no:timeout``).

pyproject.toml sets ``timeout = 120`` for the test suite and turns warnings into errors. With
pytest-timeout disabled (``-p no:timeout``, so that no benchmark round is cut short), pytest
would fail on that ini key as unknown; declaring it here, only when the plugin is absent, keeps
the key harmless.

The PostgreSQL fixtures (``postgres_url``, ``pg_workload``) reuse tests/support/postgres.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.postgres import (
    PostgresUnavailableError,
    Workload,
    database,
    run_workload,
)


def pytest_addoption(parser: Any, pluginmanager: Any) -> None:
    if not pluginmanager.has_plugin("timeout"):
        parser.addini("timeout", "ignored: pytest-timeout is disabled for the benchmarks")


# --- PostgreSQL for benches/test_features_bench.py ----------------------------------------------
# The same private server as the test suite (tests/support/postgres.py), or DATABASE_URL when set.


#: distinct queries run before the benchmarks (the batch benchmarks need 100 of them)
BENCH_SHAPES = 110


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    try:
        with database(os.environ.get("DATABASE_URL")) as (url, _):
            yield url
    except PostgresUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def pg_workload(postgres_url: str) -> Workload:
    return run_workload(postgres_url, min_shapes=BENCH_SHAPES)
