"""pgcache.db: pool settings from Settings, and the pools they build on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import ValidationError
from tests.support.postgres import Workload

from pgcache import PgCacheError, PgStatStatementsExtractor
from pgcache.config import Settings
from pgcache.errors import DatabaseNotConfiguredError
from pgcache.postgres.pools import PoolSettings, make_async_pool, make_pool

SEARCH_PATH = "pgcache_workload, public"
RestartPostgres = Callable[[], None]


def _set_search_path(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"SET search_path TO {SEARCH_PATH}")


async def _set_search_path_async(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(f"SET search_path TO {SEARCH_PATH}")


@contextlib.contextmanager
def _holding(
    pool: ConnectionPool[psycopg.Connection[Any]], count: int
) -> Iterator[list[psycopg.Connection[Any]]]:
    """Check ``count`` connections out at once (so they are distinct), then give them back."""
    conns = [pool.getconn() for _ in range(count)]
    try:
        yield conns
    finally:
        for conn in conns:
            pool.putconn(conn)


# --- PoolSettings ------------------------------------------------------------------------------


def test_pool_settings_map_the_settings_defaults() -> None:
    pool_settings = PoolSettings.from_settings(Settings(database_url="postgresql://db/app"))
    assert pool_settings.conninfo == "postgresql://db/app"
    assert (pool_settings.max_size, pool_settings.min_size) == (50, 15)
    assert pool_settings.max_lifetime == timedelta(minutes=5)
    assert pool_settings.max_idle == timedelta(minutes=10)


def test_pool_settings_map_every_pool_variable() -> None:
    settings = Settings(
        database_url="postgresql://db/app",
        max_database_conns=7,
        max_idle_database_conns=3,
        database_conn_max_lifetime=timedelta(seconds=90),
        database_conn_max_idle_time=timedelta(seconds=45),
    )
    pool_settings = PoolSettings.from_settings(settings)
    assert (pool_settings.max_size, pool_settings.min_size) == (7, 3)
    assert pool_settings.max_lifetime == timedelta(seconds=90)
    assert pool_settings.max_idle == timedelta(seconds=45)


def test_a_missing_database_url_is_one_clear_error() -> None:
    with pytest.raises(DatabaseNotConfiguredError, match="DATABASE_URL is not set") as caught:
        PoolSettings.from_settings(Settings(database_url=None))
    assert isinstance(caught.value, PgCacheError)


def test_make_pool_refuses_settings_without_a_database_url() -> None:
    with pytest.raises(DatabaseNotConfiguredError, match="DATABASE_URL"):
        make_pool(Settings(database_url=None))


def test_more_idle_than_total_connections_is_rejected_naming_both() -> None:
    with pytest.raises(ValidationError, match=r"min_size=20 .* exceeds max_size=10"):
        PoolSettings(conninfo="postgresql://db/app", min_size=20, max_size=10)


def test_a_non_positive_lifetime_is_rejected_naming_it() -> None:
    with pytest.raises(ValidationError, match="max_lifetime=0:00:00 must be a positive"):
        PoolSettings(conninfo="postgresql://db/app", max_lifetime=timedelta(0))


# --- the pools ---------------------------------------------------------------------------------


def test_a_pool_applies_the_settings(postgres_url: str) -> None:
    settings = Settings(
        database_url=postgres_url,
        max_database_conns=6,
        max_idle_database_conns=3,
        database_conn_max_lifetime=timedelta(seconds=120),
        database_conn_max_idle_time=timedelta(seconds=60),
    )
    with make_pool(settings, name="settings-test") as pool:
        assert (pool.min_size, pool.max_size) == (3, 6)
        assert (pool.max_lifetime, pool.max_idle) == (120.0, 60.0)
        assert pool.name == "settings-test"
        assert pool.get_stats()["pool_size"] == 3


def test_a_pool_is_open_and_usable_on_return(postgres_url: str) -> None:
    with make_pool(PoolSettings(conninfo=postgres_url, min_size=1, max_size=2)) as pool:
        assert not pool.closed
        with pool.connection() as conn:
            assert conn.execute("SELECT 42").fetchone() == (42,)


def test_a_pool_grows_to_max_size_and_no_further(postgres_url: str) -> None:
    pool_settings = PoolSettings(
        conninfo=postgres_url, min_size=1, max_size=3, timeout=timedelta(seconds=0.5)
    )
    with make_pool(pool_settings) as pool, _holding(pool, 3) as conns:
        assert len({conn.info.backend_pid for conn in conns}) == 3
        with pytest.raises(PoolTimeout):
            pool.getconn()


def test_the_configure_hook_runs_on_every_connection(postgres_url: str) -> None:
    pool_settings = PoolSettings(conninfo=postgres_url, min_size=2, max_size=5)
    with make_pool(pool_settings, configure=_set_search_path) as pool, _holding(pool, 5) as conns:
        assert len({conn.info.backend_pid for conn in conns}) == 5
        for conn in conns:
            assert conn.execute("SHOW search_path").fetchone() == (SEARCH_PATH,)


def test_a_configured_connection_is_handed_out_idle(postgres_url: str) -> None:
    pool_settings = PoolSettings(conninfo=postgres_url, min_size=1, max_size=1)
    with make_pool(pool_settings, configure=_set_search_path) as pool, _holding(pool, 1) as conns:
        assert conns[0].info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_pool_that_cannot_connect_fails_at_creation(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        port = conn.info.port
    bad = psycopg.conninfo.make_conninfo(postgres_url, port=port, dbname="no_such_database")
    pool_settings = PoolSettings(conninfo=bad, min_size=1, timeout=timedelta(seconds=1))
    with pytest.raises(PoolTimeout):
        make_pool(pool_settings)


async def test_an_async_pool_applies_the_settings(postgres_url: str) -> None:
    pool_settings = PoolSettings(conninfo=postgres_url, min_size=2, max_size=4)
    pool = await make_async_pool(pool_settings, name="async-settings-test")
    async with pool:
        assert (pool.min_size, pool.max_size, pool.name) == (2, 4, "async-settings-test")
        assert pool.get_stats()["pool_size"] == 2


async def test_the_async_configure_hook_runs_on_every_connection(postgres_url: str) -> None:
    pool_settings = PoolSettings(conninfo=postgres_url, min_size=1, max_size=4)
    pool = await make_async_pool(pool_settings, configure=_set_search_path_async)
    async with pool:
        conns = [await pool.getconn() for _ in range(4)]
        try:
            assert len({conn.info.backend_pid for conn in conns}) == 4
            for conn in conns:
                cursor = await conn.execute("SHOW search_path")
                assert await cursor.fetchone() == (SEARCH_PATH,)
        finally:
            for conn in conns:
                await pool.putconn(conn)


# --- a server restart --------------------------------------------------------------------------


def test_after_a_server_restart_no_dead_connection_reaches_a_caller(
    postgres_url: str, restart_postgres: RestartPostgres
) -> None:
    pool_settings = PoolSettings(conninfo=postgres_url, min_size=3, max_size=3)
    with make_pool(pool_settings) as pool:
        with _holding(pool, 3) as before:
            old_pids = {conn.info.backend_pid for conn in before}
        restart_postgres()
        with _holding(pool, 3) as after:
            for conn in after:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert not old_pids & {conn.info.backend_pid for conn in after}


def test_an_extractor_keeps_working_across_a_server_restart(
    postgres_url: str, restart_postgres: RestartPostgres, pg_workload: Workload
) -> None:
    queryid = pg_workload.queryids["count_all"]
    with make_pool(PoolSettings(conninfo=postgres_url, min_size=2, max_size=2)) as pool:
        extractor = PgStatStatementsExtractor(pool)
        extractor.extract_query_features(queryid, "current")
        restart_postgres()
        # pg_stat_statements keeps its entries across a clean restart.
        results = [extractor.extract_query_features(queryid, "current") for _ in range(4)]
    assert all(features.query_hash == queryid for features in results)


async def test_after_a_server_restart_the_async_pool_hands_out_live_connections(
    postgres_url: str, restart_postgres: RestartPostgres
) -> None:
    pool = await make_async_pool(PoolSettings(conninfo=postgres_url, min_size=3, max_size=3))
    async with pool:
        await pool.wait()
        await asyncio.to_thread(restart_postgres)
        conns = [await pool.getconn() for _ in range(3)]
        try:
            for conn in conns:
                cursor = await conn.execute("SELECT 1")
                assert await cursor.fetchone() == (1,)
        finally:
            for conn in conns:
                await pool.putconn(conn)
