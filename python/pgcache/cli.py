"""The ``pgcache`` command: run the service, the reference ML service, the demo and the benchmark.

Sub-commands (``pgcache COMMAND --help`` for each one's options):

* ``serve``: the pgcache HTTP service (:func:`pgcache.web.create_app`) on uvicorn, configured
  from the environment (:class:`pgcache.config.Settings`);
* ``ml-service``: the reference ML prediction service (:mod:`pgcache.mlservice`);
* ``config``: the effective configuration in ``.env`` form, the database password masked;
* ``bench``: a load test of a :class:`pgcache.CacheManager` (threads x requests, 80/20 hot
  keys) with a table of throughput, latency, hit rates, evictions and memory;
* ``demo``: the whole system end to end: PostgreSQL (``DATABASE_URL``, or a private server
  from :mod:`pgcache.devdb`), a real workload, both services, HTTP traffic with hot keys, and
  a summary of what the caches saved.

Exit codes: 0 success, 1 a runtime failure (one line on stderr, no traceback), 2 a usage or
configuration error, 130 interrupted. This module is a thin shell over the library: it
computes nothing the library or the service does not already expose.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["main"]

_EXIT_OK: Final = 0
_EXIT_FAILURE: Final = 1
_EXIT_USAGE: Final = 2
_EXIT_INTERRUPTED: Final = 130
_HOT_SHARE: Final = 0.8
_HOT_KEYS: Final = 0.2


class _CommandError(Exception):
    """A runtime failure the command reports in one line (exit code 1)."""


# --- argument parsing -----------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 0 and 65535, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgcache",
        description="pgcache: a Rust TTL + LRU cache for services that analyse PostgreSQL "
        "queries, with its HTTP service, reference ML service, demo and benchmark.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the pgcache HTTP service (configured from the environment)",
        description="Run the pgcache HTTP service on uvicorn. Configuration comes from the "
        "environment and ./.env (see `pgcache config`).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8080, help="port to listen on (8080)")
    serve.add_argument("--log-level", default="info", help="uvicorn log level (info)")
    serve.set_defaults(run=_serve)

    ml_service = commands.add_parser(
        "ml-service",
        help="run the reference ML prediction service",
        description="Run the reference ML prediction service (a formula, not a trained model).",
    )
    ml_service.add_argument("--host", default="127.0.0.1", help="address (127.0.0.1)")
    ml_service.add_argument("--port", type=_port, default=8081, help="port (8081)")
    ml_service.add_argument("--log-level", default="info", help="uvicorn log level (info)")
    ml_service.set_defaults(run=_ml_service)

    config = commands.add_parser(
        "config",
        help="print the effective configuration (secrets masked)",
        description="Print the effective configuration, from the environment and ./.env, in "
        ".env form with the database password masked. Exits 2 naming any bad variable.",
    )
    config.add_argument("--env-file", help="read this .env file instead of ./.env")
    config.set_defaults(run=_config)

    bench = commands.add_parser(
        "bench",
        help="load-test a CacheManager and print the cache dashboard",
        description="Load test of the five caches of a CacheManager: THREADS threads each "
        "make REQUESTS lookups (80%% of them on 20%% of the keys), a miss stores a value. "
        "Prints throughput, p50/p99 latency, hit rate per cache, evictions and memory.",
    )
    bench.add_argument("--threads", type=_positive_int, default=100, help="threads (100)")
    bench.add_argument(
        "--requests", type=_positive_int, default=100, help="lookups per thread (100)"
    )
    bench.add_argument("--keys", type=_positive_int, default=500, help="distinct keys (500)")
    bench.add_argument(
        "--max-size", type=_positive_int, default=10_000, help="entries per cache (10000)"
    )
    bench.add_argument(
        "--value-size", type=_positive_int, default=256, help="bytes per stored value (256)"
    )
    bench.add_argument("--seed", type=int, default=0, help="random seed (0)")
    bench.set_defaults(run=_bench)

    demo = commands.add_parser(
        "demo",
        help="run the whole system end to end and show what the caches save",
        description="Start PostgreSQL (DATABASE_URL, or a private server from the installed "
        "binaries, removed at exit), run a query workload, start the reference ML service "
        "and the pgcache service on free loopback ports, send HTTP traffic with 80/20 hot "
        "keys, and print hit rates, latency cached vs. uncached and what was saved.",
    )
    demo.add_argument(
        "--requests", type=_positive_int, default=2000, help="HTTP requests to send (2000)"
    )
    demo.add_argument(
        "--queries", type=_positive_int, default=40, help="distinct query shapes to run (40)"
    )
    demo.add_argument(
        "--runs", type=_positive_int, default=20, help="executions of each query shape (20)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed of the traffic (0)")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="keep everything running after the summary and print URLs to curl (Ctrl-C ends)",
    )
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pgcache`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else _EXIT_USAGE
    run: Callable[[argparse.Namespace], int] = args.run
    from pgcache.config import ConfigError

    try:
        return run(args)
    except ConfigError as exc:
        _error(args.command, f"configuration error: {exc}")
        return _EXIT_USAGE
    except KeyboardInterrupt:
        _error(args.command, "interrupted")
        return _EXIT_INTERRUPTED
    except Exception as exc:  # one clear line instead of a traceback, for every failure
        _error(args.command, _describe(exc))
        return _EXIT_FAILURE


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, _CommandError):
        return text
    return f"{type(exc).__name__}: {text}"


def _error(command: str, message: str) -> None:
    sys.stderr.write(f"pgcache {command}: {message}\n")
    sys.stderr.flush()


# --- serve, ml-service, config -------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pgcache.config import Settings
    from pgcache.web import create_app

    settings = Settings.load()
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return _EXIT_OK


def _ml_service(args: argparse.Namespace) -> int:
    from pgcache import mlservice

    return mlservice.main(
        ["--host", args.host, "--port", str(args.port), "--log-level", args.log_level]
    )


def _config(args: argparse.Namespace) -> int:
    from pgcache.config import Settings

    settings = Settings.load() if args.env_file is None else Settings.from_env_file(args.env_file)
    sys.stdout.write(f"{settings}\n")
    return _EXIT_OK


# --- shared: percentiles, memory, progress --------------------------------------------------


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _rss_bytes() -> int:
    """The resident set size of this process now (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _mib(size: int) -> str:
    return f"{size / 2**20:+.1f} MiB"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _hot_key_picker(keys: Sequence[Any], rng: random.Random) -> Callable[[], Any]:
    """80 % of the picks among the first 20 % of ``keys``, the rest among the others."""
    hot = max(1, round(len(keys) * _HOT_KEYS))

    def pick() -> Any:
        if hot == len(keys) or rng.random() < _HOT_SHARE:
            return keys[rng.randrange(hot)]
        return keys[rng.randrange(hot, len(keys))]

    return pick


# --- bench ------------------------------------------------------------------------------------


def _bench(args: argparse.Namespace) -> int:
    from pgcache.manager import CACHE_NAMES, CacheManager

    console = Console()
    total = args.threads * args.requests
    done = [0] * args.threads
    latencies: list[list[int]] = [[] for _ in range(args.threads)]
    keys = list(range(1, args.keys + 1))
    start = threading.Barrier(args.threads + 1)
    rss_before = _rss_bytes()

    with CacheManager(max_size=args.max_size) as manager:
        caches = [manager.caches[name] for name in CACHE_NAMES]

        def worker(index: int) -> None:
            pick = _hot_key_picker(keys, random.Random(args.seed * 1_000_003 + index))
            mine = latencies[index]
            start.wait()
            for request in range(args.requests):
                cache = caches[(index + request) % len(caches)]
                key = pick()
                began = time.perf_counter_ns()
                if cache.get(key) is None:
                    cache.set(key, bytes(args.value_size))
                mine.append(time.perf_counter_ns() - began)
                done[index] = request + 1

        threads = [
            threading.Thread(target=worker, args=(index,), name=f"pgcache-bench-{index}")
            for index in range(args.threads)
        ]
        for thread in threads:
            thread.start()
        with _progress(console) as progress:
            task = progress.add_task("lookups", total=total)
            start.wait()
            began = time.perf_counter()
            while any(thread.is_alive() for thread in threads):
                progress.update(task, completed=sum(done))
                time.sleep(0.05)
            elapsed = time.perf_counter() - began
            progress.update(task, completed=sum(done))
        for thread in threads:
            thread.join()
        rss_growth = _rss_bytes() - rss_before
        metrics = manager.metrics()

    ordered = sorted(value for values in latencies for value in values)
    hits = sum(m.hits for m in metrics.values())
    lookups = hits + sum(m.misses for m in metrics.values())
    summary = Table(title=f"pgcache bench: {args.threads} threads x {args.requests} lookups")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("lookups", f"{len(ordered):,}")
    summary.add_row("throughput", f"{len(ordered) / elapsed:,.0f} lookups/s")
    summary.add_row("latency p50", f"{_percentile(ordered, 0.50) / 1000:.2f} µs")
    summary.add_row("latency p99", f"{_percentile(ordered, 0.99) / 1000:.2f} µs")
    summary.add_row("overall hit rate", f"{100.0 * hits / lookups if lookups else 0.0:.1f} %")
    summary.add_row("evictions", f"{sum(m.evictions for m in metrics.values()):,}")
    summary.add_row("memory (RSS growth)", _mib(rss_growth))
    per_cache = Table(title="per cache")
    for column in ("cache", "hits", "misses", "hit rate", "evictions", "size"):
        per_cache.add_column(column, justify="left" if column == "cache" else "right")
    for name, m in metrics.items():
        per_cache.add_row(
            name,
            f"{m.hits:,}",
            f"{m.misses:,}",
            f"{m.hit_rate:.1f} %",
            f"{m.evictions:,}",
            f"{m.size:,}",
        )
    console.print(summary)
    console.print(per_cache)
    return _EXIT_OK


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
    from pgcache.devdb import database

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

    from pgcache.devdb import run_workload

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
    pick = _hot_key_picker(hashes, random.Random(seed))
    with httpx.Client(base_url=url, timeout=30.0) as client, _progress(console) as progress:
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
    return f"{_percentile(sorted(values), fraction) * 1000:.2f}" if values else "-"


def _summary(
    console: Console,
    service_url: str,
    database_url: str,
    traffic: _Traffic,
    statements_before: int,
) -> None:
    import httpx

    from pgcache.devdb import extractor_statement_calls

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


def _print_urls(console: Console, service_url: str, ml_url: str, query_hash: int) -> None:
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


def _demo(args: argparse.Namespace) -> int:
    from pgcache.config import Settings
    from pgcache.devdb import extractor_statement_calls, sigterm_as_interrupt
    from pgcache.mlservice import serve_in_thread as serve_ml_service
    from pgcache.web import serve_in_thread as serve_service

    console = Console()
    environment = Settings.load()  # a bad variable stops the demo before anything starts
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
            raise _CommandError(
                f"{len(traffic.errors)} of {args.requests} requests failed, "
                f"the first: {traffic.errors[0]}"
            )
        if args.serve:
            try:  # Ctrl-C (or SIGTERM) is how --serve is meant to end: exit 0
                _print_urls(console, service.url, ml_service.url, hashes[0])
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                console.print("stopping")
    return _EXIT_OK
