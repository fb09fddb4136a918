"""The service stack: the features endpoint beside one-route Starlette apps, on the same server.

Run with ``pytest benches/test_service_stack.py --benchmark-only -p no:timeout -s`` (``make
bench``). The rate comparison needs ``wrk`` on PATH (Debian: ``apt-get install wrk``), the
instruction counts ``valgrind``; each test skips without its tool.

Three servers run side by side, each in its own process, each with the uvicorn configuration
``pgcache serve`` uses (:func:`pgcache.cli.serve.uvicorn_config`: uvloop, httptools, the
request-head timeout, ``MAX_CLIENT_CONNS``; log level warning, so no access lines):

* ``pgcache``: the service (``create_app``, every middleware) on the private PostgreSQL, asked
  for the cached features of one known query hash (warmed up first);
* ``starlette-json``: one Starlette route at the same path answering ``JSONResponse`` of the
  same features (the same body, encoded on every request, as such an app does);
* ``starlette-bytes``: the same route answering the body already encoded: the floor of a
  Starlette app on this server, with no work of its own.

For each of ``ROUNDS`` rounds and each connection count (1, 8, 32), ``wrk -t1 -cN -dSECONDS``
runs against every app, in an order that rotates every time, so that all see the same noise.
Reported per connection count: each app's requests per second (median and range), the ratio
of pgcache to each baseline within a round (median and range), and the server CPU per request
(the process's user + system time over the run divided by the requests wrk counted), which a
loaded machine distorts less than the rate. Client and servers share the machine's cores.

``test_instructions_per_request_in_process`` counts, with callgrind, the instructions one
request costs inside each app (the ASGI call, no server, no socket: the difference of two runs
with different request counts), which no other load on the machine changes.

Settings: ``STACK_ROUNDS`` (default 5), ``STACK_SECONDS`` (default 5). With ``STACK_PROFILE``
set to a directory (``py-spy`` must be installed: ``pip install py-spy``), each server is also
sampled by py-spy during one more run at 8 connections: the share of its CPU samples by the
part of the stack the leaf frame is in, and the pgcache and Starlette functions most often on
the stack (inclusive), are printed; the raw stacks are left in that directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from tests.support.service_load import cpu_seconds, free_port, wait_until_answers

ROUNDS = int(os.environ.get("STACK_ROUNDS", "5"))
SECONDS = int(os.environ.get("STACK_SECONDS", "5"))
CONNECTIONS = (1, 8, 32)
APPS = ("pgcache", "starlette-json", "starlette-bytes")
BASELINES = APPS[1:]
PATH = "/api/v1/queries/{}/features"
_BODY_VARIABLE = "PGCACHE_STACK_BODY"
_PATH_VARIABLE = "PGCACHE_STACK_PATH"
_COLLECTED = re.compile(r"Collected : (\d+)")

# --- the servers -----------------------------------------------------------------------------


def one_route_app(encoded: bool) -> Any:
    """A baseline: one route answering the features JSON (from the environment), as a dict
    encoded on every request (``JSONResponse``) or, ``encoded``, as the bytes themselves."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    body = os.environ[_BODY_VARIABLE].encode()
    features = json.loads(body)

    async def as_json(request: Request) -> Response:
        return JSONResponse(features)

    async def as_bytes(request: Request) -> Response:
        return Response(body, media_type="application/json")

    answer = as_bytes if encoded else as_json
    return Starlette(routes=[Route(PATH.format("{query_hash}"), answer, methods=["GET"])])


def _factory(app: str) -> Any:
    from pgcache.cli.serve import SERVICE_FACTORY

    if app == "pgcache":
        return SERVICE_FACTORY
    return lambda: one_route_app(encoded=app == "starlette-bytes")


def serve(app: str, port: int) -> int:
    """Run ``app`` (one of :data:`APPS`) on 127.0.0.1:``port`` as ``pgcache serve`` would."""
    from pgcache.cli.serve import run_uvicorn, uvicorn_config
    from pgcache.config import Settings

    settings = Settings.load()
    config = uvicorn_config(
        _factory(app), settings, host="127.0.0.1", port=port, log_level="warning"
    )
    return run_uvicorn(config, app, shutdown_timeout=settings.shutdown_timeout.total_seconds())


class _Server:
    """One app in a process of its own, at ``url``."""

    def __init__(self, app: str, env: dict[str, str], cwd: Path) -> None:
        port = free_port()
        command = [sys.executable, __file__, app, str(port)]
        self.process = subprocess.Popen(command, env=env, cwd=cwd)
        self.url = f"http://127.0.0.1:{port}"
        self.env = env
        self.cwd = cwd

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


@pytest.fixture(scope="module")
def servers(
    postgres_url: str, pg_workload: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[_Server, str]]]:
    """Every app running, each with the URL of the features of one known query hash."""
    query_hash = sorted(pg_workload.queryids.values())[0]
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        "DATABASE_URL": postgres_url,
        "MAX_IDLE_DATABASE_CONNS": "1",
    }
    cwd = tmp_path_factory.mktemp("stack")  # a directory of its own: no stray .env file is read
    started: dict[str, tuple[_Server, str]] = {}
    try:
        service = _Server("pgcache", env, cwd)
        started["pgcache"] = (service, service.url + PATH.format(query_hash))
        wait_until_answers(started["pgcache"][1], service.process, timeout=60.0)
        body = httpx.get(started["pgcache"][1]).text  # cached from now on
        for app in BASELINES:
            baseline = _Server(app, {**env, _BODY_VARIABLE: body}, cwd)
            started[app] = (baseline, baseline.url + PATH.format(query_hash))
            wait_until_answers(started[app][1], baseline.process, timeout=60.0)
            if httpx.get(started[app][1]).json() != json.loads(body):
                raise RuntimeError(f"{app} does not answer the service's body")
        yield started
    finally:
        for server, _ in started.values():
            server.stop()


# --- wrk -------------------------------------------------------------------------------------

_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_TOTAL = re.compile(r"(\d+) requests in")


def _wrk(url: str, connections: int, pid: int) -> tuple[float, float]:
    """(requests per second, server CPU microseconds per request) of one wrk run (Linux)."""
    before = cpu_seconds(pid)
    run = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{SECONDS}s", url],
        capture_output=True,
        text=True,
        check=True,
    )
    after = cpu_seconds(pid)
    if "Non-2xx" in run.stdout or "Socket errors" in run.stdout:
        raise RuntimeError(f"wrk saw errors against {url}:\n{run.stdout}")
    rate, total = _RATE.search(run.stdout), _TOTAL.search(run.stdout)
    if rate is None or total is None:
        raise RuntimeError(f"wrk's output has no rate or total:\n{run.stdout}")
    if before is None or after is None:
        raise RuntimeError("no /proc: the server's CPU time cannot be read here")
    return float(rate[1]), (after - before) / max(1, int(total[1])) * 1e6


def _interleaved(servers: dict[str, tuple[_Server, str]]) -> dict[int, dict[str, Any]]:
    """Every round, every connection count, every app, in an order that rotates each time."""
    rates: dict[int, dict[str, list[float]]] = {c: {a: [] for a in APPS} for c in CONNECTIONS}
    cpu: dict[int, dict[str, list[float]]] = {c: {a: [] for a in APPS} for c in CONNECTIONS}
    turn = 0
    for _ in range(ROUNDS):
        for connections in CONNECTIONS:
            shift = turn % len(APPS)
            turn += 1
            for app in APPS[shift:] + APPS[:shift]:
                server, url = servers[app]
                rate, cpu_us = _wrk(url, connections, server.process.pid)
                rates[connections][app].append(rate)
                cpu[connections][app].append(cpu_us)
    figures: dict[int, dict[str, Any]] = {}
    for connections in CONNECTIONS:
        row: dict[str, Any] = {}
        for app in APPS:
            row[f"{app}_rps"] = _median_range(rates[connections][app])
            row[f"{app}_cpu_us"] = round(statistics.median(cpu[connections][app]), 1)
        for base in BASELINES:
            pairs = zip(rates[connections]["pgcache"], rates[connections][base], strict=True)
            row[f"ratio_to_{base}"] = _median_range([a / b for a, b in pairs], digits=3)
        figures[connections] = row
    return figures


def _median_range(values: list[float], digits: int = 0) -> tuple[float, float, float]:
    """(median, lowest, highest), rounded to ``digits``."""
    median, low, high = statistics.median(values), min(values), max(values)
    return round(median, digits), round(low, digits), round(high, digits)


# --- where the CPU goes (py-spy) --------------------------------------------------------------

_PARTS = (
    ("pgcache.service", "pgcache/service/"),
    ("pgcache (other)", "pgcache/"),
    ("uvicorn", "uvicorn/"),
    ("starlette", "starlette/"),
    ("pydantic", "pydantic"),
    ("logging", "logging/"),
    ("event loop and HTTP parser (C)", "Runner.run (asyncio/runners.py"),
    ("asyncio", "asyncio/"),
)


def _part(frame: str) -> str:
    return next((name for name, marker in _PARTS if marker in frame), "other")


def summarise(stacks: Path) -> str:
    """py-spy's raw stacks: the share of samples by the leaf frame's part of the stack, and the
    25 pgcache and Starlette functions most often on the stack (inclusive)."""
    by_part: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        frames_text, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = frames_text.split(";")
        total += count
        by_part[_part(frames[-1])] += count
        for function in {f.split(" (")[0] + f" [{_part(f)}]" for f in frames[3:]}:
            if "pgcache" in function or "starlette" in function:
                by_function[function] += count
    parts = ", ".join(f"{name} {100 * n / total:.1f} %" for name, n in by_part.most_common())
    functions = "\n".join(
        f"  {100 * n / total:5.1f} %  {name}" for name, n in by_function.most_common(25)
    )
    return f"{total} samples; leaf frames: {parts}\ninclusive:\n{functions}"


def _profile(url: str, pid: int) -> str:
    """py-spy's samples of ``pid`` during one wrk run at 8 connections, summarised."""
    stacks = Path(os.environ["STACK_PROFILE"]) / f"py-spy-{pid}.txt"
    stacks.parent.mkdir(parents=True, exist_ok=True)
    spy_program = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [spy_program, "record", "--pid", str(pid), "--format", "raw", "--rate", "250"]
    spy = subprocess.Popen(
        [*command, "--nonblocking", "--duration", str(SECONDS), "--output", str(stacks)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wrk(url, 8, pid)
    spy.wait(60)
    return summarise(stacks)


def _table(figures: dict[int, dict[str, Any]]) -> str:
    def rate(values: tuple[float, float, float]) -> str:
        return f"{values[0]:,.0f} ({values[1]:,.0f}-{values[2]:,.0f})"

    def ratio(values: tuple[float, float, float]) -> str:
        return f"**{values[0]:.2f}** ({values[1]:.2f}-{values[2]:.2f})"

    lines = [
        "| connections | "
        + " | ".join(f"{app} req/s" for app in APPS)
        + " | "
        + " | ".join(f"pgcache / {base}" for base in BASELINES)
        + " | server CPU per request, "
        + " / ".join(APPS)
        + " |",
        "|---" * (2 + len(APPS) + len(BASELINES)) + "|",
    ]
    for connections, row in figures.items():
        cpu = " / ".join(f"{row[f'{app}_cpu_us']:.0f}" for app in APPS)
        lines.append(
            f"| {connections} | "
            + " | ".join(rate(row[f"{app}_rps"]) for app in APPS)
            + " | "
            + " | ".join(ratio(row[f"ratio_to_{base}"]) for base in BASELINES)
            + f" | {cpu} us |"
        )
    return "\n".join(lines)


# --- instructions per request, in process (callgrind) ----------------------------------------


def asgi_requests(app_name: str, calls: int) -> None:
    """``calls`` GETs of the features path straight into the app, after one that may miss (no
    server, no socket: what the app itself costs). The worker that runs under callgrind."""
    import uvloop

    from pgcache.config import Settings
    from pgcache.service.app import create_app

    factory = _factory(app_name)
    app = create_app(Settings.load()) if app_name == "pgcache" else factory()
    path = os.environ[_PATH_VARIABLE]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8080"), (b"accept", b"*/*")],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"{app_name} answered {message['status']}")

    async def run() -> None:
        async with app.router.lifespan_context(app):
            for _ in range(calls + 1):
                await app({**scope, "state": {}}, receive, send)

    uvloop.run(run())


def instructions_per_request(app_name: str, env: dict[str, str], cwd: Path) -> float:
    """Instructions one features request costs inside ``app_name`` (the difference of two
    callgrind runs of :func:`asgi_requests`, divided by the difference of their calls)."""

    def total(calls: int) -> int:
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             __file__, "instructions", app_name, str(calls)],
            capture_output=True, text=True, timeout=3600, check=True, env=env, cwd=cwd,
        )  # fmt: skip
        match = _COLLECTED.search(result.stderr)
        assert match is not None, result.stderr[-2000:]
        return int(match[1])

    few, many = 200, 1200
    return (total(many) - total(few)) / (many - few)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instructions_per_request_in_process(
    benchmark: Any, servers: dict[str, tuple[_Server, str]]
) -> None:
    # DASHBOARD=false: the dashboard's stream costs time, not requests (its own bench).
    envs = {
        app: {**server.env, _PATH_VARIABLE: urlsplit(url).path, "DASHBOARD": "false"}
        for app, (server, url) in servers.items()
    }
    counts = benchmark.pedantic(
        lambda: {
            app: instructions_per_request(app, envs[app], servers[app][0].cwd) for app in APPS
        },
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update({f"{app}_instructions": round(n) for app, n in counts.items()})
    print(
        "\ninstructions per features request inside the app (callgrind, no server): "
        + ", ".join(f"{app} {n:,.0f}" for app, n in counts.items())
        + "; pgcache / "
        + ", ".join(f"{base} {counts['pgcache'] / counts[base]:.2f}" for base in BASELINES)
    )
    assert all(n > 0 for n in counts.values())


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_features_endpoint_beside_one_route_starlette_apps(
    benchmark: Any, servers: dict[str, tuple[_Server, str]]
) -> None:
    figures = benchmark.pedantic(_interleaved, args=(servers,), rounds=1, iterations=1)
    benchmark.extra_info.update({str(c): row for c, row in figures.items()})
    print(f"\n{ROUNDS} rounds of {SECONDS} s, wrk -t1, interleaved (median, range):")
    print(_table(figures))
    if os.environ.get("STACK_PROFILE"):
        for app, (server, url) in servers.items():
            print(f"\n{app}: {_profile(url, server.process.pid)}")
    for row in figures.values():
        assert all(row[f"{app}_rps"][0] > 0 for app in APPS)


if __name__ == "__main__":
    if sys.argv[1] == "instructions":  # python benches/test_service_stack.py instructions APP N
        asgi_requests(sys.argv[2], int(sys.argv[3]))
    else:  # one server: python benches/test_service_stack.py APP PORT
        sys.exit(serve(sys.argv[1], int(sys.argv[2])))
