"""The pgcache service (pgcache.service) over real HTTP: uvicorn on loopback, a real PostgreSQL with
pg_stat_statements, the reference ML service (or the fault-injecting one), and httpx as client.

One service on the test database is shared by the module; tests that break something (the
database, the ML service, the cache manager) get a service of their own. One test mounts the
routes in a host application and talks to it in-process (httpx's ASGI transport).
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from tests.support.caches import WaitUntil
from tests.support.http_faults import Fault, FaultServer
from tests.support.postgres import Workload, extractor_statement_calls, unknown_queryid
from tests.support.service import OPERATOR, service_settings
from tests.support.service_load import cache_totals, free_port, run_load, warm_up

from pgcache.ml.models import Prediction
from pgcache.ml.reference import MLServiceHandle
from pgcache.observability.snapshot import CacheStatusResponse
from pgcache.postgres.features import QueryFeatures
from pgcache.service.app import ServiceHandle, serve_in_thread
from pgcache.service.lifespan import pgcache_lifespan
from pgcache.service.middleware import RequestIdMiddleware
from pgcache.service.routes import pgcache_routes

FEATURES = "/api/v1/queries/{}/features"
PREDICT = "/api/v1/queries/{}/predict"


def _error_body(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail", "request_id"}
    assert body["error"] == error
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body


@pytest.fixture(scope="module")
def client(service: ServiceHandle) -> Iterator[httpx.Client]:
    """An operator's client of the module's service (tests/service/test_auth.py tests the
    token)."""
    with httpx.Client(headers=OPERATOR, base_url=service.url, timeout=30.0) as http:
        yield http


@pytest.fixture(scope="module")
def dead_db_client(ml_service: MLServiceHandle) -> Iterator[httpx.Client]:
    """A service whose DATABASE_URL points at a closed port (a free one: nobody listens)."""
    settings = service_settings(
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        ml_service_url=ml_service.url,
    )
    with (
        serve_in_thread(settings, db_timeout=0.3) as handle,
        httpx.Client(headers=OPERATOR, base_url=handle.url, timeout=30.0) as http,
    ):
        yield http


@pytest.fixture(scope="module")
def faulty_ml() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def faulty_ml_client(postgres_url: str, faulty_ml: FaultServer) -> Iterator[httpx.Client]:
    """A service on the test database whose ML service fails on request (no retries)."""
    settings = service_settings(database_url=postgres_url, ml_service_url=faulty_ml.url)
    with (
        serve_in_thread(settings) as handle,
        httpx.Client(headers=OPERATOR, base_url=handle.url, timeout=30.0) as http,
    ):
        yield http


@pytest.fixture
def fresh_service(postgres_url: str, ml_service: MLServiceHandle) -> Iterator[ServiceHandle]:
    settings = service_settings(database_url=postgres_url, ml_service_url=ml_service.url)
    with serve_in_thread(settings, db_timeout=0.3) as handle:
        yield handle


def _hash(workload: Workload, sign: int = -1) -> int:
    return (workload.negative_ids if sign < 0 else workload.positive_ids)[0]


# --- health and metrics ----------------------------------------------------------------------


def test_healthz_answers_ok(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_readyz_answers_200_when_database_and_ml_service_answer(client: httpx.Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "ml_service": "ok"}}


def test_readyz_names_the_database_when_it_is_unreachable(dead_db_client: httpx.Client) -> None:
    response = dead_db_client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"].startswith("unreachable")
    assert checks["ml_service"] == "ok"


def test_readyz_names_the_ml_service_when_it_fails(
    faulty_ml_client: httpx.Client, faulty_ml: FaultServer
) -> None:
    faulty_ml.push(Fault.status(503))
    response = faulty_ml_client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["ml_service"].startswith("unreachable")


def test_cache_status_has_the_original_shape(client: httpx.Client) -> None:
    response = client.get("/api/v1/metrics/cache")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"enabled", "max_size", "metrics", "message"}
    assert body["enabled"] is True
    assert body["max_size"] == 10_000
    assert body["message"] == "Cache performance metrics"
    status = CacheStatusResponse.model_validate(body)
    assert status.metrics.feature_cache.ttl_seconds == 15 * 60


def test_cache_status_counts_feature_hits(client: httpx.Client, pg_workload: Workload) -> None:
    url = FEATURES.format(_hash(pg_workload, +1))
    client.get(url).raise_for_status()
    before = client.get("/api/v1/metrics/cache").json()["metrics"]["feature_cache"]["hits"]
    client.get(url).raise_for_status()
    after = client.get("/api/v1/metrics/cache").json()["metrics"]["feature_cache"]["hits"]
    assert after == before + 1


def test_prometheus_metrics_cover_caches_pool_and_ml_client(client: httpx.Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert ("pgcache_hits_total", (("cache", "features"),)) in samples
    assert ("pgcache_db_pool_size", (("pool", "pgcache"),)) in samples
    assert ("pgcache_ml_calls_total", ()) in samples


# --- features --------------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [-1, +1], ids=["negative-queryid", "positive-queryid"])
def test_features_of_a_workload_query(
    client: httpx.Client, pg_workload: Workload, sign: int
) -> None:
    query_hash = _hash(pg_workload, sign)
    response = client.get(FEATURES.format(query_hash))
    assert response.status_code == 200, response.text
    features = QueryFeatures.model_validate_json(response.content)
    assert features.query_hash == query_hash
    assert features.scenario == "current"
    assert features.calls >= pg_workload.runs_per_shape


def test_features_scenario_comes_from_the_query_string(
    client: httpx.Client, pg_workload: Workload
) -> None:
    response = client.get(FEATURES.format(_hash(pg_workload)), params={"scenario": "peak"})
    assert response.status_code == 200
    assert response.json()["scenario"] == "peak"


def test_repeated_features_lookup_does_not_query_the_database(
    client: httpx.Client, pg_workload: Workload, postgres_url: str
) -> None:
    url = FEATURES.format(pg_workload.positive_ids[1])
    first = client.get(url)
    statements = extractor_statement_calls(postgres_url)
    second = client.get(url)
    assert extractor_statement_calls(postgres_url) == statements
    assert second.json() == first.json()


def test_unknown_query_hash_is_404(client: httpx.Client, pg_workload: Workload) -> None:
    unknown = unknown_queryid(pg_workload, -1)
    body = _error_body(client.get(FEATURES.format(unknown)), 404, "query_not_found")
    assert str(unknown) in body["detail"]


@pytest.mark.parametrize(
    "bad_hash",
    ["abc", "1.5", "0x10", "1_000", "9223372036854775808", "-9223372036854775809", "--1"],
)
def test_malformed_query_hash_is_422(client: httpx.Client, bad_hash: str) -> None:
    body = _error_body(client.get(FEATURES.format(bad_hash)), 422, "invalid_query_hash")
    assert repr(bad_hash) in body["detail"]


def test_extreme_signed_64_bit_hashes_are_well_formed(client: httpx.Client) -> None:
    for query_hash in (-(2**63), 2**63 - 1):
        _error_body(client.get(FEATURES.format(query_hash)), 404, "query_not_found")


def test_empty_scenario_is_422(client: httpx.Client, pg_workload: Workload) -> None:
    response = client.get(FEATURES.format(_hash(pg_workload)), params={"scenario": ""})
    _error_body(response, 422, "invalid_scenario")


# --- HTTP caching ----------------------------------------------------------------------------


def test_features_carry_a_strong_etag_and_cache_control(
    client: httpx.Client, pg_workload: Workload
) -> None:
    response = client.get(FEATURES.format(_hash(pg_workload)))
    assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["etag"])
    max_age = re.fullmatch(r"public, max-age=(\d+)", response.headers["cache-control"])
    assert max_age is not None
    assert 0 < int(max_age[1]) <= 15 * 60


def test_if_none_match_with_the_current_etag_is_304(
    client: httpx.Client, pg_workload: Workload
) -> None:
    url = FEATURES.format(_hash(pg_workload))
    etag = client.get(url).headers["etag"]
    for condition in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = client.get(url, headers={"If-None-Match": condition})
        assert response.status_code == 304, condition
        assert response.content == b""
        assert response.headers["etag"] == etag


def test_if_none_match_with_another_etag_is_200(
    client: httpx.Client, pg_workload: Workload
) -> None:
    response = client.get(FEATURES.format(_hash(pg_workload)), headers={"If-None-Match": '"x"'})
    assert response.status_code == 200
    assert response.json()["query_hash"] == _hash(pg_workload)


def test_features_etag_is_the_digest_of_the_body_served(
    client: httpx.Client, pg_workload: Workload
) -> None:
    url = FEATURES.format(_hash(pg_workload))
    first, second = client.get(url), client.get(url)
    digest = hashlib.blake2b(second.content, digest_size=16).hexdigest()
    assert second.headers["etag"] == f'"{digest}"'
    assert (first.content, first.headers["etag"]) == (second.content, second.headers["etag"])


def test_features_extracted_again_carry_their_own_body_and_etag(
    client: httpx.Client, pg_workload: Workload
) -> None:
    url = FEATURES.format(_hash(pg_workload))
    before = client.get(url)
    assert client.delete("/api/v1/cache/features").status_code == 200
    after = client.get(url)
    assert after.json()["collected_at"] != before.json()["collected_at"]
    assert after.headers["etag"] != before.headers["etag"]
    digest = hashlib.blake2b(after.content, digest_size=16).hexdigest()
    assert after.headers["etag"] == f'"{digest}"'
    assert client.get(url, headers={"If-None-Match": before.headers["etag"]}).status_code == 200


def test_cache_status_carries_etag_and_no_cache(client: httpx.Client) -> None:
    response = client.get("/api/v1/metrics/cache")
    assert response.headers["cache-control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["etag"])


# --- request ids -----------------------------------------------------------------------------


def test_request_id_from_the_request_is_echoed(client: httpx.Client) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"


def test_request_id_is_generated_when_absent(client: httpx.Client) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_unsafe_request_id_is_replaced(client: httpx.Client) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "a b"})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_request_id_is_in_error_bodies(client: httpx.Client, pg_workload: Workload) -> None:
    unknown = unknown_queryid(pg_workload, +1)
    response = client.get(FEATURES.format(unknown), headers={"X-Request-ID": "err-7"})
    assert _error_body(response, 404, "query_not_found")["request_id"] == "err-7"


def test_request_id_is_on_the_log_records(
    client: httpx.Client, caplog: pytest.LogCaptureFixture, wait_until: WaitUntil
) -> None:
    caplog.set_level(logging.INFO, logger="pgcache.service")
    client.get("/healthz", headers={"X-Request-ID": "log-me"})

    def logged() -> bool:
        return any(getattr(r, "request_id", None) == "log-me" for r in caplog.records)

    assert wait_until(logged)


# --- predictions -----------------------------------------------------------------------------


def _ml_calls(client: httpx.Client) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "pgcache_ml_calls_total":
                return sample.value
    raise AssertionError("pgcache_ml_calls_total is missing")


def test_predict_returns_the_ml_service_prediction(
    client: httpx.Client, pg_workload: Workload
) -> None:
    query_hash = _hash(pg_workload)
    response = client.post(PREDICT.format(query_hash), json={"scenario": "current"})
    assert response.status_code == 200, response.text
    prediction = Prediction.model_validate_json(response.content)
    assert prediction.query_hash == query_hash
    assert prediction.model_version == "reference-1"
    assert response.headers["cache-control"] == "no-store"


def test_repeated_prediction_makes_no_ml_call(client: httpx.Client, pg_workload: Workload) -> None:
    url = PREDICT.format(pg_workload.negative_ids[1])
    first = client.post(url, json={"model_id": "m1"})
    calls = _ml_calls(client)
    second = client.post(url, json={"model_id": "m1"})
    assert _ml_calls(client) == calls
    assert second.json() == first.json()
    assert second.json()["model_id"] == "m1"


def test_predict_without_a_body_uses_the_defaults(
    client: httpx.Client, pg_workload: Workload
) -> None:
    response = client.post(PREDICT.format(_hash(pg_workload)))
    assert response.status_code == 200
    assert response.json()["scenario"] == "current"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1]", b'{"scenario": 5}', b'{"model_id": 3}', b'{"extra": 1}'],
    ids=["not-json", "not-an-object", "scenario-int", "model-id-int", "unknown-field"],
)
def test_predict_with_a_bad_body_is_422(
    client: httpx.Client, pg_workload: Workload, body: bytes
) -> None:
    response = client.post(
        PREDICT.format(_hash(pg_workload)),
        content=body,
        headers={"Content-Type": "application/json"},
    )
    _error_body(response, 422, "invalid_body")


def test_predict_for_an_unknown_query_is_404(client: httpx.Client, pg_workload: Workload) -> None:
    response = client.post(PREDICT.format(unknown_queryid(pg_workload, -1)), json={})
    _error_body(response, 404, "query_not_found")


def test_predict_when_the_ml_service_fails_is_503(
    faulty_ml_client: httpx.Client, faulty_ml: FaultServer, pg_workload: Workload
) -> None:
    faulty_ml.push(Fault.status(503))
    response = faulty_ml_client.post(PREDICT.format(_hash(pg_workload)), json={"model_id": "503"})
    _error_body(response, 503, "ml_service_unavailable")


def test_predict_when_the_ml_service_answers_garbage_is_502(
    faulty_ml_client: httpx.Client, faulty_ml: FaultServer, pg_workload: Workload
) -> None:
    faulty_ml.push(Fault.invalid_json())
    response = faulty_ml_client.post(PREDICT.format(_hash(pg_workload)), json={"model_id": "502"})
    _error_body(response, 502, "ml_service_error")


# --- operators: invalidation -----------------------------------------------------------------


def test_invalidate_query_removes_its_features_and_predictions(
    client: httpx.Client, pg_workload: Workload, postgres_url: str
) -> None:
    query_hash = pg_workload.positive_ids[2]
    client.get(FEATURES.format(query_hash)).raise_for_status()
    client.post(PREDICT.format(query_hash), json={}).raise_for_status()
    response = client.post("/api/v1/cache/invalidate", json={"query_hash": query_hash})
    assert response.status_code == 200
    assert response.json() == {"query_hash": query_hash, "removed": 2}
    statements = extractor_statement_calls(postgres_url)
    client.get(FEATURES.format(query_hash)).raise_for_status()
    assert extractor_statement_calls(postgres_url) == statements + 1


def test_invalidate_cache_by_name_empties_it(client: httpx.Client, pg_workload: Workload) -> None:
    client.post(PREDICT.format(_hash(pg_workload)), json={}).raise_for_status()
    response = client.post("/api/v1/cache/invalidate", json={"cache": "predictions"})
    assert response.status_code == 200
    assert response.json()["removed"] >= 1
    status = client.get("/api/v1/metrics/cache").json()
    assert status["metrics"]["prediction_cache"]["size"] == 0


@pytest.mark.parametrize(
    "body",
    [{}, {"query_hash": 1, "cache": "features"}, {"query_hash": "1"}, {"query_hash": 2**63}],
    ids=["neither", "both", "hash-as-string", "hash-out-of-range"],
)
def test_invalidate_with_a_bad_body_is_422(client: httpx.Client, body: dict[str, Any]) -> None:
    _error_body(client.post("/api/v1/cache/invalidate", json=body), 422, "invalid_body")


def test_invalidate_an_unknown_cache_is_404(client: httpx.Client) -> None:
    response = client.post("/api/v1/cache/invalidate", json={"cache": "nope"})
    body = _error_body(response, 404, "unknown_cache")
    assert "features" in body["detail"]


def test_delete_cache_empties_it(client: httpx.Client, pg_workload: Workload) -> None:
    client.get(FEATURES.format(_hash(pg_workload))).raise_for_status()
    response = client.delete("/api/v1/cache/features")
    assert response.status_code == 200
    assert response.json()["cache"] == "features"
    assert response.json()["removed"] >= 1
    status = client.get("/api/v1/metrics/cache").json()
    assert status["metrics"]["feature_cache"]["size"] == 0


def test_delete_an_unknown_cache_is_404(client: httpx.Client) -> None:
    _error_body(client.delete("/api/v1/cache/nope"), 404, "unknown_cache")


# --- errors from the framework and from bugs -------------------------------------------------


def test_unknown_route_is_a_json_404(client: httpx.Client) -> None:
    _error_body(client.get("/nope"), 404, "not_found")


def test_wrong_method_is_a_json_405(client: httpx.Client) -> None:
    response = client.put("/healthz")
    _error_body(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


def test_an_unexpected_error_is_a_500_json_and_a_logged_traceback(
    fresh_service: ServiceHandle, caplog: pytest.LogCaptureFixture, wait_until: WaitUntil
) -> None:
    fresh_service.state.manager.close()  # every cache now raises CacheClosedError
    with httpx.Client(headers=OPERATOR, base_url=fresh_service.url) as http:
        response = http.get("/api/v1/metrics/cache", headers={"X-Request-ID": "bug-1"})
    body = _error_body(response, 500, "internal_error")
    assert body["request_id"] == "bug-1"

    def logged() -> bool:
        return any(r.exc_info and getattr(r, "request_id", None) == "bug-1" for r in caplog.records)

    assert wait_until(logged)


# --- the database down -----------------------------------------------------------------------


def test_features_when_the_database_is_unreachable_are_503(
    dead_db_client: httpx.Client, pg_workload: Workload
) -> None:
    response = dead_db_client.get(FEATURES.format(_hash(pg_workload)))
    _error_body(response, 503, "database_unavailable")


def test_cache_hits_answer_while_the_database_is_unreachable(
    fresh_service: ServiceHandle, pg_workload: Workload
) -> None:
    warm, cold = pg_workload.negative_ids[0], pg_workload.negative_ids[1]
    with httpx.Client(headers=OPERATOR, base_url=fresh_service.url) as http:
        expected = http.get(FEATURES.format(warm)).json()
        pool = fresh_service.state.pool
        assert pool is not None
        fresh_service.run(pool.close())
        hit = http.get(FEATURES.format(warm))
        miss = http.get(FEATURES.format(cold))
    assert hit.status_code == 200
    assert hit.json() == expected
    _error_body(miss, 503, "database_unavailable")


def test_without_database_url_features_are_503_naming_it(ml_service: MLServiceHandle) -> None:
    with (
        serve_in_thread(service_settings(ml_service_url=ml_service.url)) as handle,
        httpx.Client(headers=OPERATOR, base_url=handle.url) as http,
    ):
        response = http.get(FEATURES.format(1))
        ready = http.get("/readyz")
    body = _error_body(response, 503, "database_not_configured")
    assert "DATABASE_URL" in body["detail"]
    assert ready.status_code == 503
    assert "DATABASE_URL" in ready.json()["checks"]["database"]


def test_shutdown_closes_manager_pool_and_ml_client(
    postgres_url: str, ml_service: MLServiceHandle
) -> None:
    settings = service_settings(database_url=postgres_url, ml_service_url=ml_service.url)
    handle = serve_in_thread(settings)
    state = handle.state
    handle.stop()
    assert state.manager.closed
    assert state.pool is not None
    assert state.pool.closed
    assert state.ml_client.closed


# --- mounted in a host application (in-process, ASGI transport) ------------------------------


async def test_routes_mount_in_an_existing_starlette_app(
    postgres_url: str, ml_service: MLServiceHandle, pg_workload: Workload
) -> None:
    settings = service_settings(database_url=postgres_url, ml_service_url=ml_service.url)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with pgcache_lifespan(app, settings):
            yield

    async def home(request: Request) -> Response:
        return PlainTextResponse("host application")

    app = Starlette(
        routes=[Route("/", home), Mount("/pgcache", routes=pgcache_routes())],
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
    )
    query_hash = _hash(pg_workload)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host") as http,
    ):
        home_page = await http.get("/")
        features = await http.get(f"/pgcache{FEATURES.format(query_hash)}")
    assert home_page.text == "host application"
    assert features.status_code == 200, features.text
    assert features.json()["query_hash"] == query_hash
    assert "x-request-id" in features.headers
    assert not hasattr(app.state, "pgcache")


# --- load ------------------------------------------------------------------------------------


def test_load_of_20_clients_has_no_errors_and_a_hit_rate_over_80_percent(
    service: ServiceHandle, pg_workload: Workload
) -> None:
    hashes = sorted(pg_workload.queryids.values())
    warm_up(service.url, hashes)
    hits_before, misses_before = cache_totals(service.url)
    result = run_load(service.url, hashes, clients=20, requests_per_client=200)
    hits, misses = cache_totals(service.url)
    assert result.errors == []
    assert result.statuses == {200: 20 * 200}
    hit_rate = (hits - hits_before) / ((hits - hits_before) + (misses - misses_before))
    assert hit_rate > 0.8


# --- the shared tier (REDIS_URL): two services, one Redis -------------------------------------


@pytest.fixture(scope="module")
def tiered_services(
    postgres_url: str, ml_service: MLServiceHandle, redis_url: str
) -> Iterator[tuple[ServiceHandle, ServiceHandle]]:
    """Two services on one database, one ML service and one Redis namespace: two instances."""
    settings = service_settings(
        database_url=postgres_url,
        ml_service_url=ml_service.url,
        redis_url=redis_url,
        redis_key_prefix=f"pgcache-test-{uuid.uuid4().hex[:12]}:",
    )
    with serve_in_thread(settings) as first, serve_in_thread(settings) as second:
        yield first, second


def _shared_tier_settled(*services: ServiceHandle) -> bool:
    """Every service applied every invalidation the others sent."""
    statuses = [service.state.manager.shared_tier_status() for service in services]
    sent = sum(status.invalidations_sent for status in statuses if status is not None)
    return all(
        status is not None and status.invalidations_received == sent - status.invalidations_sent
        for status in statuses
    )


def test_readyz_names_redis_when_it_is_configured(
    tiered_services: tuple[ServiceHandle, ServiceHandle],
) -> None:
    with httpx.Client(headers=OPERATOR, base_url=tiered_services[0].url, timeout=30.0) as http:
        response = http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "ml_service": "ok", "redis": "ok"}


def test_readyz_says_redis_is_degraded_and_the_service_stays_ready(
    postgres_url: str, ml_service: MLServiceHandle
) -> None:
    settings = service_settings(
        database_url=postgres_url,
        ml_service_url=ml_service.url,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_connect_timeout="200ms",
    )
    with (
        serve_in_thread(settings) as handle,
        httpx.Client(headers=OPERATOR, base_url=handle.url, timeout=30.0) as http,
    ):
        response = http.get("/readyz")
        metrics = http.get("/api/v1/metrics/cache").json()["metrics"]
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert response.json()["checks"]["redis"].startswith("degraded: unreachable or slow")
    assert metrics["shared_tier"]["redis"] == "degraded"


def test_an_invalidation_sent_to_one_service_is_honoured_by_the_other(
    tiered_services: tuple[ServiceHandle, ServiceHandle], wait_until: WaitUntil
) -> None:
    first, second = tiered_services
    query_hash = -4221331203398113
    first.state.manager.set_explain_plan(query_hash, {"Plan": {"Node Type": "Seq Scan"}})
    assert wait_until(lambda: _shared_tier_settled(first, second))
    assert second.state.manager.get_explain_plan(query_hash) is not None  # an L2 hit
    with httpx.Client(headers=OPERATOR, base_url=first.url, timeout=30.0) as http:
        response = http.post("/api/v1/cache/invalidate", json={"query_hash": query_hash})
    assert response.status_code == 200
    assert wait_until(lambda: second.state.manager.cache("explain_plans").get(query_hash) is None)
    assert second.state.manager.get_explain_plan(query_hash) is None


def test_deleting_a_cache_on_one_service_empties_it_on_the_other(
    tiered_services: tuple[ServiceHandle, ServiceHandle], wait_until: WaitUntil
) -> None:
    first, second = tiered_services
    first.state.manager.set_anomaly(7, {"anomalous": False})
    assert wait_until(lambda: _shared_tier_settled(first, second))
    assert second.state.manager.get_anomaly(7) == {"anomalous": False}
    with httpx.Client(headers=OPERATOR, base_url=first.url, timeout=30.0) as http:
        assert http.delete("/api/v1/cache/anomalies").status_code == 200
    assert wait_until(lambda: len(second.state.manager.cache("anomalies")) == 0)
    assert second.state.manager.get_anomaly(7) is None


def test_cache_metrics_report_the_second_tier_and_the_redis_connection(
    tiered_services: tuple[ServiceHandle, ServiceHandle],
) -> None:
    first, second = tiered_services
    first.state.manager.set_fingerprint(11, "grouped")
    with httpx.Client(headers=OPERATOR, base_url=second.url, timeout=30.0) as http:
        second.state.manager.get_fingerprint(11)
        metrics = http.get("/api/v1/metrics/cache").json()["metrics"]
    assert set(metrics["query_results_cache"]["l2"]) >= {"hits", "misses", "errors", "bypassed"}
    assert metrics["query_results_cache"]["l2"]["hits"] >= 1
    assert metrics["shared_tier"]["redis"] == "ok"
    assert metrics["shared_tier"]["subscribed"] is True


def test_prometheus_exports_the_second_tier_per_cache(
    tiered_services: tuple[ServiceHandle, ServiceHandle],
) -> None:
    with httpx.Client(headers=OPERATOR, base_url=tiered_services[0].url, timeout=30.0) as http:
        text = http.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["pgcache_l2_hits"].type == "counter"
    assert families["pgcache_l2_latency_seconds"].type == "histogram"
    assert {sample.labels["cache"] for sample in families["pgcache_l2_hits"].samples} == {
        "features", "predictions", "fingerprints", "explain_plans", "anomalies"
    }  # fmt: skip
    assert families["pgcache_redis_degraded"].samples[0].value == 0.0


def test_what_one_service_extracted_the_other_serves_without_the_database(
    tiered_services: tuple[ServiceHandle, ServiceHandle], pg_workload: Workload, postgres_url: str
) -> None:
    first, second = tiered_services
    query_hash = pg_workload.positive_ids[3]
    with (
        httpx.Client(headers=OPERATOR, base_url=first.url, timeout=30.0) as one,
        httpx.Client(headers=OPERATOR, base_url=second.url, timeout=30.0) as other,
    ):
        statements = extractor_statement_calls(postgres_url)
        assert one.get(FEATURES.format(query_hash)).status_code == 200
        assert extractor_statement_calls(postgres_url) == statements + 1
        features = other.get(FEATURES.format(query_hash))
        assert features.status_code == 200
        assert features.json()["query_hash"] == query_hash
        assert extractor_statement_calls(postgres_url) == statements + 1  # an L2 hit
        assert one.post(PREDICT.format(query_hash), json={}).status_code == 200
        assert other.post(PREDICT.format(query_hash), json={}).status_code == 200
        metrics = other.get("/api/v1/metrics/cache").json()["metrics"]
    assert metrics["feature_cache"]["l2"]["hits"] >= 1
    assert metrics["prediction_cache"]["l2"]["hits"] >= 1
    assert metrics["prediction_cache"]["l2"]["loads"] == 0  # no ML call of its own
