"""pgcache: a thread-safe TTL + LRU cache in Rust for services that analyse PostgreSQL queries.

The cache itself lives in the compiled extension ``pgcache._core``; this package
re-exports its public names. Everything else (configuration, the five-cache
manager, metrics exposition, the ML client) is built on top in pure Python.
"""

from pgcache._core import (
    Cache,
    CacheClosedError,
    CacheMetrics,
    ManualClock,
    PgCacheError,
)

__all__ = [
    "Cache",
    "CacheClosedError",
    "CacheMetrics",
    "ManualClock",
    "PgCacheError",
]
