"""Settings for the benchmark run (``pytest benches --benchmark-only -p no:timeout``).

pyproject.toml sets ``timeout = 120`` for the test suite and turns warnings into errors. With
pytest-timeout disabled (``-p no:timeout``, so that no benchmark round is cut short), pytest
would fail on that ini key as unknown; declaring it here, only when the plugin is absent, keeps
the key harmless.

The PostgreSQL fixtures (``postgres_url``, ``pg_workload``) reuse tests/pg_server.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: Any, pluginmanager: Any) -> None:
    if not pluginmanager.has_plugin("timeout"):
        parser.addini("timeout", "ignored: pytest-timeout is disabled for the benchmarks")


# --- PostgreSQL for benches/test_features_bench.py ----------------------------------------------
# The same private server as the test suite (tests/pg_server.py), or DATABASE_URL when set.

_TESTS_DIR = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from pg_server import (  # noqa: E402
    PostgresUnavailableError,
    Workload,
    database,
    run_workload,
)

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
