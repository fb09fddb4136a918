"""``pgcache serve --workers 1`` beside ``--workers 2``: requests per second with wrk, alternated.

Usage (from the repository root, with the project's venv; wrk from Debian's ``wrk`` package)::

    python benches/workers.py                       # 6 rounds x 10 s per endpoint and setting
    python benches/workers.py --rounds 3 --duration 5 --markdown workers.md

One private PostgreSQL (or ``DATABASE_URL``) with a small workload, and the reference ML
service in this process. Each round starts ``pgcache serve --workers 1`` and
``pgcache serve --workers 2`` in turn (the order flips every round, so neither setting always
runs first), each on a fresh port, waits for ``/readyz``, warms it up with wrk (its
connections reach every worker that has started, and each worker's feature cache loads the key
once), then runs ``wrk`` against that cached features endpoint and against ``/healthz``. The
machine is shared and noisy: what is reported is the median and the range over the rounds of
each setting, never one run. Client and server share the same cores; the load average before
and after the run is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pgcache.ml.reference import serve_in_thread as serve_ml_service
from pgcache.postgres.devserver import database
from pgcache.postgres.workload import run_workload

# Run as a script, this folder is on sys.path, not the repository root (where tests/ is).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.service_load import free_port, wait_until_answers

WORKER_COUNTS = (1, 2)
_START_TIMEOUT = 120.0
_STOP_TIMEOUT = 60.0
_WRK_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class Runs:
    """Every wrk run of one endpoint under one worker count."""

    rates: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)


def _load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def _processor() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@contextmanager
def _service(workers: int, environment: dict[str, str], cwd: Path) -> Iterator[str]:
    """``pgcache serve --workers N`` on a free port, at log level warning (no access log)."""
    port = free_port()
    command = [sys.executable, "-m", "pgcache", "serve", "--port", str(port),
               "--workers", str(workers), "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env=environment, cwd=cwd, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/readyz", process, timeout=_START_TIMEOUT)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wrk(url: str, seconds: float, threads: int, connections: int) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 latency (ms) of one wrk run."""
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    rate = _WRK_RATE.search(result.stdout)
    latency = {m[1]: float(m[2]) * _UNIT_MS[m[3]] for m in _WRK_LATENCY.finditer(result.stdout)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if rate is None or set(latency) != {"50", "99"} or errors is not None:
        raise RuntimeError(f"unexpected wrk output:\n{result.stdout}{result.stderr}")
    return float(rate[1]), latency["50"], latency["99"]


def _summary(values: list[float], digits: int = 0) -> str:
    return (
        f"{statistics.median(values):,.{digits}f} "
        f"({min(values):,.{digits}f}-{max(values):,.{digits}f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds of both settings (6)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up (2)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk was not found: apt-get install wrk")

    endpoints: dict[str, str] = {}
    results: dict[tuple[str, int], Runs] = {}
    load_before = _load_average()
    with (
        database(os.environ.get("DATABASE_URL")) as (database_url, _),
        serve_ml_service() as ml_service,
        tempfile.TemporaryDirectory(prefix="pgcache-bench-workers-") as directory,
    ):
        workload = run_workload(database_url, min_shapes=5, runs_per_shape=3)
        query_hash = next(iter(workload.queryids.values()))
        endpoints = {
            "features (cached)": f"/api/v1/queries/{query_hash}/features?scenario=current",
            "/healthz": "/healthz",
        }
        environment = {
            **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "RATE_LIMIT"}},
            "DATABASE_URL": database_url,
            "ML_SERVICE_URL": ml_service.url,
        }
        for number in range(args.rounds):
            order = WORKER_COUNTS if number % 2 == 0 else WORKER_COUNTS[::-1]
            for workers in order:
                with _service(workers, environment, Path(directory)) as url:
                    for path in endpoints.values():
                        _wrk(url + path, args.warmup, args.threads, args.connections)
                    for name, path in endpoints.items():
                        rate, p50, p99 = _wrk(
                            url + path, args.duration, args.threads, args.connections
                        )
                        runs = results.setdefault((name, workers), Runs())
                        runs.rates.append(rate)
                        runs.p50_ms.append(p50)
                        runs.p99_ms.append(p99)
                        print(
                            f"round {number + 1}, --workers {workers}, {name}: {rate:,.0f} "
                            f"requests/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms",
                            flush=True,
                        )

    lines = [
        f"processor: {_processor()}, {os.cpu_count()} cores; load average before "
        f"{load_before}, after {_load_average()}",
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, {args.rounds} rounds "
        "per setting, alternated; median (min-max)",
        "",
        "| endpoint | workers | requests/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name in endpoints:
        for workers in WORKER_COUNTS:
            runs = results[(name, workers)]
            lines.append(
                f"| {name} | {workers} | {_summary(runs.rates)} | {_summary(runs.p50_ms, 2)} "
                f"| {_summary(runs.p99_ms, 1)} |"
            )
    for name in endpoints:
        one, two = (statistics.median(results[(name, w)].rates) for w in WORKER_COUNTS)
        ratios = [
            b / a for a, b in zip(results[(name, 1)].rates, results[(name, 2)].rates, strict=True)
        ]
        lines.append(
            f"\n{name}: --workers 2 / --workers 1 = {two / one:.2f} (ratio of medians); "
            f"per round {min(ratios):.2f} to {max(ratios):.2f}"
        )
    text = "\n".join(lines)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
