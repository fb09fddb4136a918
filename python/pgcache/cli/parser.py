"""The ``pgcache`` command: run the service, the reference ML service, the demo and the benchmark.

Sub-commands (``pgcache COMMAND --help`` for each one's options):

* ``serve``: the pgcache HTTP service (:func:`pgcache.service.app.create_app`) on uvicorn, in one
  process or ``--workers N``, configured from the environment (:class:`pgcache.config.Settings`);
* ``ml-service``: the reference ML prediction service (:mod:`pgcache.ml.reference`);
* ``config``: the effective configuration in ``.env`` form, the database password masked;
* ``bench``: a load test of a :class:`pgcache.CacheManager` (threads x requests, 80/20 hot
  keys) with a table of throughput, latency, hit rates, evictions and memory;
* ``demo``: the whole system end to end: PostgreSQL (``DATABASE_URL``, or a private server
  from :mod:`pgcache.postgres.devserver`), a real workload, both services, HTTP traffic with hot
  keys, and a summary of what the caches saved; ``--instances N``: N service processes sharing
  one Redis (:mod:`pgcache.cli.demo_instances`).

The exit codes are listed in :mod:`pgcache.cli.exits`. This module is a thin shell over the
library: it computes nothing the library or the service does not already expose.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import Final

from pgcache import __version__
from pgcache.cli.exits import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    UsageError,
    describe,
    error,
)
from pgcache.service.logs import LOG_FORMATS, LOG_LEVELS

MAX_DEMO_INSTANCES: Final = 8
"""The most service processes ``pgcache demo --instances`` starts."""

# --- argument parsing -----------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def instance_count(text: str) -> int:
    """``demo --instances``: 1 to :data:`MAX_DEMO_INSTANCES`."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_DEMO_INSTANCES:
        raise argparse.ArgumentTypeError(
            f"expected a number of instances from 1 to {MAX_DEMO_INSTANCES}, got {text!r}"
        )
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 0 and 65535, got {text!r}")
    return value


def _logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        choices=tuple(LOG_LEVELS),
        default="info",
        help="log level of uvicorn's and pgcache's loggers (info)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text: one line per record with time, level, logger and request id; json: one "
        "JSON object per line (text)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgcache",
        description="pgcache: a Rust TTL + LRU cache for services that analyse PostgreSQL "
        "queries, with its HTTP service, reference ML service, demo and benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"pgcache {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the pgcache HTTP service (configured from the environment)",
        description="Run the pgcache HTTP service on uvicorn (uvloop and httptools when "
        "installed). Configuration comes from the environment and ./.env (see `pgcache "
        "config`). Ctrl-C or SIGTERM stops every worker gracefully.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=port, default=8080, help="port to listen on, 0: any (8080)")
    serve.add_argument(
        "--workers", type=positive_int, default=1, help="worker processes sharing the port (1)"
    )
    _logging_options(serve)
    serve.set_defaults(run="pgcache.cli.serve:serve")

    ml_service = commands.add_parser(
        "ml-service",
        help="run the reference ML prediction service",
        description="Run the reference ML prediction service (a formula, not a trained model).",
    )
    ml_service.add_argument("--host", default="127.0.0.1", help="address (127.0.0.1)")
    ml_service.add_argument("--port", type=port, default=8081, help="port, 0: any (8081)")
    _logging_options(ml_service)
    ml_service.set_defaults(run="pgcache.cli.serve:ml_service")

    config = commands.add_parser(
        "config",
        help="print the effective configuration (secrets masked)",
        description="Print the effective configuration, from the environment and ./.env, in "
        ".env form with the database password masked. Exits 2 naming any bad variable.",
    )
    config.add_argument("--env-file", help="read this .env file instead of ./.env")
    config.set_defaults(run="pgcache.cli.serve:config")

    bench = commands.add_parser(
        "bench",
        help="load-test a CacheManager and print the cache dashboard",
        description="Load test of the five caches of a CacheManager: THREADS threads each "
        "make REQUESTS lookups (80% of them on 20% of the keys), a miss stores a value. "
        "Prints throughput, p50/p99 latency, hit rate per cache, evictions and memory.",
    )
    bench.add_argument("--threads", type=positive_int, default=100, help="threads (100)")
    bench.add_argument(
        "--requests", type=positive_int, default=100, help="lookups per thread (100)"
    )
    bench.add_argument("--keys", type=positive_int, default=500, help="distinct keys (500)")
    bench.add_argument(
        "--max-size", type=positive_int, default=10_000, help="entries per cache (10000)"
    )
    bench.add_argument(
        "--value-size", type=positive_int, default=256, help="bytes per stored value (256)"
    )
    bench.add_argument("--seed", type=int, default=0, help="random seed (0)")
    bench.set_defaults(run="pgcache.cli.bench:bench")

    demo = commands.add_parser(
        "demo",
        help="run the whole system end to end and show what the caches save",
        description="Start PostgreSQL (DATABASE_URL, or a private server from the installed "
        "binaries, removed at exit), run a query workload, start the reference ML service "
        "and the pgcache service on free loopback ports, send HTTP traffic with 80/20 hot "
        "keys, and print hit rates, latency cached vs. uncached and what was saved. The "
        "services get a random ADMIN_TOKEN, printed, unless ADMIN_TOKEN is set.",
    )
    demo.add_argument(
        "--requests",
        type=positive_int,
        default=2000,
        help="HTTP requests to send, split evenly over the instances (2000)",
    )
    demo.add_argument(
        "--queries", type=positive_int, default=40, help="distinct query shapes to run (40)"
    )
    demo.add_argument(
        "--runs", type=positive_int, default=20, help="executions of each query shape (20)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed of the traffic (0)")
    demo.add_argument(
        "--instances",
        type=instance_count,
        default=1,
        help="service instances: 1 runs in this process; 2 to 8 are `pgcache serve` processes "
        "sharing one Redis (REDIS_URL, or a private redis-server removed at exit) that get "
        "the same requests in turn, then an invalidation sent to instance 1 is timed until "
        "the others honour it (1)",
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="keep everything running after the summary and print URLs to curl (Ctrl-C ends)",
    )
    demo.set_defaults(run="pgcache.cli.demo:demo")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pgcache`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    module, _, function = args.run.partition(":")
    run: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), function)
    from pgcache.errors import ConfigError

    try:
        return run(args)
    except ConfigError as exc:
        error(args.command, f"configuration error: {exc}")
        return EXIT_USAGE
    except UsageError as exc:
        error(args.command, describe(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        error(args.command, "interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # one clear line instead of a traceback, for every failure
        error(args.command, describe(exc))
        return EXIT_FAILURE
