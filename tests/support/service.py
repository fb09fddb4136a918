"""The pgcache service under test (a pytest plugin, loaded by tests/conftest.py).

``ml_service``: the reference ML service, one per test module. ``service``: a service of the test
module on the test database and that ML service; a module changes its settings by overriding
``service_overrides``, or builds one of its own from :func:`service_settings`, the settings every
test service starts from (an operator token, a small pool, no retries of the ML service, no
database unless given).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pgcache.config import Settings
from pgcache.ml.reference import MLServiceHandle, serve_in_thread as serve_ml_in_thread
from pgcache.service.app import ServiceHandle, serve_in_thread

# The operator endpoints need ADMIN_TOKEN (tests/service/test_auth.py tests that part).
ADMIN_TOKEN = "test-admin-token-0123456789"
OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def service_settings(**overrides: Any) -> Settings:
    """The settings of a test service, with ``overrides``."""
    values: dict[str, Any] = {
        "admin_token": ADMIN_TOKEN,
        "max_database_conns": 10,
        "max_idle_database_conns": 1,
        "retry_max_attempts": 0,
        "database_url": None,
    }
    values.update(overrides)
    return Settings.load(**values)


@pytest.fixture(scope="module")
def ml_service() -> Iterator[MLServiceHandle]:
    with serve_ml_in_thread() as handle:
        yield handle


@pytest.fixture(scope="module")
def service_overrides() -> dict[str, Any]:
    """What a test module changes in the settings of its ``service`` (override it there)."""
    return {}


@pytest.fixture(scope="module")
def service(
    postgres_url: str, ml_service: MLServiceHandle, service_overrides: dict[str, Any]
) -> Iterator[ServiceHandle]:
    """The service of a test module, on the test database and the reference ML service."""
    settings = service_settings(
        database_url=postgres_url, ml_service_url=ml_service.url, **service_overrides
    )
    with serve_in_thread(settings) as handle:
        yield handle
