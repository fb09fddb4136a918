"""pgcache demo: the whole system end to end, and what the caches saved."""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from typing import Any

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

# --- one instance -----------------------------------------------------------------------------


def _summary(
    console: Console,
    service_url: str,
    database_url: str,
    traffic: Traffic,
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
            milliseconds(timings.uncached, 0.50),
            milliseconds(timings.uncached, 0.99),
            str(len(timings.cached)),
            milliseconds(timings.cached, 0.50),
            milliseconds(timings.cached, 0.99),
        )

    statements_run = extractor_statement_calls(database_url) - statements_before
    ml_calls = prometheus_total(prometheus.text, "pgcache_ml_calls")
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
    savings.add_row("ML retries", f"{prometheus_total(prometheus.text, 'pgcache_ml_retries'):,.0f}")
    savings.add_row("HTTP errors", f"{len(traffic.errors):,}")

    console.print(hit_rates)
    console.print(latency)
    console.print(savings)
    console.print("GET /api/v1/metrics/cache:")
    console.print_json(json.dumps(body))


def demo(args: argparse.Namespace) -> int:
    """``pgcache demo``: one service in this process, or ``--instances N`` service processes
    sharing one Redis (:mod:`pgcache.cli.demo_instances`)."""
    from pgcache.config import Settings
    from pgcache.ml.reference import serve_in_thread as serve_ml_service
    from pgcache.postgres.devserver import sigterm_as_interrupt
    from pgcache.postgres.workload import extractor_statement_calls
    from pgcache.service.app import serve_in_thread as serve_service
    from pgcache.service.logs import configure_logging

    if args.instances > 1:
        from pgcache.cli.demo_instances import demo_instances

        return demo_instances(args)
    console = Console()
    environment = Settings.load()  # a bad variable stops the demo before anything starts
    token = operator_token(environment)
    # The services' warnings in one line each; a client cut off by Ctrl-C is no warning.
    configure_logging("warning")
    with sigterm_as_interrupt(), ExitStack() as stack:
        database_url = stack.enter_context(demo_database(console, environment.database_url))
        hashes = demo_workload(console, database_url, args)
        ml_service = stack.enter_context(serve_ml_service())
        settings = Settings.load(
            database_url=database_url, ml_service_url=ml_service.url, admin_token=token[0]
        )
        service = stack.enter_context(serve_service(settings))
        console.print(
            f"Services: reference ML service {ml_service.url}, pgcache service {service.url}",
            soft_wrap=True,
        )
        if not args.serve:
            print_token(console, *token)
        statements_before = extractor_statement_calls(database_url)
        traffic = drive_traffic(console, service.url, hashes, args.requests, args.seed)
        _summary(console, service.url, database_url, traffic, statements_before)
        if traffic.errors:
            raise CommandError(
                f"{len(traffic.errors)} of {args.requests} requests failed, "
                f"the first: {traffic.errors[0]}"
            )
        if args.serve:
            serve_until_interrupted(
                console,
                [service.url],
                ml_service.url,
                hashes[0],
                token,
                dashboard=settings.dashboard,
            )
    return EXIT_OK
