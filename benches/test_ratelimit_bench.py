"""pgcache.RateLimiter.allow beside the Python rate limiters people use: ``limits`` (fixed and
moving window, in memory) and ``pyrate-limiter`` (its GCRA state bucket, in memory).

Run with ``pytest benches/test_ratelimit_bench.py --benchmark-only -p no:timeout``. Two figures
per limiter in the same run:

* wall-clock: pytest-benchmark times a round of ``BATCH`` calls (ns per call = round / BATCH);
* instructions per call: this file run as a worker (``python benches/test_ratelimit_bench.py
  LABEL N``) under ``valgrind --tool=callgrind``, with two call counts; the difference of the
  totals divided by the difference of the counts removes start-up and imports. Recorded as
  ``extra_info["instructions_per_call"]`` (``None`` when valgrind is missing). The hardware
  counters would be cheaper, but are often unavailable in virtual machines.

Scenarios: ``allowed`` (one client, a limit it never reaches: the common case) and ``limited``
(one client far over its limit: the flood case), and ``clients`` (1,000 clients in turn, each
within its limit).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

BATCH = 1_000
CLIENTS = [f"10.0.{i // 256}.{i % 256}" for i in range(1_000)]
HIGH = 1_000_000_000  # requests per second: never reached
LOW = 1  # one request per second: a flood is limited
LABELS = ("pgcache", "limits-fixed", "limits-moving", "pyrate-gcra")
_COLLECTED = re.compile(r"Collected : (\d+)")


def make_allow(label: str, rate: int) -> Callable[[str], Any]:
    """``allow(key)`` of limiter ``label`` with ``rate`` requests per second, burst ``rate``."""
    if label == "pgcache":
        from pgcache._core import RateLimiter

        return RateLimiter(float(rate), min(rate, 1_000_000)).allow
    if label.startswith("limits-"):
        from limits import RateLimitItemPerSecond
        from limits.storage import MemoryStorage
        from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

        strategy = FixedWindowRateLimiter if label == "limits-fixed" else MovingWindowRateLimiter
        limiter = strategy(MemoryStorage())
        item = RateLimitItemPerSecond(min(rate, 1_000_000))
        return lambda key: limiter.hit(item, key)
    if label == "pyrate-gcra":
        from pyrate_limiter import GCRA, Duration, Limiter, Rate, StateBucket

        limiter = Limiter(StateBucket([Rate(min(rate, 1_000_000), Duration.SECOND)], GCRA()))
        return lambda key: limiter.try_acquire(key, blocking=False)
    raise ValueError(label)


def _worker(label: str, calls: int) -> None:
    allow = make_allow(label, HIGH)
    for _ in range(calls):
        allow("10.0.0.1")


@cache
def instructions_per_call(label: str) -> float | None:
    """Instructions one ``allow`` of ``label`` executes (allowed, one client), by callgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None

    def total(calls: int) -> int:
        result = subprocess.run(
            [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             __file__, label, str(calls)],
            capture_output=True, text=True, timeout=1800, check=True,
        )  # fmt: skip
        match = _COLLECTED.search(result.stderr)
        assert match is not None, result.stderr[-2000:]
        return int(match[1])

    few, many = 1_000, 11_000
    return (total(many) - total(few)) / (many - few)


def _bench(benchmark: Any, label: str, rate: int, keys: list[str], expect_allowed: bool) -> None:
    pytest.importorskip("limits" if label.startswith("limits") else "pyrate_limiter")
    allow = make_allow(label, rate)

    def round_() -> Any:
        last = None
        for key in keys:
            last = allow(key)
        return last

    last = benchmark(round_)
    allowed = last is True or (type(last) is float and last == 0.0)
    assert allowed == expect_allowed
    benchmark.extra_info["calls_per_round"] = len(keys)
    benchmark.extra_info["library"] = label


@pytest.mark.parametrize("label", LABELS)
def test_allowed(benchmark: Any, label: str) -> None:
    _bench(benchmark, label, HIGH, ["10.0.0.1"] * BATCH, expect_allowed=True)
    benchmark.extra_info["instructions_per_call"] = instructions_per_call(label)


@pytest.mark.parametrize("label", LABELS)
def test_limited(benchmark: Any, label: str) -> None:
    _bench(benchmark, label, LOW, ["10.0.0.1"] * BATCH, expect_allowed=False)


@pytest.mark.parametrize("label", LABELS)
def test_clients(benchmark: Any, label: str) -> None:
    _bench(benchmark, label, HIGH, CLIENTS, expect_allowed=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    _worker(sys.argv[1], int(sys.argv[2]))
