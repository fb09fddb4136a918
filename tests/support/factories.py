"""One factory per test object: QueryFeatures for the manager, extractor, ML and service tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pgcache.postgres.features import QueryFeatures


def make_features(query_hash: int = -4221331203398113, **overrides: Any) -> QueryFeatures:
    values: dict[str, Any] = {
        "query_hash": query_hash,
        "scenario": "current",
        "calls": 120,
        "total_exec_time_ms": 600.0,
        "mean_exec_time_ms": 5.0,
        "min_exec_time_ms": 1.0,
        "max_exec_time_ms": 20.0,
        "stddev_exec_time_ms": 2.0,
        "rows": 120,
        "rows_per_call": 1.0,
        "shared_blks_hit": 900,
        "shared_blks_read": 100,
        "shared_blks_dirtied": 0,
        "shared_blks_written": 0,
        "local_blks_read": 0,
        "local_blks_written": 0,
        "temp_blks_read": 0,
        "temp_blks_written": 0,
        "shared_buffer_hit_ratio": 0.9,
        "blk_read_time_ms": 0.0,
        "blk_write_time_ms": 0.0,
        "wal_bytes": None,
        "stats_window_seconds": 60.0,
        "calls_per_minute": 120.0,
        "execution_complexity": 0.4,
        "volume_impact": 600.0,
        "collected_at": datetime(2025, 1, 1, tzinfo=UTC),
    }
    values.update(overrides)
    return QueryFeatures(**values)
