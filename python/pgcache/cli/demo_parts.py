"""What the one-instance and the many-instance demo share: the database, the query workload,
the operator token, the HTTP traffic with hot keys and the reading of a Prometheus counter.

It starts nothing that outlives the block it is used in and prints nothing but progress lines.
"""

from __future__ import annotations

import argparse
import random
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console

from pgcache.cli.report import hot_key_picker, percentile, progress_bar

if TYPE_CHECKING:
    from pgcache.config import Settings


@dataclass
class Timings:
    """Latencies (seconds) of one endpoint, split by whether the key had been asked before."""

    uncached: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)


@dataclass
class Traffic:
    """What :func:`drive_traffic` measured: latencies per endpoint and the failed requests."""

    features: Timings = field(default_factory=Timings)
    predictions: Timings = field(default_factory=Timings)
    errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        parts = (self.features, self.predictions)
        return len(self.errors) + sum(len(t.uncached) + len(t.cached) for t in parts)


@contextmanager
def demo_database(console: Console, database_url: str | None) -> Iterator[str]:
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


def demo_workload(console: Console, url: str, args: argparse.Namespace) -> list[int]:
    """Run ``args.queries`` query shapes ``args.runs`` times each; their ``queryid`` values."""
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


def operator_token(environment: Settings) -> tuple[str, bool]:
    """``(ADMIN_TOKEN, generated)``: the one configured, or a random one for this run (the
    services the demo starts get it, and its own invalidations send it)."""
    if environment.admin_token is not None:
        return environment.admin_token.get_secret_value(), False
    return secrets.token_urlsafe(32), True


def print_token(console: Console, token: str, generated: bool) -> None:
    """One line: the random token (to paste into curl), or that the configured one is used."""
    if generated:
        console.print(
            f"Operator token (ADMIN_TOKEN, random for this run): {token}",
            soft_wrap=True,
            highlight=False,
        )
    else:
        console.print("Operator token: ADMIN_TOKEN from the environment", soft_wrap=True)


def serve_until_interrupted(
    console: Console,
    service_urls: list[str],
    ml_url: str,
    query_hash: int,
    token: tuple[str, bool],
    *,
    dashboard: bool,
) -> None:
    """``--serve``: print the dashboards, the operator token and URLs to curl, then wait until
    Ctrl-C (or SIGTERM, raised as ``KeyboardInterrupt``), which is how it is meant to end."""
    try:
        if dashboard:
            for url in service_urls:
                console.print(
                    f"Dashboard (live, in a browser): {url}/dashboard",
                    soft_wrap=True,
                    highlight=False,
                )
        print_token(console, *token)
        console.print(
            "Everything keeps running; try (Ctrl-C stops and removes it all):", soft_wrap=True
        )
        bearer = token[0] if token[1] else "$ADMIN_TOKEN"
        first = service_urls[0]
        lines = [
            f"curl {first}/api/v1/metrics/cache",
            f"curl {first}/metrics",
            f"curl {first}/healthz",
            f"curl {first}/readyz",
            *(
                f"curl '{url}/api/v1/queries/{query_hash}/features?scenario=current'"
                for url in service_urls
            ),
            f"curl -X POST -H 'Content-Type: application/json' -d '{{\"scenario\": \"current\"}}' "
            f"{first}/api/v1/queries/{query_hash}/predict",
            f"curl -X POST -H 'Authorization: Bearer {bearer}' -H 'Content-Type: application/json' "
            f"-d '{{\"query_hash\": {query_hash}}}' {first}/api/v1/cache/invalidate",
            f"curl {ml_url}/api/health",
        ]
        for line in lines:
            console.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping")


def drive_traffic(
    console: Console,
    url: str,
    hashes: list[int],
    requests: int,
    seed: int,
    *,
    label: str = "HTTP requests",
) -> Traffic:
    """``requests`` HTTP calls, alternating features and predictions, 80/20 over ``hashes``
    (the same ``seed``: the same sequence of requests)."""
    import httpx

    traffic = Traffic()
    seen: set[tuple[str, int]] = set()
    pick = hot_key_picker(hashes, random.Random(seed))
    with httpx.Client(base_url=url, timeout=30.0) as client, progress_bar(console) as progress:
        task = progress.add_task(label, total=requests)
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


def prometheus_total(text: str, name: str) -> float:
    """The sum of the samples of counter ``name`` (``name_total``) in an exposition text."""
    pattern = re.compile(rf"^{re.escape(name)}(?:_total)?(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


def milliseconds(values: list[float], fraction: float) -> str:
    """The ``fraction`` percentile of ``values`` (seconds) in milliseconds; ``-`` for none."""
    return f"{percentile(sorted(values), fraction) * 1000:.2f}" if values else "-"
