"""The dashboard over real HTTP: the page and its files, and the server-sent events of
/api/v1/metrics/stream (one a second, reconnection, listeners freed, DASHBOARD=false).

A service without a database is enough here: the stream reads the caches, the ML client and the
request recorder, and the tests put lookups in the service's own caches. The page in a real
browser, with PostgreSQL behind it, is tests/service/test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.support.caches import WaitUntil

from pgcache.config import Settings
from pgcache.errors import ConfigError
from pgcache.observability.snapshot import CacheStatusResponse
from pgcache.service.app import ServiceHandle, serve_in_thread
from pgcache.service.metrics_stream import DEFAULT_HISTORY, MetricsStream

STREAM = "/api/v1/metrics/stream"


class EventReader:
    """One listener of the stream: each :meth:`next` is the next event's data, with its id."""

    def __init__(
        self, url: str, *, history: int | None = 0, last_event_id: str | None = None
    ) -> None:
        self.client = httpx.Client(timeout=httpx.Timeout(15.0))
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        params = {} if history is None else {"history": str(history)}
        request = self.client.build_request("GET", url + STREAM, params=params, headers=headers)
        self.response = self.client.send(request, stream=True)
        self.retry: int | None = None
        self._lines = self.response.iter_lines()

    def next(self) -> dict[str, Any]:
        event_id, data = None, None
        for line in self._lines:
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line.startswith("retry: "):
                self.retry = int(line[7:])
            elif not line and data is not None:
                data["event_id"] = event_id
                return dict(data)
        raise EOFError("the stream ended")

    def close(self) -> None:
        self.response.close()
        self.client.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _settings(**overrides: Any) -> Settings:
    return Settings.load(**{"database_url": None, "retry_max_attempts": 0, **overrides})


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceHandle]:
    with serve_in_thread(_settings()) as handle:
        yield handle


@pytest.fixture(scope="module")
def client(service: ServiceHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30.0) as http:
        yield http


def _stream(service: ServiceHandle) -> MetricsStream:
    stream = service.state.metrics_stream
    assert stream is not None
    return stream


def _sequence(event_id: str) -> int:
    return int(event_id.rpartition("-")[2])


def _next_where(reader: EventReader, wanted: Any, limit: int = 30) -> dict[str, Any]:
    """The first of the next ``limit`` events for which ``wanted(event)`` is true."""
    for _ in range(limit):
        event = reader.next()
        if wanted(event):
            return event
    raise AssertionError(f"none of {limit} events was the one wanted")


# --- the page --------------------------------------------------------------------------------


def test_page_is_html_that_runs_only_its_own_files(client: httpx.Client) -> None:
    response = client.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "http" not in policy
    assert response.headers["cache-control"] == "no-cache"
    assert not re.search(r"(src|href)=\"(https?:)?//", response.text)


def test_every_file_the_page_names_is_served_with_a_versioned_url(client: httpx.Client) -> None:
    page = client.get("/dashboard").text
    references = re.findall(r'(?:src|href)="(dashboard/static/[^"]+)"', page)
    assert len(references) == 4
    for reference in references:
        assert re.search(r"\?v=[0-9a-f]{16}$", reference)
        response = client.get("/" + reference)
        assert response.status_code == 200, reference
        assert response.headers["content-type"].startswith(
            "text/javascript" if ".js" in reference else "text/css"
        )
        assert "immutable" in response.headers["cache-control"]


def test_the_chart_library_is_vendored_with_its_licence() -> None:
    from importlib.resources import files

    vendor = files("pgcache.service").joinpath("static", "vendor", "uplot")
    assert "MIT License" in vendor.joinpath("LICENSE").read_text()
    assert (
        vendor.joinpath("uPlot.iife.min.js")
        .read_text()
        .startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    )


def test_a_file_that_is_not_the_pages_is_404(client: httpx.Client) -> None:
    for name in ("../dashboard.py", "vendor/uplot/LICENSE", "nothing.js"):
        response = client.get(f"/dashboard/static/{name}")
        assert response.status_code == 404, name
        assert response.json()["error"] == "not_found"


# --- the stream ------------------------------------------------------------------------------


def test_stream_is_server_sent_events_that_ask_for_a_quick_reconnection(
    service: ServiceHandle,
) -> None:
    with EventReader(service.url) as reader:
        assert reader.response.status_code == 200
        assert reader.response.headers["content-type"].startswith("text/event-stream")
        assert reader.response.headers["cache-control"] == "no-store"
        reader.next()
        assert reader.retry == 1000


def test_stream_sends_one_event_a_second(service: ServiceHandle) -> None:
    with EventReader(service.url) as reader:
        events = [reader.next() for _ in range(4)]
    sequences = [_sequence(event["event_id"]) for event in events]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    # Each sample says how long after the previous one it was taken, on the service's
    # monotonic clock: scheduled a second apart and never early (asyncio never wakes early).
    # How many arrive in a wall-clock window is not asserted: a busy machine delays them.
    assert all(event["interval"] >= 0.99 for event in events[1:])


def test_event_has_the_numbers_of_the_cache_metrics_endpoint(
    service: ServiceHandle, client: httpx.Client
) -> None:
    manager = service.state.manager
    for query_hash in range(5):
        manager.get_fingerprint(query_hash)
        manager.set_fingerprint(query_hash, {"shape": query_hash})
        manager.get_fingerprint(query_hash)
    with EventReader(service.url) as reader:
        reader.next()
        event = reader.next()  # sampled after the lookups above
    reported = client.get("/api/v1/metrics/cache").json()
    streamed = CacheStatusResponse.model_validate(event["status"])
    assert streamed.enabled == reported["enabled"]
    assert streamed.max_size == reported["max_size"]
    for metrics in (reported["metrics"], event["status"]["metrics"]):
        metrics.pop("taken_at")
    assert event["status"]["metrics"] == reported["metrics"]
    assert event["caches"]["fingerprints"]["metrics_key"] == "query_results_cache"


def test_event_reports_hit_rate_and_lookups_of_the_last_interval(service: ServiceHandle) -> None:
    manager = service.state.manager

    def looked_up(event: dict[str, Any]) -> bool:
        return (event["caches"]["anomalies"]["lookups_per_s"] or 0) > 0

    manager.set_anomaly(7, {"score": 1})
    with EventReader(service.url) as reader:
        reader.next()
        for _ in range(3):
            manager.get_anomaly(7)
        manager.get_anomaly(8)
        event = _next_where(reader, looked_up, limit=5)
    assert event["caches"]["anomalies"]["hit_rate_now"] == 75.0
    assert event["caches"]["anomalies"]["lookups_per_s"] == pytest.approx(
        4 / event["interval"], rel=1e-3
    )


def test_requests_are_counted_per_route_and_the_stream_is_not(
    service: ServiceHandle, client: httpx.Client
) -> None:
    def counted(event: dict[str, Any]) -> bool:
        row = (event["requests"] or {}).get("GET /healthz")
        return row is not None and row["p50_ms"] is not None

    with EventReader(service.url) as reader:
        reader.next()
        for _ in range(5):
            client.get("/healthz").raise_for_status()
        client.get("/no/such/route")
        event = _next_where(reader, counted, limit=5)
    requests = event["requests"]
    assert requests["GET /healthz"]["requests"] >= 5
    assert 0 < requests["GET /healthz"]["p50_ms"] <= requests["GET /healthz"]["p99_ms"]
    assert requests["other"]["requests"] >= 1
    assert not any("stream" in endpoint for endpoint in requests)


def _oldest_kept(service: ServiceHandle) -> int:
    """The sequence number of the oldest event the stream keeps now."""
    latest = _stream(service).last_event_id
    assert latest is not None
    return max(1, _sequence(latest) - DEFAULT_HISTORY + 1)


def test_a_new_listener_first_gets_the_history(service: ServiceHandle) -> None:
    oldest = _oldest_kept(service)
    latest = _stream(service).last_event_id
    assert latest is not None
    with EventReader(service.url, history=None) as reader:
        events = [reader.next()]
        while _sequence(events[-1]["event_id"]) < _sequence(latest):
            events.append(reader.next())
    sequences = [_sequence(event["event_id"]) for event in events]
    assert sequences[0] in (oldest, oldest + 1)  # a sample may fall between the two reads
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))


def test_history_asks_for_that_many_past_events(service: ServiceHandle) -> None:
    with EventReader(service.url, history=2) as reader:
        latest = _stream(service).last_event_id
        first, second = reader.next(), reader.next()
    assert latest is not None
    assert _sequence(second["event_id"]) == _sequence(first["event_id"]) + 1
    assert _sequence(first["event_id"]) >= _sequence(latest) - 2


def test_history_out_of_range_is_422(client: httpx.Client) -> None:
    for value in ("-1", "x", str(DEFAULT_HISTORY + 1)):
        response = client.get(STREAM, params={"history": value})
        assert response.status_code == 422, value
        assert response.json()["error"] == "invalid_history"


def test_reconnecting_with_last_event_id_resumes_after_it(
    service: ServiceHandle, wait_until: WaitUntil
) -> None:
    stream = _stream(service)

    def moved_on() -> bool:
        latest = stream.last_event_id
        return latest is not None and _sequence(latest) >= _sequence(seen) + 2

    # Another page stays open meanwhile: the stream is sampled only while someone listens.
    with EventReader(service.url, history=0) as other:
        other.next()
        with EventReader(service.url) as reader:
            seen = reader.next()["event_id"]
        assert wait_until(moved_on, timeout=30.0)
        with EventReader(service.url, last_event_id=seen) as reader:
            resumed = [reader.next() for _ in range(3)]
    assert [_sequence(event["event_id"]) for event in resumed] == [
        _sequence(seen) + 1,
        _sequence(seen) + 2,
        _sequence(seen) + 3,
    ]


def test_an_id_of_another_stream_gets_the_history_instead(service: ServiceHandle) -> None:
    # A browser that reconnects to a restarted service sends an id the new stream never gave.
    oldest = _oldest_kept(service)
    with EventReader(service.url, history=None, last_event_id="0123abcd-99999") as reader:
        first = reader.next()
    assert _sequence(first["event_id"]) in (oldest, oldest + 1)
    assert not first["event_id"].startswith("0123abcd-")


def test_closing_a_stream_frees_its_listener(service: ServiceHandle, wait_until: WaitUntil) -> None:
    stream = _stream(service)
    assert wait_until(lambda: stream.listeners == 0, timeout=10.0)
    with EventReader(service.url) as watcher:
        _next_where(watcher, lambda event: event["listeners"] == 1)
        with EventReader(service.url) as other:
            other.next()
            _next_where(watcher, lambda event: event["listeners"] == 2)
        _next_where(watcher, lambda event: event["listeners"] == 1)
    assert wait_until(lambda: stream.listeners == 0, timeout=10.0)


def test_stopping_the_service_ends_open_streams_cleanly() -> None:
    handle = serve_in_thread(_settings())
    try:
        reader = EventReader(handle.url)
        reader.next()
    finally:
        handle.stop()
    # The body ended properly (httpx raises RemoteProtocolError for a cut connection).
    with reader, pytest.raises(EOFError):
        _next_where(reader, lambda event: False)


# --- DASHBOARD=false -------------------------------------------------------------------------


def test_dashboard_false_turns_the_page_and_the_stream_off() -> None:
    with (
        serve_in_thread(_settings(dashboard=False)) as handle,
        httpx.Client(base_url=handle.url, timeout=30.0) as http,
    ):
        assert handle.state.metrics_stream is None
        for path in ("/dashboard", STREAM, "/dashboard/static/dashboard.js"):
            response = http.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"] == "dashboard_disabled"
        assert http.get("/healthz").status_code == 200


def test_dashboard_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD", "false")
    assert Settings.load().dashboard is False
    monkeypatch.setenv("DASHBOARD", "maybe")
    with pytest.raises(ConfigError, match=r"DASHBOARD='maybe'"):
        Settings.load()
