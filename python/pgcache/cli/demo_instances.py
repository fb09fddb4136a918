"""``pgcache demo --instances N``: N service processes sharing one Redis as their second tier.

Each instance is a ``pgcache serve`` process of its own on a free loopback port, all of them on
one PostgreSQL, one reference ML service and one Redis (``REDIS_URL``, or a private
``redis-server`` removed at exit), under a key prefix of this run's own. The same requests go
to each instance in turn; the summary reads each instance's own counters from its metrics
endpoints (L1 hits, L2 hits, loads, ML calls) beside PostgreSQL's count of feature queries, then
measures how long an invalidation sent to instance 1 takes to be honoured by the others: from
its ``POST`` returning to the first answer with the new value. Every wait is on a condition,
with a deadline generous enough for a loaded machine; nothing sleeps a fixed time. For the same
reason the instances wait up to 2 s for a Redis reply (``REDIS_SOCKET_TIMEOUT``, unless set).

Everything it starts (processes, servers, the directory of the instances' logs) is removed at
exit, also on Ctrl-C and SIGTERM. It measures what the services expose; it computes no cache
behaviour itself.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
from rich.console import Console
from rich.table import Table

from pgcache.cli.demo_parts import (
    Traffic,
    demo_database,
    demo_workload,
    drive_traffic,
    milliseconds,
    operator_token,
    print_token,
    prometheus_total,
    serve_until_interrupted,
)
from pgcache.cli.exits import EXIT_OK, CommandError

if TYPE_CHECKING:
    from pgcache.config import Settings

START_TIMEOUT: Final = 180.0
"""Seconds an instance gets to listen, then to be ready (imports on a loaded machine)."""
STOP_TIMEOUT: Final = 30.0
"""Seconds an instance gets to stop after SIGTERM (its SHUTDOWN_TIMEOUT is 10 s) before SIGKILL."""
PROPAGATION_TIMEOUT: Final = 30.0
"""Seconds after which an invalidation not yet honoured by another instance counts as lost."""
INVALIDATION_SAMPLES: Final = 20
DEMO_REDIS_SOCKET_TIMEOUT: Final = "2s"
"""REDIS_SOCKET_TIMEOUT of the instances unless it is configured."""

_LISTENING: Final = re.compile(r" on (http://127\.0\.0\.1:\d+): \d+ worker")
_POLL: Final = 0.05
_LOG_TAIL: Final = 3000


@dataclass(frozen=True)
class Reading:
    """One instance's counters at one moment, from its metrics endpoints."""

    feature_l1_hits: int
    feature_l2_hits: int
    feature_loads: int
    prediction_l1_hits: int
    prediction_l2_hits: int
    prediction_loads: int
    ml_calls: float
    invalidations_received: int

    def __sub__(self, earlier: Reading) -> Reading:
        return Reading(
            *(getattr(self, name) - getattr(earlier, name) for name in self.__dataclass_fields__)
        )


class ServiceProcess:
    """``pgcache serve --port 0`` in a process (and session) of its own, its log in a file;
    stopped with SIGTERM (SIGKILL after :data:`STOP_TIMEOUT`) when the block ends."""

    def __init__(self, number: int, environment: dict[str, str], directory: Path) -> None:
        self.number = number
        self.log_path = directory / f"instance-{number}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pgcache", "serve", "--host", "127.0.0.1", "--port", "0",
             "--log-level", "info"],
            env=environment, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.url = ""

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _failed(self, what: str) -> CommandError:
        log = self.log_path.read_text(errors="replace")[-_LOG_TAIL:]
        return CommandError(f"instance {self.number} {what}; its log ends with:\n{log}")

    def wait_listening(self, deadline: float) -> str:
        """The instance's URL, once its log says it listens."""
        while not (match := _LISTENING.search(self.log_path.read_text(errors="replace"))):
            if self.process.poll() is not None:
                raise self._failed(f"exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                raise self._failed(f"was not listening after {START_TIMEOUT:.0f} s")
            time.sleep(_POLL)
        self.url = match[1]
        return self.url

    def wait_ready(self, client: httpx.Client, deadline: float) -> None:
        """Until ``/readyz`` answers 200 and the invalidations of the others arrive."""
        answer = "no answer yet"
        while True:
            if self.process.poll() is not None:
                raise self._failed(f"exited with code {self.process.returncode}")
            try:
                ready = client.get(f"{self.url}/readyz")
                answer = f"/readyz: HTTP {ready.status_code} {ready.text}"
                if ready.status_code == 200:
                    status = client.get(f"{self.url}/api/v1/metrics/cache").json()
                    tier = status["metrics"].get("shared_tier") or {}
                    answer = f"shared tier: {tier or 'absent'}"
                    if tier.get("subscribed"):
                        return
            except httpx.HTTPError as exc:
                answer = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise self._failed(f"was not ready after {START_TIMEOUT:.0f} s ({answer})")
            time.sleep(_POLL)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still running after :data:`STOP_TIMEOUT` (idempotent)."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(STOP_TIMEOUT)
        finally:
            self._log.close()


def _check_answers(url: str) -> None:
    """``CommandError`` naming REDIS_URL (password masked) unless it answers ``PING``."""
    from redis.exceptions import RedisClusterException, RedisError

    from pgcache.caching.redis_client import RedisConnection

    connection = RedisConnection(url, socket_timeout=5.0, connect_timeout=5.0)
    try:
        connection.client().ping()
    except (RedisError, RedisClusterException, OSError) as exc:
        raise CommandError(f"REDIS_URL {connection.url} does not answer: {exc}") from None
    finally:
        connection.close()


@contextmanager
def _demo_redis(console: Console, redis_url: str | None) -> Iterator[str]:
    """REDIS_URL (checked), or a private ``redis-server`` removed when the block ends."""
    from pgcache.caching.redis_url import mask_redis_url
    from pgcache.caching.redisserver import redis_url as shared_redis

    with shared_redis(redis_url) as (url, server):
        if server is None:
            _check_answers(url)
            console.print(f"Redis: REDIS_URL {mask_redis_url(url)}", soft_wrap=True)
        else:
            console.print(
                f"Redis: private server, pid {server.pid}, directory {server.base_dir}, "
                "no persistence (removed at exit)",
                soft_wrap=True,
            )
        yield url


def _read(client: httpx.Client, url: str) -> Reading:
    status = client.get(f"{url}/api/v1/metrics/cache")
    prometheus = client.get(f"{url}/metrics")
    status.raise_for_status()
    prometheus.raise_for_status()
    snapshot: dict[str, Any] = status.json()["metrics"]
    features, predictions = snapshot["feature_cache"], snapshot["prediction_cache"]
    return Reading(
        feature_l1_hits=features["hits"],
        feature_l2_hits=features["l2"]["hits"],
        feature_loads=features["l2"]["loads"],
        prediction_l1_hits=predictions["hits"],
        prediction_l2_hits=predictions["l2"]["hits"],
        prediction_loads=predictions["l2"]["loads"],
        ml_calls=prometheus_total(prometheus.text, "pgcache_ml_calls"),
        invalidations_received=snapshot["shared_tier"]["invalidations_received"],
    )


def _features_body(client: httpx.Client, url: str, query_hash: int) -> bytes:
    response = client.get(
        f"{url}/api/v1/queries/{query_hash}/features", params={"scenario": "current"}
    )
    response.raise_for_status()
    return response.content


@dataclass
class Propagation:
    """What :func:`_invalidation_delays` measured, per receiving instance (2..N)."""

    delays: list[list[float]]
    """Seconds from the POST returning to the first answer with the new value."""
    stale: list[int]
    """Answers with the old value after the POST had returned."""
    lost: int = 0
    """Invalidations some instance had not honoured within :data:`PROPAGATION_TIMEOUT`."""


def _invalidation_delays(
    client: httpx.Client, urls: list[str], hashes: list[int], token: str
) -> Propagation:
    """Send :data:`INVALIDATION_SAMPLES` invalidations to instance 1 and time the others."""
    sender, receivers = urls[0], urls[1:]
    measured = Propagation([[] for _ in receivers], [0 for _ in receivers])
    for sample in range(INVALIDATION_SAMPLES):
        query_hash = hashes[sample % len(hashes)]
        served = [_features_body(client, url, query_hash) for url in receivers]  # now in L1
        response = client.post(
            f"{sender}/api/v1/cache/invalidate",
            json={"query_hash": query_hash},
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code != 200:
            raise CommandError(
                f"POST /api/v1/cache/invalidate on instance 1: HTTP {response.status_code} "
                f"{response.text}"
            )
        returned = time.perf_counter()
        honoured = True
        for index, url in enumerate(receivers):
            while _features_body(client, url, query_hash) == served[index]:
                measured.stale[index] += 1
                if time.perf_counter() - returned > PROPAGATION_TIMEOUT:
                    honoured = False
                    break
            else:
                measured.delays[index].append(time.perf_counter() - returned)
        measured.lost += not honoured
    return measured


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _summary(
    console: Console,
    readings: list[Reading],
    traffic: list[Traffic],
    statements_run: int,
) -> None:
    names = [f"instance {number}" for number in range(1, len(readings) + 1)]
    table = Table(title="What each instance's own counters say (/api/v1/metrics/cache, /metrics)")
    table.add_column("measure")
    for name in names:
        table.add_column(name, justify="right")
    rows: list[tuple[str, list[float]]] = [
        ("HTTP requests answered", [t.requests - len(t.errors) for t in traffic]),
        ("features: L1 hits", [r.feature_l1_hits for r in readings]),
        ("features: L2 hits (Redis)", [r.feature_l2_hits for r in readings]),
        ("features: DB reads (loads)", [r.feature_loads for r in readings]),
        ("predictions: L1 hits", [r.prediction_l1_hits for r in readings]),
        ("predictions: L2 hits (Redis)", [r.prediction_l2_hits for r in readings]),
        ("predictions: loads", [r.prediction_loads for r in readings]),
        ("ML calls (pgcache_ml_calls)", [r.ml_calls for r in readings]),
    ]
    for label, values in rows:
        table.add_row(label, *map(_count, values))
    console.print(table)

    latency = Table(title="Latency through HTTP (ms) of the first request for a key")
    for column in ("instance", "features n", "p50", "p99", "predict n", "p50 ", "p99 "):
        latency.add_column(column, justify="left" if column == "instance" else "right")
    for name, measured in zip(names, traffic, strict=True):
        latency.add_row(
            name,
            str(len(measured.features.uncached)),
            milliseconds(measured.features.uncached, 0.50),
            milliseconds(measured.features.uncached, 0.99),
            str(len(measured.predictions.uncached)),
            milliseconds(measured.predictions.uncached, 0.50),
            milliseconds(measured.predictions.uncached, 0.99),
        )
    console.print(latency)

    others = readings[1:]
    saved = Table(title="Saved across instances (L2 hits on instances 2 and later)")
    saved.add_column("measure")
    saved.add_column("value", justify="right")
    saved.add_row(
        "DB reads saved (feature L2 hits)", _count(sum(r.feature_l2_hits for r in others))
    )
    saved.add_row(
        "ML calls saved (prediction L2 hits)", _count(sum(r.prediction_l2_hits for r in others))
    )
    saved.add_row(
        "DB reads by all instances (their loads)", _count(sum(r.feature_loads for r in readings))
    )
    saved.add_row("DB reads counted by PostgreSQL (pg_stat_statements)", _count(statements_run))
    console.print(saved)


def _print_propagation(console: Console, measured: Propagation, received: list[int]) -> None:
    for index, count in enumerate(received):
        delays, number = measured.delays[index], index + 2
        console.print(
            f"Invalidation sent to instance 1, honoured by instance {number}: "
            f"{len(delays)} of {INVALIDATION_SAMPLES}; from the POST returning to instance "
            f"{number}'s first answer with the new value (that answer's database read "
            f"included): p50 {milliseconds(delays, 0.5)} ms, max {milliseconds(delays, 1.0)} ms; "
            f"{measured.stale[index]} answers with the old value after the POST returned "
            f"({count} invalidation messages applied)",
            soft_wrap=True,
            highlight=False,
        )
    if measured.lost:
        raise CommandError(
            f"{measured.lost} of {INVALIDATION_SAMPLES} invalidations were not honoured by "
            f"every instance within {PROPAGATION_TIMEOUT:.0f} s"
        )


def _instance_environment(
    settings: Settings, database_url: str, ml_url: str, redis_url: str, token: str
) -> dict[str, str]:
    environment = dict(os.environ)
    if "redis_socket_timeout" not in settings.model_fields_set:
        # The default 250 ms is a production bound; a loaded demo machine can exceed it, and
        # the tier would then (rightly) skip Redis, which is not what the demo is showing.
        environment["REDIS_SOCKET_TIMEOUT"] = DEMO_REDIS_SOCKET_TIMEOUT
    environment.update(
        DATABASE_URL=database_url,
        ML_SERVICE_URL=ml_url,
        REDIS_URL=redis_url,
        # A namespace of this run's own: nothing an earlier run left in a shared Redis is read.
        REDIS_KEY_PREFIX=f"pgcache-demo-{secrets.token_hex(6)}:",
        ADMIN_TOKEN=token,
        PYTHONUNBUFFERED="1",
    )
    return environment


def demo_instances(args: argparse.Namespace) -> int:
    """``pgcache demo --instances N`` (N >= 2)."""
    from pgcache.config import Settings
    from pgcache.ml.reference import serve_in_thread as serve_ml_service
    from pgcache.postgres.devserver import sigterm_as_interrupt
    from pgcache.postgres.workload import extractor_statement_calls
    from pgcache.service.logs import configure_logging

    console = Console()
    environment = Settings.load()  # a bad variable stops the demo before anything starts
    token = operator_token(environment)
    configure_logging("warning")
    per_instance = max(1, args.requests // args.instances)
    with sigterm_as_interrupt(), ExitStack() as stack:
        redis_url = stack.enter_context(_demo_redis(console, environment.redis_url))
        database_url = stack.enter_context(demo_database(console, environment.database_url))
        hashes = demo_workload(console, database_url, args)
        ml_service = stack.enter_context(serve_ml_service())
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pgcache-demo-")))
        variables = _instance_environment(
            environment, database_url, ml_service.url, redis_url, token[0]
        )
        instances = [
            stack.enter_context(ServiceProcess(number, variables, logs))
            for number in range(1, args.instances + 1)
        ]
        client = stack.enter_context(httpx.Client(timeout=30.0))
        with console.status(f"starting {args.instances} service processes"):
            deadline = time.monotonic() + START_TIMEOUT
            urls = [instance.wait_listening(deadline) for instance in instances]
            deadline = time.monotonic() + START_TIMEOUT
            for instance in instances:
                instance.wait_ready(client, deadline)
        console.print(
            f"Services: reference ML service {ml_service.url}; pgcache service processes "
            + ", ".join(
                f"{instance.number}: {instance.url} (pid {instance.process.pid})"
                for instance in instances
            )
            + f"; logs in {logs} (removed at exit)",
            soft_wrap=True,
        )
        if not args.serve:
            print_token(console, *token)
        before = [_read(client, url) for url in urls]
        statements_before = extractor_statement_calls(database_url)
        console.print(
            f"Traffic: the same {per_instance:,} requests (seed {args.seed}) to each instance "
            "in turn, instance 1 first",
            soft_wrap=True,
        )
        traffic = [
            drive_traffic(
                console, url, hashes, per_instance, args.seed, label=f"HTTP requests to {number}"
            )
            for number, url in enumerate(urls, start=1)
        ]
        statements_run = extractor_statement_calls(database_url) - statements_before
        readings = [_read(client, url) - old for url, old in zip(urls, before, strict=True)]
        _summary(console, readings, traffic, statements_run)
        failed = [error for measured in traffic for error in measured.errors]
        if failed:
            raise CommandError(f"{len(failed)} requests failed, the first: {failed[0]}")
        before = [_read(client, url) for url in urls[1:]]
        propagation = _invalidation_delays(client, urls, hashes, token[0])
        received = [
            (_read(client, url) - old).invalidations_received
            for url, old in zip(urls[1:], before, strict=True)
        ]
        _print_propagation(console, propagation, received)
        if args.serve:
            serve_until_interrupted(
                console, urls, ml_service.url, hashes[0], token, dashboard=environment.dashboard
            )
    return EXIT_OK
