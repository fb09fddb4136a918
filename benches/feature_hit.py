"""Instructions of a cached feature (and prediction) hit against a bare ``Cache.get`` hit.

    .venv/bin/python benches/feature_hit.py                     # callgrind, prints the table
    .venv/bin/python benches/feature_hit.py features,prediction # only these labels
    .venv/bin/python benches/feature_hit.py LABEL N             # one run: N hits of LABEL

Each figure is (instructions of N2 hits - instructions of N1 hits) / (N2 - N1), minus the same
for the empty loop, under ``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0``: repeatable on
a shared machine, unlike wall-clock. 10,000 queries cached, int keys (the query hash), hits in
a fixed random order; the base extractor and the ML client are never called (a hit).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pgcache import Cache, CacheManager
from pgcache.keys import prediction_key

if TYPE_CHECKING:  # imported where used: the empty loop's run imports none of them
    from pgcache.ml.models import Prediction
    from pgcache.ml.predictor import AsyncCachedPredictor
    from pgcache.postgres.cached_features import AsyncCachedFeatureExtractor
    from pgcache.postgres.features import QueryFeatures

QUERIES = 10_000
_COLLECTED = re.compile(r"Collected : (\d+)")


class _NeverCalled:
    """A base extractor for a benchmark of hits: a call would mean a miss."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a hit called the base ({name})")


def _features(query_hash: int) -> QueryFeatures:
    from pgcache.postgres.features import QueryFeatures

    return QueryFeatures(
        query_hash=query_hash, scenario="current", calls=120, total_exec_time_ms=600.0,
        mean_exec_time_ms=5.0, min_exec_time_ms=1.0, max_exec_time_ms=20.0,
        stddev_exec_time_ms=2.0, rows=120, rows_per_call=1.0, shared_blks_hit=900,
        shared_blks_read=100, shared_blks_dirtied=0, shared_blks_written=0, local_blks_read=0,
        local_blks_written=0, temp_blks_read=0, temp_blks_written=0,
        shared_buffer_hit_ratio=0.9, blk_read_time_ms=0.0, blk_write_time_ms=0.0,
        stats_window_seconds=60.0, calls_per_minute=120.0, execution_complexity=0.4,
        volume_impact=600.0, collected_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


def _prediction(features: QueryFeatures) -> Prediction:
    from pgcache.ml.models import Prediction, features_digest

    return Prediction(
        predicted_execution_time_ms=5.0, confidence=0.9, range_min_ms=4.0, range_max_ms=6.0,
        model_version="bench", timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        features_digest=features_digest(features),
    )  # fmt: skip


def _drive(coroutine: Any) -> None:
    """Run a coroutine that never suspends (a loop of hits) to its end, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise AssertionError("a hit suspended")


async def _features_async(extractor: AsyncCachedFeatureExtractor, keys: list[int]) -> None:
    for key in keys:
        await extractor.extract_query_features(key, "current")


async def _predictions_async(predictor: AsyncCachedPredictor, keys: list[int]) -> None:
    for key in keys:
        await predictor.predict_query(key)


def _manager(hashes: list[int], predictions: bool) -> CacheManager:
    """A manager with every hash's features cached (and a prediction of each, if asked)."""
    manager = CacheManager(max_size=QUERIES)
    template = _features(0)
    for query_hash in hashes:
        features = template.model_copy(update={"query_hash": query_hash})
        manager.set_features(query_hash, "current", features)
        if predictions:
            key = prediction_key(query_hash, "current", None)
            manager.cache("predictions").set(key, _prediction(features))
    return manager


def run(label: str, calls: int) -> None:
    """``calls`` hits of ``label``, each loop written out so that its own cost is the empty
    loop's (no call in between)."""
    hashes = list(
        dict.fromkeys(random.Random(7).randrange(-(2**63), 2**63) for _ in range(QUERIES))
    )
    order = random.Random(11).choices(hashes, k=QUERIES)
    rounds, rest = divmod(calls, len(order))
    keys = order * rounds + order[:rest]
    base: Any = _NeverCalled()
    if label == "empty":
        for _key in keys:
            pass
    elif label == "cache.get":
        cache: Cache[int, QueryFeatures] = Cache(ttl=900, max_size=QUERIES, name="features")
        template = _features(0)
        for query_hash in hashes:
            cache.set(query_hash, template.model_copy(update={"query_hash": query_hash}))
        for key in keys:
            cache.get(key)
    elif label.startswith("features"):
        from pgcache.postgres.cached_features import (
            AsyncCachedFeatureExtractor,
            CachedFeatureExtractor,
        )

        manager = _manager(hashes, predictions=False)
        sync = CachedFeatureExtractor(base, manager)
        if label == "features":
            for key in keys:
                sync.extract_query_features(key, "current")
        elif label == "features-other-scenario":
            for key in keys:
                sync.extract_query_features(key, "peak")
        else:  # the loop inside one coroutine: each hit is one await
            _drive(_features_async(AsyncCachedFeatureExtractor(base, manager), keys))
    else:
        from pgcache.config import Settings
        from pgcache.ml.client import AsyncMLClient, MLClient
        from pgcache.ml.predictor import AsyncCachedPredictor, CachedPredictor
        from pgcache.postgres.cached_features import (
            AsyncCachedFeatureExtractor,
            CachedFeatureExtractor,
        )

        manager = _manager(hashes, predictions=True)
        settings = Settings()
        # Every features object's digest computed once before the measured loop (as after the
        # first request of each query), so that N1 and N2 hits differ by hits only.
        if label == "prediction":
            predictor = CachedPredictor(
                CachedFeatureExtractor(base, manager), MLClient(settings), manager
            )
            for query_hash in hashes:
                predictor.predict_query(query_hash)
            for key in keys:
                predictor.predict_query(key)
        else:
            extractor = AsyncCachedFeatureExtractor(base, manager)
            apredictor = AsyncCachedPredictor(extractor, AsyncMLClient(settings), manager)
            _drive(_predictions_async(apredictor, hashes))
            _drive(_predictions_async(apredictor, keys))


def instructions(label: str, calls: int) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is missing: apt-get install valgrind")
    result = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, label, str(calls)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    match = _COLLECTED.search(result.stderr)
    assert match is not None, result.stderr[-2000:]
    return int(match[1])


def per_call(label: str, few: int = 10_000, many: int = 50_000) -> float:
    return (instructions(label, many) - instructions(label, few)) / (many - few)


LABELS = (
    "cache.get",
    "features",
    "features-async",
    "features-other-scenario",
    "prediction",
    "prediction-async",
)


def main(labels: list[str]) -> None:
    empty = per_call("empty")
    bare = per_call("cache.get") - empty
    print(f"empty loop: {empty:,.0f} instructions per iteration (subtracted below)")
    print("| hit | instructions | x `Cache.get` hit |")
    print("|---|---|---|")
    for label in labels:
        net = bare if label == "cache.get" else per_call(label) - empty
        print(f"| {label} | {net:,.0f} | {net / bare:.2f} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in (*LABELS, "empty"):
        run(sys.argv[1], int(sys.argv[2]))
    else:  # optional: the labels to measure, e.g. features,prediction
        main(sys.argv[1].split(",") if len(sys.argv) == 2 else list(LABELS))
