"""The OpenAPI contract: the document at ``/openapi.json`` describes every endpoint, and
schemathesis, driving the running service (PostgreSQL and the reference ML service behind it)
with a few hundred generated requests, finds no 5xx and no answer the document does not allow.
The routes mounted in a FastAPI application appear in its own ``/docs`` document.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from schemathesis import Case
from tests.support.service import OPERATOR

from pgcache.service.app import ServiceHandle
from pgcache.service.openapi import add_to_fastapi, openapi_document
from pgcache.service.routes import pgcache_routes

EXAMPLES_PER_OPERATION = 30  # eight operations: a few hundred requests in all


def _operations() -> list[Any]:
    schema = schemathesis.openapi.from_dict(openapi_document())
    return [result.ok() for result in schema.get_all_operations()]


# Driven by hand rather than through schemathesis' pytest plugin: one test per operation, the
# service started once for all of them. The service runs in threads of this process and draws
# from the random module (request ids, psycopg_pool's jitter); hypothesis takes a draw that lands
# while it builds a case for the strategy's own (a flaky HypothesisDeprecationWarning).
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
@pytest.mark.parametrize("operation", _operations(), ids=lambda operation: operation.label)
def test_every_answer_matches_the_document_and_none_is_a_server_error(
    operation: Any, service: ServiceHandle
) -> None:
    headers = OPERATOR if operation.security else None

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def exchange(case: Case) -> None:
        case.call_and_validate(base_url=service.url, headers=headers)

    exchange()


# --- the document itself ----------------------------------------------------------------------


def test_the_document_is_openapi_3_1_and_covers_every_route() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    routed = {
        (method, route.path)
        for route in pgcache_routes()
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert routed == documented


def test_every_error_answer_is_a_problem_and_limits_are_documented() -> None:
    document = openapi_document()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            answers = operation["responses"]
            assert "429" in answers, (method, path)
            for status, answer in answers.items():
                if int(status) >= 400 and not (path == "/readyz" and status == "503"):
                    schema_ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert schema_ref == "#/components/schemas/Problem", (method, path, status)


def test_the_service_serves_the_document_and_its_docs_page(service: ServiceHandle) -> None:
    with httpx.Client(base_url=service.url, timeout=30.0) as http:
        assert http.get("/openapi.json").json() == openapi_document()
        page = http.get("/docs")
    assert page.status_code == 200
    assert "/openapi.json" in page.text
    assert "swagger-ui" in page.text


def test_the_routes_appear_in_a_fastapi_applications_docs() -> None:
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI()
    app.router.routes.extend(pgcache_routes())
    add_to_fastapi(app)
    document = app.openapi()
    assert "/api/v1/queries/{query_hash}/predict" in document["paths"]
    assert "Prediction" in document["components"]["schemas"]
    assert app.openapi() is document or app.openapi() == document


def test_schemathesis_reads_every_operation_of_the_document() -> None:
    assert len(_operations()) == 8
