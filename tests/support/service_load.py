"""A load driver for the pgcache service over real HTTP, shared by the test suite and the benches.

:func:`run_load` starts ``clients`` threads, each with its own keep-alive connection, each sending
``requests_per_client`` requests (features GETs, and predictions for a ``predict_share`` of
them) for query hashes drawn with an 80/20 hot-key pattern: 80 % of requests go to the hottest
20 % of the hashes. The load uses the standard library's ``http.client``: a load generator should
spend as little CPU as it can (its threads share the GIL). :func:`cache_totals` reads the
service's own hit and miss counters, so a caller can compute the hit rate of a phase. Nothing
here asserts: callers decide. :func:`free_port`, :func:`cpu_seconds` and
:func:`wait_until_answers` serve the benches that run the service in a process of its own.
"""

from __future__ import annotations

import http.client
import os
import random
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx


@dataclass(frozen=True)
class LoadResult:
    """What a load run saw: per-request latencies (seconds) and statuses, and its duration."""

    seconds: float
    latencies: list[float]
    statuses: Counter[int]
    errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, share: float) -> float:
        """The latency (seconds) below which ``share`` (0 to 1) of the requests finished."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def hot_key_hashes(
    hashes: list[int], count: int, rng: random.Random, *, hot_share: float = 0.2
) -> list[int]:
    """``count`` hashes: 80 % drawn from the first ``hot_share`` of ``hashes``, 20 % from all."""
    hot = hashes[: max(1, int(len(hashes) * hot_share))]
    return [rng.choice(hot) if rng.random() < 0.8 else rng.choice(hashes) for _ in range(count)]


_JSON = {"Content-Type": "application/json"}


def _one_request(client: httpx.Client, query_hash: int, predict: bool) -> httpx.Response:
    if predict:
        return client.post(f"/api/v1/queries/{query_hash}/predict", json={})
    return client.get(f"/api/v1/queries/{query_hash}/features")


def warm_up(url: str, hashes: list[int]) -> None:
    """One features GET and one prediction per hash, so every key is cached."""
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for query_hash in hashes:
            for predict in (False, True):
                _one_request(client, query_hash, predict).raise_for_status()


def cache_totals(url: str) -> tuple[int, int]:
    """(hits, misses) over the service's five caches, from /api/v1/metrics/cache."""
    metrics = httpx.get(f"{url}/api/v1/metrics/cache", timeout=30.0).json()["metrics"]
    return int(metrics["total_cache_hits"]), int(metrics["total_cache_misses"])


def run_load(
    url: str,
    hashes: list[int],
    *,
    clients: int = 20,
    requests_per_client: int = 200,
    predict_share: float = 0.2,
    seed: int = 5,
) -> LoadResult:
    """``clients`` threads x ``requests_per_client`` requests, all starting together."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    start = threading.Barrier(clients + 1)
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: list[str] = []

    def client_thread(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        plan = [
            (query_hash, rng.random() < predict_share)
            for query_hash in hot_key_hashes(hashes, requests_per_client, rng)
        ]
        mine: list[float] = []
        seen: Counter[int] = Counter()
        failed: list[str] = []
        connection = http.client.HTTPConnection(host, port, timeout=30.0)
        start.wait()
        for query_hash, predict in plan:
            began = time.perf_counter()
            try:
                if predict:
                    connection.request(
                        "POST", f"/api/v1/queries/{query_hash}/predict", body=b"{}", headers=_JSON
                    )
                else:
                    connection.request("GET", f"/api/v1/queries/{query_hash}/features")
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                failed.append(f"{query_hash}: {type(exc).__name__}: {exc}")
                connection.close()  # the next request reconnects
                continue
            mine.append(time.perf_counter() - began)
            seen[response.status] += 1
            if response.status != 200:
                failed.append(f"{query_hash}: {response.status} {body[:200]!r}")
        connection.close()
        with lock:
            latencies.extend(mine)
            statuses.update(seen)
            errors.extend(failed)

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return LoadResult(time.perf_counter() - began, latencies, statuses, errors)


# --- a service in a process of its own (the benches) -------------------------------------------


def free_port() -> int:
    """A loopback port free now (for a server started next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (Linux /proc; ``None`` elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_answers(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Return once ``url`` answers 200; ``RuntimeError`` if ``process`` ends or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer (exit code {process.poll()})")
        time.sleep(0.05)
