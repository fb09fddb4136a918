"""Operator endpoints over real HTTP: ``Authorization: Bearer <ADMIN_TOKEN>`` or nothing changes.

Without a token 401 (with ``WWW-Authenticate``), with another token 403, without
``ADMIN_TOKEN`` 403 saying how to enable them; in every refused case the caches keep their
entries. Reading endpoints need no token.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from pgcache.config import Settings
from pgcache.service.app import ServiceHandle, serve_in_thread
from pgcache.service.auth import bearer_token

TOKEN = "operator-token-0123456789abcdef"
QUERY_HASH = -4221331203398113


def _settings(**overrides: Any) -> Settings:
    return Settings.load(database_url=None, **overrides)


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceHandle]:
    with serve_in_thread(_settings(admin_token=TOKEN)) as handle:
        yield handle


@pytest.fixture(scope="module")
def client(service: ServiceHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30.0) as http:
        yield http


@pytest.fixture
def filled(service: ServiceHandle) -> ServiceHandle:
    """The service with one explain plan cached for QUERY_HASH."""
    service.state.manager.set_explain_plan(QUERY_HASH, {"Plan": {}})
    return service


OPERATIONS = [
    ("POST", "/api/v1/cache/invalidate", {"cache": "explain_plans"}),
    ("POST", "/api/v1/cache/invalidate", {"query_hash": QUERY_HASH}),
    ("DELETE", "/api/v1/cache/explain_plans", None),
]
IDS = ["invalidate-cache", "invalidate-query", "delete"]


def _call(
    client: httpx.Client, method: str, path: str, body: Any, **headers: str
) -> httpx.Response:
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS, ids=IDS)
def test_without_a_token_the_answer_is_401_with_a_bearer_challenge(
    client: httpx.Client, filled: ServiceHandle, method: str, path: str, body: Any
) -> None:
    response = _call(client, method, path, body)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert response.json()["error"] == "unauthorized"
    assert filled.state.manager.get_explain_plan(QUERY_HASH) == {"Plan": {}}


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer wrong", f"Basic {TOKEN}"],
    ids=["longer", "shorter", "other", "basic-scheme"],
)
def test_a_wrong_token_or_scheme_changes_nothing(
    client: httpx.Client, filled: ServiceHandle, authorization: str
) -> None:
    response = _call(
        client, "DELETE", "/api/v1/cache/explain_plans", None, Authorization=authorization
    )
    assert response.status_code in (401, 403)
    if authorization.startswith("Bearer"):
        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"
    assert filled.state.manager.get_explain_plan(QUERY_HASH) == {"Plan": {}}


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS, ids=IDS)
def test_the_admin_token_opens_the_operator_endpoints(
    client: httpx.Client, filled: ServiceHandle, method: str, path: str, body: Any
) -> None:
    response = _call(client, method, path, body, Authorization=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.text
    assert response.json()["removed"] >= 1
    assert filled.state.manager.get_explain_plan(QUERY_HASH) is None


def test_the_token_is_checked_before_the_body(client: httpx.Client) -> None:
    response = client.post("/api/v1/cache/invalidate", content=b"[" * 100_000)
    assert response.status_code == 401


def test_reading_endpoints_need_no_token(client: httpx.Client) -> None:
    for path in ("/healthz", "/api/v1/metrics/cache", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_without_admin_token_operator_endpoints_answer_403_saying_how_to_enable_them() -> None:
    with (
        serve_in_thread(_settings()) as service,
        httpx.Client(base_url=service.url, timeout=30.0) as client,
    ):
        service.state.manager.set_explain_plan(QUERY_HASH, {"Plan": {}})
        for method, path, body in OPERATIONS:
            response = _call(client, method, path, body, Authorization=f"Bearer {TOKEN}")
            assert response.status_code == 403
            assert response.json()["error"] == "admin_disabled"
            assert "ADMIN_TOKEN" in response.json()["detail"]
        assert service.state.manager.get_explain_plan(QUERY_HASH) == {"Plan": {}}


def test_the_token_never_appears_in_the_configuration_text() -> None:
    settings = _settings(admin_token=TOKEN)
    assert TOKEN not in str(settings)
    assert TOKEN not in repr(settings)
    assert TOKEN not in settings.model_dump_json()
    assert settings.describe()["ADMIN_TOKEN"] == "***"


def test_a_bad_admin_token_is_refused_without_echoing_it() -> None:
    from pgcache.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ADMIN_TOKEN=\*\*\*: expected 16 to 256") as caught:
        _settings(admin_token="short secret")
    assert "short secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Bearer", None),
        ("Basic abc", None),
        ("Token abc", None),
    ],
)
def test_bearer_token_reads_only_the_bearer_scheme(
    header: str | None, expected: str | None
) -> None:
    headers = [] if header is None else [(b"authorization", header.encode())]
    request = Request({"type": "http", "headers": headers})
    assert bearer_token(request) == expected
