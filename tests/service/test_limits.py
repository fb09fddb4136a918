"""Bounded inputs, as a hostile client meets them over real HTTP (PostgreSQL with
pg_stat_statements and the reference ML service on loopback).

A body over ``MAX_BODY_BYTES`` is refused (413) before it is read, announced or chunked; JSON
nested 100,000 deep is a 422, not a 500; ``model_id`` and ``scenario`` are bounded in length and
character set, so a flood of huge ids stores nothing; unknown query hashes cost one database read
per ``NEGATIVE_CACHE_TTL``.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from tests.support.postgres import Workload, extractor_statement_calls, unknown_queryid
from tests.support.service import OPERATOR

from pgcache.service.app import ServiceHandle, serve_in_thread
from pgcache.service.limits import MAX_JSON_DEPTH, check_identifier, json_depth, parse_json
from pgcache.service.problems import ProblemError

MAX_BODY = 4096
PREDICT = "/api/v1/queries/{}/predict"
FEATURES = "/api/v1/queries/{}/features"


@pytest.fixture(scope="module")
def service_overrides() -> dict[str, Any]:
    return {"max_database_conns": 4, "max_body_bytes": MAX_BODY, "negative_cache_ttl": 3600}


@pytest.fixture(scope="module")
def client(service: ServiceHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30.0) as http:
        yield http


def _problem(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    assert "Traceback" not in response.text
    return body


def _raw_exchange(url: str, head: bytes, body_chunks: Iterable[bytes] = ()) -> bytes:
    """Send ``head`` then as many ``body_chunks`` as the server reads; its answer's first bytes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:  # the server answered and closed: it stopped reading
            pass
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer


# --- body size -------------------------------------------------------------------------------


def test_a_body_announced_over_the_limit_is_413_before_it_is_sent(
    service: ServiceHandle, pg_workload: Workload
) -> None:
    # 100 MiB announced, nothing sent: a server that reads the body never answers.
    head = (
        f"POST {PREDICT.format(pg_workload.negative_ids[0])} HTTP/1.1\r\nHost: pgcache\r\n"
        "Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
    ).encode()
    answer = _raw_exchange(service.url, head)
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_a_chunked_body_is_read_no_further_than_the_limit(
    service: ServiceHandle, pg_workload: Workload
) -> None:
    head = (
        f"POST {PREDICT.format(pg_workload.negative_ids[0])} HTTP/1.1\r\nHost: pgcache\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(1600):  # 100 MiB if the server kept reading
            sent += 65536
            yield b"10000\r\n" + b" " * 65536 + b"\r\n"

    answer = _raw_exchange(service.url, head, chunks())
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert sent < 800 * 65536  # the server closed the connection long before the end


def test_413_is_a_json_problem_naming_the_limit(
    client: httpx.Client, pg_workload: Workload
) -> None:
    body = {"scenario": "current", "model_id": "m" * (MAX_BODY * 2)}
    response = client.post(PREDICT.format(pg_workload.negative_ids[0]), json=body)
    detail = _problem(response, 413, "body_too_large")["detail"]
    assert f"{MAX_BODY} bytes" in detail
    assert "MAX_BODY_BYTES" in detail


# --- JSON depth ------------------------------------------------------------------------------


@pytest.mark.parametrize("opening", [b"[", b'{"a":'], ids=["arrays", "objects"])
def test_json_nested_100000_deep_is_422_not_500(
    service: ServiceHandle, pg_workload: Workload, opening: bytes
) -> None:
    settings = service.state.settings.model_copy(update={"max_body_bytes": 1_000_000})
    with (
        serve_in_thread(settings) as deep,
        httpx.Client(base_url=deep.url, timeout=30.0) as client,
    ):
        response = client.post(
            PREDICT.format(pg_workload.negative_ids[0]), content=opening * 100_000
        )
    assert (
        f"deeper than {MAX_JSON_DEPTH} levels" in _problem(response, 422, "invalid_body")["detail"]
    )


def test_json_depth_ignores_brackets_inside_strings() -> None:
    assert json_depth(b'{"a": "[[[[{{{{"}') == 1
    assert json_depth(b'[[1], [[2]], "\\"]]]"]') == 3
    assert json_depth(b"42") == 0


def test_json_depth_is_linear_on_unterminated_escaped_strings() -> None:
    assert json_depth(b'"\\"' * 30_000 + b"\\") == 0


def test_parse_json_accepts_the_limit_and_refuses_one_more() -> None:
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(ProblemError):
        parse_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))


# --- strings that become cache keys ---------------------------------------------------------


@pytest.mark.parametrize(
    "model_id",
    ["m" * 65, "has space", "new\nline", "-leading-dash", "", "é"],
    ids=["too-long", "space", "newline", "leading-dash", "empty", "non-ascii"],
)
def test_a_model_id_outside_its_bounds_is_422(
    client: httpx.Client, pg_workload: Workload, model_id: str
) -> None:
    response = client.post(PREDICT.format(pg_workload.negative_ids[0]), json={"model_id": model_id})
    _problem(response, 422, "invalid_body")


@pytest.mark.parametrize("scenario", ["s" * 65, "a b", "<script>"], ids=["long", "space", "markup"])
def test_a_scenario_outside_its_bounds_is_422(
    client: httpx.Client, pg_workload: Workload, scenario: str
) -> None:
    response = client.get(
        FEATURES.format(pg_workload.negative_ids[0]), params={"scenario": scenario}
    )
    _problem(response, 422, "invalid_scenario")


@pytest.mark.parametrize("value", ["current", "peak-2024.q4", "team/model:v1_2", "m" * 64])
def test_identifiers_within_bounds_are_accepted(value: str) -> None:
    assert check_identifier("model_id", value) == value


def test_a_flood_of_huge_model_ids_stores_nothing(
    client: httpx.Client, service: ServiceHandle, pg_workload: Workload
) -> None:
    predictions = service.state.manager.cache("predictions")
    before = len(predictions)
    for n in range(100):
        response = client.post(
            PREDICT.format(pg_workload.negative_ids[0]),
            json={"model_id": f"{n}-" + "x" * 1_000_000},
        )
        assert response.status_code == 413
    assert len(predictions) == before


# --- unknown query hashes --------------------------------------------------------------------


def test_a_flood_of_one_unknown_hash_costs_one_database_read(
    client: httpx.Client, pg_workload: Workload, postgres_url: str
) -> None:
    unknown = unknown_queryid(pg_workload, 1) + 7
    before = extractor_statement_calls(postgres_url)
    for _ in range(50):
        assert client.get(FEATURES.format(unknown)).status_code == 404
        assert client.post(PREDICT.format(unknown)).status_code == 404
    assert extractor_statement_calls(postgres_url) - before == 1


def test_invalidating_a_hash_forgets_that_it_was_unknown(
    client: httpx.Client, pg_workload: Workload, postgres_url: str
) -> None:
    unknown = unknown_queryid(pg_workload, -1) - 11
    assert client.get(FEATURES.format(unknown)).status_code == 404
    response = client.post(
        "/api/v1/cache/invalidate",
        json={"query_hash": unknown},
        headers=OPERATOR,
    )
    assert response.status_code == 200
    before = extractor_statement_calls(postgres_url)
    assert client.get(FEATURES.format(unknown)).status_code == 404
    assert extractor_statement_calls(postgres_url) - before == 1


# --- connections -----------------------------------------------------------------------------


def _wait_closed(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (reading whatever it sends)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def test_a_connection_that_sends_nothing_is_closed(service: ServiceHandle) -> None:
    host, port = service.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        assert _wait_closed(sock, 60.0)


def test_a_request_head_trickled_past_the_timeout_is_closed(service: ServiceHandle) -> None:
    host, port = service.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.settimeout(1.0)
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: pgcache\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed


def test_a_connection_that_keeps_asking_outlives_the_head_timeout(service: ServiceHandle) -> None:
    # Six requests 1.5 s apart span 7.5 s, past the 5 s keep-alive timeout: each answer moves
    # the deadline, so the connection opened first is still the one answering the last.
    host, port = service.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        answers = sock.makefile("rb")
        for number in range(6):
            if number:
                time.sleep(1.5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: pgcache\r\n\r\n")
            assert answers.readline().startswith(b"HTTP/1.1 200 ")
            length = 0
            while (line := answers.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            assert answers.read(length) == b'{"status":"ok"}'


def test_closed_idle_connections_are_counted(client: httpx.Client, service: ServiceHandle) -> None:
    host, port = service.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        assert _wait_closed(sock, 60.0)
    metrics = client.get("/metrics").text
    found = re.search(
        r'^pgcache_connections_refused_total\{reason="head_timeout"\} (\S+)$', metrics, re.M
    )
    assert found is not None
    assert float(found[1]) >= 1
