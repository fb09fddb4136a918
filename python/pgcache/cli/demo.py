"""pgcache demo: the whole system end to end, and what the caches saved."""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from pgcache.cli.exits import EXIT_OK, CommandError
from pgcache.cli.report import hot_key_picker, percentile, progress_bar

# --- demo -------------------------------------------------------------------------------------


@dataclass
class _Timings:
    """Latencies (seconds) of one endpoint, split by whether the key had been asked before."""

    uncached: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)


@dataclass
class _Traffic:
    features: _Timings = field(default_factory=_Timings)
    predictions: _Timings = field(default_factory=_Timings)
    errors: list[str] = field(default_factory=list)


@contextmanager
def _database(console: Console, database_url: str | None) -> Iterator[str]:
    """DATABASE_URL (checked), or a private PostgreSQL removed when the block ends."""
    from pgcache.config import mask_database_url
    from pgcache.postgres.devserver import database

    if database_url is None:
        console.print("PostgreSQL: starting a private server from the installed binaries")
    with database(database_url) as (url, server):
        if server is None:
            console.print(f"PostgreSQL: DATABASE_URL {mask_database_url(url)}", soft_wrap=True)
        else:
            console.print(
                f"PostgreSQL: private server, pid {server.pid}, data directory "
                f"{server.base_dir} (removed at exit)",
                soft_wrap=True,
            )
        yield url


def _workload(console: Console, url: str, args: argparse.Namespace) -> list[int]:
    import psycopg

    from pgcache.postgres.workload import run_workload

    with console.status("running the query workload"):
        workload = run_workload(url, min_shapes=args.queries, runs_per_shape=args.runs)
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()
    hashes = list(workload.queryids.values())
    console.print(
        f"Workload: {len(hashes)} query shapes x {args.runs} executions; "
        f"pg_stat_statements now holds {0 if row is None else row[0]} statements",
        soft_wrap=True,
    )
    return hashes


def _drive_traffic(
    console: Console, url: str, hashes: list[int], requests: int, seed: int
) -> _Traffic:
    """``requests`` HTTP calls, alternating features and predictions, 80/20 over ``hashes``."""
    import httpx

    traffic = _Traffic()
    seen: set[tuple[str, int]] = set()
    pick = hot_key_picker(hashes, random.Random(seed))
    with httpx.Client(base_url=url, timeout=30.0) as client, progress_bar(console) as progress:
        task = progress.add_task("HTTP requests", total=requests)
        for number in range(requests):
            query_hash = pick()
            if number % 2 == 0:
                kind, timings = "features", traffic.features
                began = time.perf_counter()
                response = client.get(
                    f"/api/v1/queries/{query_hash}/features", params={"scenario": "current"}
                )
            else:
                kind, timings = "predict", traffic.predictions
                began = time.perf_counter()
                response = client.post(
                    f"/api/v1/queries/{query_hash}/predict", json={"scenario": "current"}
                )
            elapsed = time.perf_counter() - began
            if response.status_code != 200:
                traffic.errors.append(f"{kind} {query_hash}: HTTP {response.status_code}")
            elif (kind, query_hash) in seen:
                timings.cached.append(elapsed)
            else:
                seen.add((kind, query_hash))
                timings.uncached.append(elapsed)
            progress.update(task, advance=1)
    return traffic


def _prometheus_total(text: str, name: str) -> float:
    """The sum of the samples of counter ``name`` (``name_total``) in an exposition text."""
    pattern = re.compile(rf"^{re.escape(name)}(?:_total)?(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


def _milliseconds(values: list[float], fraction: float) -> str:
    return f"{percentile(sorted(values), fraction) * 1000:.2f}" if values else "-"


def _summary(
    console: Console,
    service_url: str,
    database_url: str,
    traffic: _Traffic,
    statements_before: int,
) -> None:
    import httpx

    from pgcache.postgres.workload import extractor_statement_calls

    with httpx.Client(base_url=service_url, timeout=30.0) as client:
        status = client.get("/api/v1/metrics/cache")
        prometheus = client.get("/metrics")
    status.raise_for_status()
    prometheus.raise_for_status()
    body: dict[str, Any] = status.json()
    snapshot: dict[str, Any] = body["metrics"]

    hit_rates = Table(title="Cache hit rates")
    for column in ("cache", "hits", "misses", "hit rate", "size", "evictions"):
        hit_rates.add_column(column, justify="left" if column == "cache" else "right")
    for key, label in (
        ("feature_cache", "features"),
        ("prediction_cache", "predictions"),
        ("query_results_cache", "fingerprints"),
        ("explain_plan_cache", "explain_plans"),
        ("anomaly_cache", "anomalies"),
    ):
        cache = snapshot[key]
        hit_rates.add_row(
            label,
            f"{cache['hits']:,}",
            f"{cache['misses']:,}",
            f"{cache['hit_rate']:.1f} %" if cache["hits"] + cache["misses"] else "unused",
            f"{cache['size']:,}",
            f"{cache['evictions']:,}",
        )
    hit_rates.add_row("overall", "", "", f"{snapshot['overall_hit_rate']:.1f} %", "", "")

    latency = Table(title="Latency through HTTP (ms): uncached = first request for a key")
    for column in ("endpoint", "uncached n", "p50", "p99", "cached n", "p50 ", "p99 "):
        latency.add_column(column, justify="left" if column == "endpoint" else "right")
    for label, timings in (("features", traffic.features), ("predict", traffic.predictions)):
        latency.add_row(
            label,
            str(len(timings.uncached)),
            _milliseconds(timings.uncached, 0.50),
            _milliseconds(timings.uncached, 0.99),
            str(len(timings.cached)),
            _milliseconds(timings.cached, 0.50),
            _milliseconds(timings.cached, 0.99),
        )

    statements_run = extractor_statement_calls(database_url) - statements_before
    ml_calls = _prometheus_total(prometheus.text, "pgcache_ml_calls")
    savings = Table(title="What the caches saved")
    savings.add_column("measure")
    savings.add_column("value", justify="right")
    savings.add_row("DB queries run (pg_stat_statements reads)", f"{statements_run:,}")
    savings.add_row(
        "DB queries saved (feature cache hits)", f"{snapshot['feature_cache']['hits']:,}"
    )
    savings.add_row("ML calls made", f"{ml_calls:,.0f}")
    savings.add_row(
        "ML calls saved (prediction cache hits)", f"{snapshot['prediction_cache']['hits']:,}"
    )
    savings.add_row(
        "ML retries", f"{_prometheus_total(prometheus.text, 'pgcache_ml_retries'):,.0f}"
    )
    savings.add_row("HTTP errors", f"{len(traffic.errors):,}")

    console.print(hit_rates)
    console.print(latency)
    console.print(savings)
    console.print("GET /api/v1/metrics/cache:")
    console.print_json(json.dumps(body))


def _print_urls(
    console: Console, service_url: str, ml_url: str, query_hash: int, *, dashboard: bool
) -> None:
    if dashboard:
        console.print(
            f"Dashboard (live, in a browser): {service_url}/dashboard",
            soft_wrap=True,
            highlight=False,
        )
    console.print(
        "Everything keeps running; try (Ctrl-C stops and removes it all):", soft_wrap=True
    )
    for line in (
        f"curl {service_url}/api/v1/metrics/cache",
        f"curl {service_url}/metrics",
        f"curl {service_url}/healthz",
        f"curl {service_url}/readyz",
        f"curl '{service_url}/api/v1/queries/{query_hash}/features?scenario=current'",
        f"curl -X POST -H 'Content-Type: application/json' -d '{{\"scenario\": \"current\"}}' "
        f"{service_url}/api/v1/queries/{query_hash}/predict",
        f"curl {ml_url}/api/health",
    ):
        console.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)


def demo(args: argparse.Namespace) -> int:
    from pgcache.config import Settings
    from pgcache.ml.reference import serve_in_thread as serve_ml_service
    from pgcache.postgres.devserver import sigterm_as_interrupt
    from pgcache.postgres.workload import extractor_statement_calls
    from pgcache.service.app import serve_in_thread as serve_service
    from pgcache.service.logs import configure_logging

    console = Console()
    environment = Settings.load()  # a bad variable stops the demo before anything starts
    # The services' warnings in one line each; a client cut off by Ctrl-C is no warning.
    configure_logging("warning")
    with sigterm_as_interrupt(), ExitStack() as stack:
        database_url = stack.enter_context(_database(console, environment.database_url))
        hashes = _workload(console, database_url, args)
        ml_service = stack.enter_context(serve_ml_service())
        settings = Settings.load(database_url=database_url, ml_service_url=ml_service.url)
        service = stack.enter_context(serve_service(settings))
        console.print(
            f"Services: reference ML service {ml_service.url}, pgcache service {service.url}",
            soft_wrap=True,
        )
        statements_before = extractor_statement_calls(database_url)
        traffic = _drive_traffic(console, service.url, hashes, args.requests, args.seed)
        _summary(console, service.url, database_url, traffic, statements_before)
        if traffic.errors:
            raise CommandError(
                f"{len(traffic.errors)} of {args.requests} requests failed, "
                f"the first: {traffic.errors[0]}"
            )
        if args.serve:
            try:  # Ctrl-C (or SIGTERM) is how --serve is meant to end: exit 0
                _print_urls(
                    console, service.url, ml_service.url, hashes[0], dashboard=settings.dashboard
                )
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                console.print("stopping")
    return EXIT_OK
