"""``pgcache serve`` and ``pgcache ml-service`` as real subprocesses: their log lines (text and
JSON, with the request id), a port in use, a graceful stop by signal (exit 130 for SIGINT, 143
for SIGTERM), ``--workers 2`` (two processes answering on one port, sharing one Redis tier,
all stopped by SIGTERM), a database outage in one line, the shutdown deadline with a stuck
request, the open-file limit, connections that never send a request, and a configuration that
config accepts but the cache could not hold."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cli.demo_processes import alive
from tests.support.http_faults import Fault, FaultServer
from tests.support.postgres import Workload
from tests.support.processes import (
    LISTENING,
    PgcacheCommand,
    children,
    pgcache_environment,
    serve_pgcache,
)

from pgcache.caching.redisserver import RedisServer

_TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>[A-Z]+) (?P<logger>\S+) "
    r"\[(?P<request_id>[^\]]+)\] (?P<message>.*)$"
)
EXIT_SIGTERM = 143  # 128 + SIGTERM, as a shell reports a process ended by it


def _get(
    host: str, port: int, path: str, request_id: str | None = None
) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.request("GET", path, headers={"X-Request-ID": request_id} if request_id else {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


# --- log lines ----------------------------------------------------------------------------------


@pytest.fixture
def text_served(tmp_path: Path) -> Iterator[PgcacheCommand]:
    with serve_pgcache(cwd=tmp_path) as served:
        yield served


def test_serve_logs_text_lines_with_time_level_logger_and_request_id(
    text_served: PgcacheCommand,
) -> None:
    host, port = text_served.listening()
    assert _get(host, port, "/healthz", "text-42").status == 200
    for logger in ("uvicorn.access", "pgcache.service"):
        line = text_served.wait_for(rf" {re.escape(logger)} \[text-42\] ").string
        match = _TEXT_LINE.match(line)
        assert match is not None, line
        assert match["level"] == "INFO"
    assert text_served.stop() == EXIT_SIGTERM
    assert text_served.lines, "no log at all"
    for line in text_served.lines:
        assert _TEXT_LINE.match(line), line
    loggers = {m["logger"] for m in map(_TEXT_LINE.match, text_served.lines) if m}
    assert {"uvicorn.error", "uvicorn.access", "pgcache.service", "pgcache.cli"} <= loggers


def test_serve_log_format_json_is_one_object_per_line(tmp_path: Path) -> None:
    with serve_pgcache("--log-format", "json", cwd=tmp_path) as served:
        match = served.wait_for(r'"message": "[^"]*on http://')
        entry = json.loads(match.string)
        listening = LISTENING.search(entry["message"])
        assert listening is not None
        host, port = listening["host"], int(listening["port"])
        assert _get(host, port, "/healthz", "json-7").status == 200
        served.wait_for(r'"logger": "pgcache.service", "request_id": "json-7"')
        assert served.stop() == EXIT_SIGTERM
        entries = [json.loads(line) for line in served.lines]
        for entry in entries:
            assert {"time", "level", "logger", "request_id", "message"} <= set(entry)
        by_request = [e for e in entries if e["request_id"] == "json-7"]
        assert {e["logger"] for e in by_request} == {"uvicorn.access", "pgcache.service"}
        assert all(e["request_id"] is None for e in entries if e["logger"] == "uvicorn.error")


def test_serve_at_warning_logs_no_request_lines(tmp_path: Path) -> None:
    with serve_pgcache("--log-level", "warning", cwd=tmp_path) as served:
        env_port = _free_port_listened_by(served)
        assert _get("127.0.0.1", env_port, "/healthz", "quiet").status == 200
        assert served.stop() == EXIT_SIGTERM
        assert not [line for line in served.lines if "quiet" in line]


def _free_port_listened_by(served: PgcacheCommand) -> int:
    """The port of a service whose start-up line is not logged (found through /proc)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ports = _listening_ports(served.process.pid)
        if ports:
            port = ports[0]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return port
            except OSError:
                pass
        time.sleep(0.05)
    pytest.fail("the service never listened")


# --- ports and signals --------------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another socket listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "ml-service"])
def test_a_port_in_use_exits_2_with_one_line_naming_host_and_port(
    command: str, busy_port: int, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pgcache", command, "--port", str(busy_port)],
        cwd=tmp_path,
        env=pgcache_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"pgcache {command}: cannot listen on 127.0.0.1:{busy_port}: Address already in use\n"
    )


def test_serve_with_a_bad_variable_exits_2_before_listening(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pgcache", "serve", "--port", "0"],
        cwd=tmp_path,
        env=pgcache_environment(FEATURE_CACHE_TTL="soon"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("pgcache serve: configuration error: ")
    assert "FEATURE_CACHE_TTL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("stop_signal", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["SIGINT", "SIGTERM"],
)
def test_serve_stopped_by_a_signal_shuts_down_and_exits_128_plus_the_signal(
    stop_signal: signal.Signals, code: int, text_served: PgcacheCommand
) -> None:
    host, port = text_served.listening()
    text_served.wait_for("Application startup complete")
    assert _get(host, port, "/healthz").status == 200
    assert text_served.stop(stop_signal) == code
    assert any("Finished server process" in line for line in text_served.lines)
    assert not any("Traceback" in line for line in text_served.lines)


@pytest.mark.parametrize(
    ("stop_signal", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["SIGINT", "SIGTERM"],
)
def test_ml_service_stopped_by_a_signal_exits_128_plus_the_signal(
    stop_signal: signal.Signals, code: int, tmp_path: Path
) -> None:
    command = PgcacheCommand("ml-service", "--port", "0", cwd=tmp_path, env=pgcache_environment())
    try:
        host, port = command.listening()
        assert _get(host, port, "/api/health").status == 200
        assert command.stop(stop_signal) == code
    finally:
        command.kill()


# --- --workers ----------------------------------------------------------------------------------


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_sockets() -> list[dict[str, Any]]:
    """The IPv4 TCP sockets of /proc/net/tcp: local and remote port, state, inode."""
    sockets = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        sockets.append(
            {
                "local_port": int(fields[1].split(":")[1], 16),
                "remote_port": int(fields[2].split(":")[1], 16),
                "listening": fields[3] == "0A",
                "inode": int(fields[9]),
            }
        )
    return sockets


def _listening_ports(pid: int) -> list[int]:
    inodes = _socket_inodes(pid)
    return [s["local_port"] for s in _tcp_sockets() if s["listening"] and s["inode"] in inodes]


def _owner_of(server_port: int, client_port: int, candidates: list[int]) -> int | None:
    """Which of ``candidates`` holds the server side of the connection from ``client_port``."""
    for entry in _tcp_sockets():
        if entry["local_port"] == server_port and entry["remote_port"] == client_port:
            for pid in candidates:
                if entry["inode"] in _socket_inodes(pid):
                    return pid
    return None


def _answering_workers(host: str, port: int, workers: list[int], attempts: int = 200) -> set[int]:
    """The workers that answered ``attempts`` connections at most (until two have answered)."""
    answered: set[int] = set()
    open_connections: list[http.client.HTTPConnection] = []
    try:
        for _ in range(attempts):
            connection = http.client.HTTPConnection(host, port, timeout=30)
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            open_connections.append(connection)  # kept open: its server side stays visible
            assert connection.sock is not None
            owner = _owner_of(port, connection.sock.getsockname()[1], workers)
            if owner is not None:
                answered.add(owner)
            if len(answered) == len(workers):
                break
    finally:
        for connection in open_connections:
            connection.close()
    return answered


def test_serve_with_two_workers_answers_from_two_processes_and_stops_them_on_sigterm(
    tmp_path: Path,
) -> None:
    with serve_pgcache("--workers", "2", cwd=tmp_path) as served:
        match = served.wait_for(LISTENING.pattern + r".*event loop (\S+), HTTP parser (\S+)")
        assert match["workers"] == "2"
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
        assert match.group(4, 5) == (loop, http)
        host, port = match["host"], int(match["port"])
        deadline = time.monotonic() + 60
        while sum("Application startup complete" in line for line in served.lines) < 2:
            assert time.monotonic() < deadline, "\n".join(served.lines)
            time.sleep(0.05)

        parent = served.process.pid
        listening = {
            s["inode"] for s in _tcp_sockets() if s["listening"] and s["local_port"] == port
        }
        workers = [pid for pid in children(parent) if _socket_inodes(pid) & listening]
        assert len(workers) == 2, (workers, children(parent))
        assert _answering_workers(host, port, workers) == set(workers)

        assert served.stop(signal.SIGTERM) == EXIT_SIGTERM
        assert not [pid for pid in workers if alive(pid)]
        assert sum("Finished server process" in line for line in served.lines) == 2
        assert not any("Traceback" in line for line in served.lines)


def _get_on(connection: http.client.HTTPConnection, path: str) -> tuple[int, str]:
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read().decode()


def _sample(prometheus_text: str, name: str, cache: str) -> float:
    match = re.search(rf'^{name}{{cache="{cache}"}} (\S+)$', prometheus_text, re.M)
    assert match is not None, (name, cache, prometheus_text)
    return float(match[1])


def test_two_workers_share_the_redis_tier(
    tmp_path: Path, postgres_url: str, pg_workload: Workload, redis_server: RedisServer
) -> None:
    # A private Redis: nothing in it but what the two workers put there.
    env = pgcache_environment(DATABASE_URL=postgres_url, REDIS_URL=redis_server.url)
    queryid = next(iter(pg_workload.queryids.values()))
    with serve_pgcache("--workers", "2", cwd=tmp_path, env=env) as served:
        host, port = served.listening()
        deadline = time.monotonic() + 120
        while sum("Application startup complete" in line for line in served.lines) < 2:
            assert time.monotonic() < deadline, "\n".join(served.lines)
            time.sleep(0.05)
        listening = {
            s["inode"] for s in _tcp_sockets() if s["listening"] and s["local_port"] == port
        }
        workers = [pid for pid in children(served.process.pid) if _socket_inodes(pid) & listening]
        assert len(workers) == 2, workers
        # One kept-alive connection to each worker: the first that reaches each one.
        by_worker: dict[int, http.client.HTTPConnection] = {}
        spare: list[http.client.HTTPConnection] = []
        for _ in range(200):
            connection = http.client.HTTPConnection(host, port, timeout=60)
            assert _get_on(connection, "/healthz")[0] == 200
            assert connection.sock is not None
            owner = _owner_of(port, connection.sock.getsockname()[1], workers)
            if owner is not None and owner not in by_worker:
                by_worker[owner] = connection
            else:
                spare.append(connection)
            if len(by_worker) == 2:
                break
        try:
            first, second = by_worker.values()
            path = f"/api/v1/queries/{queryid}/features"
            status, loaded = _get_on(first, path)
            assert status == 200, loaded
            status, shared = _get_on(second, path)
            assert status == 200, shared
            assert json.loads(shared) == json.loads(loaded)
            first_metrics, second_metrics = (_get_on(c, "/metrics")[1] for c in (first, second))
        finally:
            for connection in [*by_worker.values(), *spare]:
                connection.close()
        # The first worker read PostgreSQL and wrote Redis; the second found it in Redis.
        assert _sample(first_metrics, "pgcache_l2_misses_total", "features") >= 1
        assert _sample(second_metrics, "pgcache_l2_hits_total", "features") == 1
        assert _sample(second_metrics, "pgcache_misses_total", "features") == 1  # its L1
        assert served.stop(signal.SIGTERM) == EXIT_SIGTERM


# --- a database outage through the command ---------------------------------------------------


def test_serve_logs_a_database_outage_once_however_many_retries(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    env = pgcache_environment(
        DATABASE_URL=f"postgresql://nobody@127.0.0.1:{closed_port}/nothing",
        MAX_IDLE_DATABASE_CONNS="2",
        MAX_DATABASE_CONNS="4",
    )
    with serve_pgcache(cwd=tmp_path, env=env) as served:
        host, port = served.listening()
        pattern = re.compile(
            r'^pgcache_db_pool_connections_errors_total\{pool="pgcache"\} (\S+)$', re.M
        )

        def failed_attempts() -> float:
            connection = http.client.HTTPConnection(host, port, timeout=30)
            connection.request("GET", "/metrics")
            body = connection.getresponse().read().decode()
            connection.close()
            match = pattern.search(body)
            return float(match[1]) if match else 0.0

        deadline = time.monotonic() + 60
        while failed_attempts() < 6:
            assert time.monotonic() < deadline, "the pool did not retry"
            time.sleep(0.1)
        assert served.stop() == EXIT_SIGTERM
        outage = [line for line in served.lines if "psycopg.pool" in line]
        assert len(outage) == 1, outage
        assert "WARNING psycopg.pool [-] pool 'pgcache' cannot connect to the database" in outage[0]
        assert not any("error connecting" in line for line in served.lines)


# --- limits of a running service --------------------------------------------------------------

BOUNDED = 30.0  # far above every configured timeout below: proves "bounded", not "fast"


def test_a_stuck_request_is_cancelled_at_the_shutdown_deadline(
    tmp_path: Path, postgres_url: str, pg_workload: Workload
) -> None:
    with FaultServer() as ml_service:
        ml_service.push(Fault.slow(600.0), times=10)
        env = pgcache_environment(
            DATABASE_URL=postgres_url,
            ML_SERVICE_URL=ml_service.url,
            ML_SERVICE_TIMEOUT="10m",
            SHUTDOWN_TIMEOUT="2s",
            MAX_IDLE_DATABASE_CONNS="1",
        )
        with serve_pgcache(cwd=tmp_path, env=env) as served:
            host, port = served.listening()
            served.wait_for("Application startup complete")

            def stuck() -> None:
                connection = http.client.HTTPConnection(host, port, timeout=120)
                try:
                    connection.request(
                        "POST", f"/api/v1/queries/{pg_workload.negative_ids[0]}/predict"
                    )
                    connection.getresponse().read()
                except OSError:
                    pass  # cut off by the shutdown: expected
                finally:
                    connection.close()

            client = threading.Thread(target=stuck, daemon=True)
            client.start()
            deadline = time.monotonic() + 60
            while ml_service.request_count() == 0:
                assert time.monotonic() < deadline, "the request never reached the ML service"
                time.sleep(0.05)
            # Exits (TimeoutExpired otherwise) long before the stuck request would end.
            assert served.stop(signal.SIGTERM, timeout=BOUNDED) == EXIT_SIGTERM
            assert any("Cancel 1 running task" in line for line in served.lines), served.lines
            client.join(30)


def _lower_open_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))


def test_serve_raises_the_open_file_limit_to_the_hard_limit(tmp_path: Path) -> None:
    with serve_pgcache(cwd=tmp_path, preexec_fn=_lower_open_file_limit) as served:
        served.wait_for(r"up to 1024 open files")


def test_connections_that_never_send_a_request_are_closed_and_logged_without_a_flood(
    tmp_path: Path,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4096:
        pytest.skip(f"this process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    idle: list[socket.socket] = []
    try:
        with serve_pgcache(cwd=tmp_path, preexec_fn=_lower_open_file_limit) as served:
            host, port = served.listening()
            served.wait_for("Application startup complete")
            for _ in range(1100):  # beyond the service's 1024 files, none sends a byte
                idle.append(socket.create_connection((host, port), timeout=30))
            # Until the idle ones are closed (the keep-alive timeout, 5 s) new connections may be
            # refused; then /healthz answers.
            assert _healthz_answers_within(host, port, BOUNDED)
            closed = sum(1 for sock in idle if _closed_by_peer(sock))
            assert closed > 0
            assert served.stop() == EXIT_SIGTERM
            text = "\n".join(served.lines)
            assert text.count("out of system resource") <= 3, text[-3000:]
            assert text.count("Traceback") <= 3, text[-3000:]
            assert len(served.lines) < 100
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _healthz_answers_within(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return _get(host, port, "/healthz").status == 200
        except OSError:
            time.sleep(0.2)
    return False


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(0.001)
    try:
        return sock.recv(1) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


@pytest.mark.parametrize("command", ["config", "serve"])
def test_a_cache_size_beyond_what_a_cache_holds_is_a_configuration_error(
    command: str, tmp_path: Path
) -> None:
    args = [command] if command == "config" else [command, "--port", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "pgcache", *args],
        cwd=tmp_path,
        env=pgcache_environment(CACHE_MAX_SIZE=str(2**40)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "CACHE_MAX_SIZE=" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_runs_uvloop_and_httptools_with_the_head_timeout_and_the_settings() -> None:
    import uvloop

    from pgcache.cli.serve import KEEP_ALIVE_SECONDS, SERVICE_FACTORY, uvicorn_config
    from pgcache.config import Settings
    from pgcache.service.serving import HTTPTOOLS_PROTOCOL

    settings = Settings.load(max_client_conns=123, shutdown_timeout=7.5, database_url=None)
    config = uvicorn_config(SERVICE_FACTORY, settings, host="127.0.0.1", port=0)
    loop = config.get_loop_factory()
    assert loop is not None
    running = loop()
    try:
        assert isinstance(running, uvloop.Loop)
    finally:
        running.close()
    assert config.http == HTTPTOOLS_PROTOCOL
    assert config.timeout_keep_alive == KEEP_ALIVE_SECONDS
    assert (config.limit_concurrency, config.timeout_graceful_shutdown) == (123, 8)
    assert config.factory
