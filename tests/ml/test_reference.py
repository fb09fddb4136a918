"""The reference ML service, spoken to over HTTP on loopback (stdlib urllib and the client)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.factories import make_features

from pgcache.config import Settings
from pgcache.ml.client import MLClient
from pgcache.ml.reference import MODEL_VERSION, MLServiceHandle, estimate, serve_in_thread


@pytest.fixture(scope="module")
def service() -> Iterator[MLServiceHandle]:
    with serve_in_thread() as handle:
        yield handle


def _post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def _predict_body(**features: Any) -> bytes:
    f = make_features(**features)
    return json.dumps(
        {
            "query_hash": f.query_hash,
            "features": f.model_dump(mode="json"),
            "parameters": {},
            "scenario": "current",
            "model_id": None,
        }
    ).encode()


def test_health_reports_healthy(service: MLServiceHandle) -> None:
    with urllib.request.urlopen(f"{service.url}/api/health", timeout=5) as response:
        body = json.loads(response.read())
    assert (response.status, body["status"], body["model_version"]) == (
        200,
        "healthy",
        MODEL_VERSION,
    )


def test_predict_answers_in_the_original_format(service: MLServiceHandle) -> None:
    status, body = _post(f"{service.url}/api/predict/query-execution", _predict_body())
    assert status == 200
    assert set(body) >= {
        "predicted_execution_time_ms",
        "confidence_score",
        "confidence_interval",
        "model_version",
        "prediction_timestamp",
    }
    interval = body["confidence_interval"]
    assert interval["lower_bound_ms"] <= body["predicted_execution_time_ms"]
    assert body["predicted_execution_time_ms"] <= interval["upper_bound_ms"]


def test_predict_is_deterministic_for_the_same_features(service: MLServiceHandle) -> None:
    url = f"{service.url}/api/predict/query-execution"
    first, second = (_post(url, _predict_body())[1] for _ in range(2))
    for name in ("predicted_execution_time_ms", "confidence_score", "confidence_interval"):
        assert first[name] == second[name]


def test_estimate_grows_with_complexity_disk_reads_and_load() -> None:
    base = estimate(make_features()).predicted_ms
    assert estimate(make_features(execution_complexity=0.9)).predicted_ms > base
    assert estimate(make_features(shared_buffer_hit_ratio=0.2)).predicted_ms > base
    assert estimate(make_features(calls_per_minute=10_000.0)).predicted_ms > base


def test_estimate_interval_is_196_standard_deviations_and_never_negative() -> None:
    result = estimate(make_features(stddev_exec_time_ms=1.0))
    assert result.upper_ms - result.predicted_ms == pytest.approx(1.96)
    assert estimate(make_features(stddev_exec_time_ms=100.0)).lower_ms == 0.0


def test_estimate_of_an_idle_query_is_zero() -> None:
    result = estimate(make_features(mean_exec_time_ms=0.0, stddev_exec_time_ms=0.0))
    assert (result.predicted_ms, result.lower_ms, result.upper_ms) == (0.0, 0.0, 0.0)


def test_validate_reports_error_percent_and_interval(service: MLServiceHandle) -> None:
    body = {
        "query_hash": 7,
        "predicted_execution_time_ms": 11.0,
        "actual_execution_time_ms": 10.0,
        "confidence_interval": {"lower_bound_ms": 5.0, "upper_bound_ms": 15.0},
    }
    status, answer = _post(f"{service.url}/api/validate/prediction", json.dumps(body).encode())
    assert status == 200
    assert answer["error_ms"] == pytest.approx(1.0)
    assert answer["error_percent"] == pytest.approx(10.0)
    assert answer["within_interval"] is True


def test_train_accepts_and_returns_a_job_id(service: MLServiceHandle) -> None:
    body = {"model_type": "performance", "features": [make_features().model_dump(mode="json")]}
    status, answer = _post(f"{service.url}/api/train/performance-model", json.dumps(body).encode())
    assert status == 202
    assert answer["status"] == "accepted"
    assert answer["samples"] == 1
    assert answer["job_id"]


def test_a_body_that_is_not_json_gets_400(service: MLServiceHandle) -> None:
    status, answer = _post(f"{service.url}/api/predict/query-execution", b"{not json")
    assert status == 400
    assert "not JSON" in answer["detail"]


def test_a_body_of_the_wrong_shape_gets_422_naming_the_field(service: MLServiceHandle) -> None:
    body = json.loads(_predict_body())
    body["features"]["calls"] = -1
    status, answer = _post(f"{service.url}/api/predict/query-execution", json.dumps(body).encode())
    assert status == 422
    assert "features.calls" in answer["detail"]


def test_the_client_gets_predictions_from_the_reference_service(service: MLServiceHandle) -> None:
    features = make_features()
    with MLClient(Settings.load(ml_service_url=service.url)) as client:
        prediction = client.predict(features, model_id="m1")
        validation = client.validate_prediction(features.query_hash, prediction, 4.0)
        job = client.train_model([features])
        health = client.health()
    expected = estimate(features)
    assert prediction.predicted_execution_time_ms == pytest.approx(expected.predicted_ms)
    assert prediction.confidence == pytest.approx(expected.confidence)
    assert (prediction.model_id, prediction.model_version) == ("m1", MODEL_VERSION)
    assert validation.actual_execution_time_ms == 4.0
    assert job.samples == 1
    assert health.status == "healthy"


def test_the_client_rejects_parameters_json_cannot_carry(service: MLServiceHandle) -> None:
    with (
        MLClient(Settings.load(ml_service_url=service.url)) as client,
        pytest.raises(ValueError, match="parameters="),
    ):
        client.train_model(parameters={"x": float("inf")})
    assert client.stats().requests == 0


def test_stop_closes_the_port() -> None:
    handle = serve_in_thread()
    port = int(handle.url.rsplit(":", 1)[1])
    handle.stop()
    assert not handle.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_serve_in_thread_rejects_a_bad_port() -> None:
    with pytest.raises(ValueError, match="port=70000"):
        serve_in_thread(port=70000)


def test_python_m_pgcache_ml_reference_serves_on_the_given_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgcache.ml.reference",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/health", timeout=2
                ) as response:
                    assert json.loads(response.read())["status"] == "healthy"
                break
            except OSError:
                assert process.poll() is None, "the service exited"
                assert time.monotonic() < deadline, "the service did not answer within 30 s"
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(10)
