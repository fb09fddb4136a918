"""The service's contract: the request and answer models the routes use, and the OpenAPI 3.1
document generated from them (:func:`openapi_document`), served at ``/openapi.json`` with
interactive docs at ``/docs`` (:func:`openapi_routes`).

The service stays on Starlette (its hot paths are measured there); the document is built from
the same pydantic models the routes validate with, so the two cannot drift apart on a field.
A FastAPI application that mounts :func:`pgcache.service.routes.pgcache_routes` shows them in its
own ``/docs`` after :func:`add_to_fastapi`. What this module does not do: validate answers at
run time (the tests check them against the document with schemathesis).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from pgcache._validate import INT64_MAX, INT64_MIN
from pgcache.keys import CACHE_NAMES
from pgcache.ml.models import Prediction
from pgcache.observability.snapshot import CacheStatusResponse
from pgcache.postgres.features import QueryFeatures
from pgcache.service.limits import IDENTIFIER_PATTERN, MAX_IDENTIFIER_LENGTH

OPENAPI_PATH: Final = "/openapi.json"
DOCS_PATH: Final = "/docs"
_SWAGGER_UI: Final = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"

# --- the models --------------------------------------------------------------------------------


def _json_integer(value: object) -> object:
    """An integer as JSON Schema counts them: ``7`` or ``7.0``; never ``"7"`` or ``true``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("expected an integer")
        return int(value)
    return value


QueryHash = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX), BeforeValidator(_json_integer)]
"""A pg_stat_statements queryid in a JSON body."""


class PredictRequest(BaseModel):
    """The body of ``POST /api/v1/queries/{query_hash}/predict`` (empty: the defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: StrictStr = Field(
        default="current", pattern=IDENTIFIER_PATTERN, max_length=MAX_IDENTIFIER_LENGTH
    )
    model_id: StrictStr | None = Field(
        default=None, pattern=IDENTIFIER_PATTERN, max_length=MAX_IDENTIFIER_LENGTH
    )


class InvalidateRequest(BaseModel):
    """The body of ``POST /api/v1/cache/invalidate``: exactly one of the two fields (the
    document says so as ``oneOf`` :class:`InvalidateQuery` or :class:`InvalidateCache`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query_hash: QueryHash | None = None
    cache: StrictStr | None = Field(default=None, max_length=MAX_IDENTIFIER_LENGTH)


class InvalidateQuery(BaseModel):
    """Remove every entry of one query."""

    model_config = ConfigDict(extra="forbid")

    query_hash: QueryHash


class InvalidateCache(BaseModel):
    """Empty one cache (features, predictions, fingerprints, explain_plans, anomalies)."""

    model_config = ConfigDict(extra="forbid")

    cache: StrictStr = Field(max_length=MAX_IDENTIFIER_LENGTH)


class InvalidateQueryResult(BaseModel):
    """How many entries of one query were removed."""

    query_hash: int
    removed: int = Field(ge=0)


class CacheCleared(BaseModel):
    """How many entries a cache held when it was emptied."""

    cache: str
    removed: int = Field(ge=0)


class Problem(BaseModel):
    """Every error answer: a machine-readable ``error``, a sentence, the request's id."""

    error: str
    detail: str
    request_id: str | None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, str]


# --- the document ------------------------------------------------------------------------------

_RATE_HEADERS: Final = {
    "RateLimit": {
        "description": 'Quota left: "default";r=<remaining>;t=<seconds until full>',
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": 'The quota: "default";q=<burst>;w=<seconds to refill>',
        "schema": {"type": "string"},
    },
    "X-Request-ID": {"description": "The request's id", "schema": {"type": "string"}},
}
_PROBLEMS: Final[dict[int, str]] = {
    401: "No bearer token (with WWW-Authenticate)",
    403: "Operator endpoints disabled (no ADMIN_TOKEN) or a wrong token",
    404: "Unknown query hash or cache",
    413: "Body larger than MAX_BODY_BYTES",
    422: "Invalid path, query or body",
    429: "Rate limited (with Retry-After)",
    500: "A server bug (its log has the request id)",
    502: "The ML service answered something unusable",
    503: "A dependency is unavailable or not configured",
    504: "A dependency did not answer in time",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _RATE_HEADERS,
        "content": {"application/json": {"schema": schema}},
    }


def _problems(*statuses: int) -> dict[str, Any]:
    answers = {}
    for status in sorted({*statuses, 429, 500}):
        answer = _json(_ref("Problem"), _PROBLEMS[status])
        if status == 429:
            retry = {"description": "Seconds to wait", "schema": {"type": "integer"}}
            answer["headers"] = {**_RATE_HEADERS, "Retry-After": retry}
        answers[str(status)] = answer
    return answers


_QUERY_HASH: Final = {
    "name": "query_hash",
    "in": "path",
    "required": True,
    "description": "A pg_stat_statements queryid (a signed 64-bit integer)",
    "schema": {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
}
_BEARER: Final[list[dict[str, list[str]]]] = [{"adminToken": []}]


def _paths() -> dict[str, Any]:
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/healthz": {
            "get": {
                "summary": "The process is up",
                "operationId": "healthz",
                "responses": {"200": _json(_ref("Health"), "Up"), **_problems()},
            }
        },
        "/readyz": {
            "get": {
                "summary": "The database and the ML service answer",
                "operationId": "readyz",
                "responses": {
                    "200": _json(_ref("Readiness"), "Ready"),
                    "503": _json(_ref("Readiness"), "Not ready: the checks say why"),
                    **{k: v for k, v in _problems().items() if k != "503"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition",
                "operationId": "prometheus",
                "responses": {"200": {"description": "Metrics", "content": text}, **_problems()},
            }
        },
        "/api/v1/metrics/cache": {
            "get": {
                "summary": "Cache metrics (the original CacheStatusResponse)",
                "operationId": "cacheStatus",
                "responses": {
                    "200": _json(_ref("CacheStatusResponse"), "Metrics of every cache"),
                    "304": {"description": "Not modified (If-None-Match)"},
                    **_problems(),
                },
            }
        },
        "/api/v1/queries/{query_hash}/features": {
            "get": {
                "summary": "Features of one query from pg_stat_statements (cached)",
                "operationId": "queryFeatures",
                "parameters": [
                    _QUERY_HASH,
                    {
                        "name": "scenario",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "string",
                            "pattern": IDENTIFIER_PATTERN,
                            "default": "current",
                        },
                    },
                ],
                "responses": {
                    "200": _json(_ref("QueryFeatures"), "The features"),
                    "304": {"description": "Not modified (If-None-Match)"},
                    **_problems(404, 422, 503, 504),
                },
            }
        },
        "/api/v1/queries/{query_hash}/predict": {
            "post": {
                "summary": "Predicted execution time of one query (cached)",
                "operationId": "predictQuery",
                "parameters": [_QUERY_HASH],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("PredictRequest")}},
                },
                "responses": {
                    "200": _json(_ref("Prediction"), "The prediction"),
                    **_problems(404, 413, 422, 502, 503, 504),
                },
            }
        },
        "/api/v1/cache/invalidate": {
            "post": {
                "summary": "Remove one query's entries, or empty one cache (operator)",
                "operationId": "invalidateCache",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"oneOf": [_ref("InvalidateQuery"), _ref("InvalidateCache")]}
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {"anyOf": [_ref("InvalidateQueryResult"), _ref("CacheCleared")]},
                        "What was removed",
                    ),
                    **_problems(401, 403, 404, 413, 422),
                },
            }
        },
        "/api/v1/cache/{name}": {
            "delete": {
                "summary": "Empty one cache; its metrics are kept (operator)",
                "operationId": "deleteCache",
                "security": _BEARER,
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": list(CACHE_NAMES)},
                    }
                ],
                "responses": {
                    "200": _json(_ref("CacheCleared"), "How many entries it held"),
                    **_problems(401, 403, 404),
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the pgcache endpoints."""
    from pgcache import __version__

    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (PredictRequest, "validation"),
        (InvalidateQuery, "validation"),
        (InvalidateCache, "validation"),
        (QueryFeatures, "serialization"),
        (Prediction, "serialization"),
        (CacheStatusResponse, "serialization"),
        (InvalidateQueryResult, "serialization"),
        (CacheCleared, "serialization"),
        (Problem, "serialization"),
        (Health, "serialization"),
        (Readiness, "serialization"),
    ]
    _, schemas = models_json_schema(models, ref_template="#/components/schemas/{model}")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pgcache",
            "version": __version__,
            "description": "Cached pg_stat_statements features and ML predictions of "
            "PostgreSQL queries. Every error answer is a Problem; every limited answer carries "
            "the IETF RateLimit and RateLimit-Policy headers.",
        },
        "paths": _paths(),
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "ADMIN_TOKEN, for the operator endpoints",
                }
            },
        },
    }


# --- serving it --------------------------------------------------------------------------------


def openapi_routes() -> list[Route]:
    """``GET /openapi.json`` (the document) and ``GET /docs`` (Swagger UI reading it)."""
    body = json.dumps(openapi_document()).encode()

    async def document(request: Request) -> Response:
        return Response(body, media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(
            "<!doctype html><html><head><title>pgcache API</title>"
            f'<link rel="stylesheet" href="{_SWAGGER_UI}/swagger-ui.css"></head>'
            '<body><div id="swagger-ui"></div>'
            f'<script src="{_SWAGGER_UI}/swagger-ui-bundle.js"></script>'
            "<script>SwaggerUIBundle({url: '" + OPENAPI_PATH + "', dom_id: '#swagger-ui'})"
            "</script></body></html>"
        )

    return [
        Route(OPENAPI_PATH, document, methods=["GET"], include_in_schema=False),
        Route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False),
    ]


def add_to_fastapi(app: Any) -> None:
    """Make a FastAPI ``app`` that mounts :func:`pgcache_routes` describe them in its own
    ``/openapi.json`` and ``/docs``: its generated document gains the pgcache paths and
    schemas (FastAPI documents only its own routes)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        ours = openapi_document()
        document.setdefault("paths", {}).update(ours["paths"])
        components = document.setdefault("components", {})
        for section, entries in ours["components"].items():
            components.setdefault(section, {}).update(entries)
        return document

    app.openapi = openapi
