"""pgcache bench: a load test of a CacheManager with a table of what the caches did."""

from __future__ import annotations

import argparse
import random
import threading
import time
from typing import Final

from rich.console import Console
from rich.table import Table

from pgcache.cli.exits import EXIT_OK
from pgcache.cli.report import hot_key_picker, mib, percentile, progress_bar, rss_bytes

PROGRESS_INTERVAL: Final = 0.05
"""Seconds between two updates of the progress bar (the measurement does not depend on it)."""

# --- bench ------------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> int:
    from pgcache.caching.manager import CacheManager
    from pgcache.keys import CACHE_NAMES

    console = Console()
    total = args.threads * args.requests
    done = [0] * args.threads
    latencies: list[list[int]] = [[] for _ in range(args.threads)]
    finished = [0.0] * args.threads
    began: list[float] = []
    keys = list(range(1, args.keys + 1))
    # The last worker to arrive starts the clock; each worker stops its own.
    start = threading.Barrier(args.threads, action=lambda: began.append(time.perf_counter()))
    stop = threading.Event()
    rss_before = rss_bytes()

    with CacheManager(max_size=args.max_size) as manager:
        caches = [manager.caches[name] for name in CACHE_NAMES]

        def worker(index: int) -> None:
            pick = hot_key_picker(keys, random.Random(args.seed * 1_000_003 + index))
            mine = latencies[index]
            try:
                start.wait()
            except threading.BrokenBarrierError:  # interrupted before the run began
                return
            for request in range(args.requests):
                if stop.is_set():
                    return
                cache = caches[(index + request) % len(caches)]
                key = pick()
                began_ns = time.perf_counter_ns()
                if cache.get(key) is None:
                    cache.set(key, bytes(args.value_size))
                mine.append(time.perf_counter_ns() - began_ns)
                done[index] = request + 1
            finished[index] = time.perf_counter()

        threads: list[threading.Thread] = []
        try:
            for index in range(args.threads):
                thread = threading.Thread(
                    target=worker, args=(index,), name=f"pgcache-bench-{index}", daemon=True
                )
                thread.start()
                threads.append(thread)
            with progress_bar(console) as progress:
                task = progress.add_task("lookups", total=total)
                for thread in threads:
                    while thread.is_alive():
                        thread.join(PROGRESS_INTERVAL)
                        progress.update(task, completed=sum(done))
        except BaseException:  # Ctrl-C: the workers stop before their caches close
            stop.set()
            start.abort()
            for thread in threads:
                thread.join()
            raise
        elapsed = max(finished) - began[0]
        rss_growth = rss_bytes() - rss_before
        metrics = manager.metrics()

    ordered = sorted(value for values in latencies for value in values)
    hits = sum(m.hits for m in metrics.values())
    lookups = hits + sum(m.misses for m in metrics.values())
    summary = Table(title=f"pgcache bench: {args.threads} threads x {args.requests} lookups")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("lookups", f"{len(ordered):,}")
    summary.add_row("elapsed", f"{elapsed:.6f} s")
    throughput = len(ordered) / elapsed if elapsed > 0 else 0.0
    summary.add_row("throughput", f"{throughput:,.0f} lookups/s")
    summary.add_row("latency p50", f"{percentile(ordered, 0.50) / 1000:.2f} µs")
    summary.add_row("latency p99", f"{percentile(ordered, 0.99) / 1000:.2f} µs")
    summary.add_row("overall hit rate", f"{100.0 * hits / lookups if lookups else 0.0:.1f} %")
    summary.add_row("evictions", f"{sum(m.evictions for m in metrics.values()):,}")
    summary.add_row("memory (RSS growth)", mib(rss_growth))
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
    return EXIT_OK
