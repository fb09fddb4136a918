"""pgcache bench: a load test of a CacheManager with a table of what the caches did."""

from __future__ import annotations

import argparse
import random
import threading
import time

from rich.console import Console
from rich.table import Table

from pgcache.cli.exits import EXIT_OK
from pgcache.cli.report import hot_key_picker, mib, percentile, progress_bar, rss_bytes

# --- bench ------------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> int:
    from pgcache.caching.manager import CacheManager
    from pgcache.keys import CACHE_NAMES

    console = Console()
    total = args.threads * args.requests
    done = [0] * args.threads
    latencies: list[list[int]] = [[] for _ in range(args.threads)]
    keys = list(range(1, args.keys + 1))
    start = threading.Barrier(args.threads + 1)
    rss_before = rss_bytes()

    with CacheManager(max_size=args.max_size) as manager:
        caches = [manager.caches[name] for name in CACHE_NAMES]

        def worker(index: int) -> None:
            pick = hot_key_picker(keys, random.Random(args.seed * 1_000_003 + index))
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
        with progress_bar(console) as progress:
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
        rss_growth = rss_bytes() - rss_before
        metrics = manager.metrics()

    ordered = sorted(value for values in latencies for value in values)
    hits = sum(m.hits for m in metrics.values())
    lookups = hits + sum(m.misses for m in metrics.values())
    summary = Table(title=f"pgcache bench: {args.threads} threads x {args.requests} lookups")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("lookups", f"{len(ordered):,}")
    summary.add_row("throughput", f"{len(ordered) / elapsed:,.0f} lookups/s")
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
