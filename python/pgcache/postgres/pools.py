"""PostgreSQL connection pools on ``psycopg_pool``, configured from ``pgcache.config.Settings``.

:class:`PoolSettings` maps the original service's pool settings onto psycopg_pool's names:

==============================  ==========================  ============
Settings attribute              psycopg_pool argument       default
==============================  ==========================  ============
``database_url``                ``conninfo``                (required)
``max_database_conns``          ``max_size``                50
``max_idle_database_conns``     ``min_size``                15
``database_conn_max_lifetime``  ``max_lifetime``            5 min
``database_conn_max_idle_time`` ``max_idle``                10 min
==============================  ==========================  ============

:func:`make_pool` / :func:`make_async_pool` build the pool, open it explicitly (waiting for
``min_size`` connections, so a wrong URL fails here and not at the first query), check every
connection before handing it out (``check_connection``: after a server restart no dead
connection reaches a caller) and run an optional ``configure`` hook on every new connection.
Pool statistics come from psycopg_pool itself: ``pool.get_stats()``.

After a server restart, a caller that meets a dead idle connection waits while psycopg_pool
discards it and backs off (about a second per dead connection, by psycopg_pool's design) before
handing out a live one; ``pool.check()`` purges every idle connection at once.

This module deliberately does not run queries, retry them, or wrap the pool classes: the
pools returned are plain psycopg_pool pools.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Self

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pgcache.errors import DatabaseNotConfiguredError

if TYPE_CHECKING:
    from pgcache.config import Settings


ConfigureHook = Callable[[psycopg.Connection[Any]], None]
AsyncConfigureHook = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]


class PoolSettings(BaseModel):
    """The settings of one psycopg_pool pool, with the original service's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    conninfo: str = Field(min_length=1)
    max_size: int = Field(default=50, ge=1)
    min_size: int = Field(default=15, ge=0)
    max_lifetime: timedelta = timedelta(minutes=5)
    max_idle: timedelta = timedelta(minutes=10)
    timeout: timedelta = timedelta(seconds=30)
    name: str | None = None

    @model_validator(mode="after")
    def _check_sizes_and_durations(self) -> Self:
        if self.min_size > self.max_size:
            raise ValueError(
                f"min_size={self.min_size} (MAX_IDLE_DATABASE_CONNS) exceeds "
                f"max_size={self.max_size} (MAX_DATABASE_CONNS)"
            )
        for field in ("max_lifetime", "max_idle", "timeout"):
            value: timedelta = getattr(self, field)
            if value <= timedelta(0):
                raise ValueError(f"{field}={value!s} must be a positive duration")
        return self

    @classmethod
    def from_settings(cls, settings: Settings) -> PoolSettings:
        """Map :class:`pgcache.config.Settings` onto pool settings.

        Raises :class:`DatabaseNotConfiguredError` when ``database_url`` is not set.
        """
        if not settings.database_url:
            raise DatabaseNotConfiguredError(
                "DATABASE_URL is not set: give a PostgreSQL URL or conninfo, "
                "e.g. DATABASE_URL=postgresql://user:password@localhost:5432/dbname"
            )
        return cls(
            conninfo=settings.database_url,
            max_size=settings.max_database_conns,
            min_size=settings.max_idle_database_conns,
            max_lifetime=settings.database_conn_max_lifetime,
            max_idle=settings.database_conn_max_idle_time,
        )


def _pool_settings(settings: Settings | PoolSettings) -> PoolSettings:
    if isinstance(settings, PoolSettings):
        return settings
    return PoolSettings.from_settings(settings)


def _leave_idle(conn: psycopg.Connection[Any]) -> None:
    # psycopg_pool discards a connection that configure leaves inside a transaction; a hook
    # such as `conn.execute("SET search_path ...")` opens one, so close it for the caller.
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()


def _pool_arguments(pool_settings: PoolSettings, name: str | None) -> dict[str, Any]:
    """The psycopg_pool arguments shared by the sync and the async pool (opened by the caller)."""
    return {
        "min_size": pool_settings.min_size,
        "max_size": pool_settings.max_size,
        "max_lifetime": pool_settings.max_lifetime.total_seconds(),
        "max_idle": pool_settings.max_idle.total_seconds(),
        "timeout": pool_settings.timeout.total_seconds(),
        "name": name if name is not None else pool_settings.name,
        "open": False,
    }


def make_pool(
    settings: Settings | PoolSettings,
    *,
    configure: ConfigureHook | None = None,
    name: str | None = None,
) -> ConnectionPool[psycopg.Connection[Any]]:
    """Build and open a :class:`psycopg_pool.ConnectionPool`.

    ``configure(conn)`` runs on every new connection (for example
    ``conn.execute("SET search_path TO app")``); a transaction it leaves open is committed.
    The pool is open on return; close it with ``pool.close()`` or use it as a context manager.
    """
    pool_settings = _pool_settings(settings)

    def configure_connection(conn: psycopg.Connection[Any]) -> None:
        if configure is not None:
            configure(conn)
            _leave_idle(conn)

    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        pool_settings.conninfo,
        check=ConnectionPool.check_connection,
        configure=configure_connection,
        **_pool_arguments(pool_settings, name),
    )
    try:
        pool.open(wait=True, timeout=pool_settings.timeout.total_seconds())
    except BaseException:
        pool.close()
        raise
    return pool


async def make_async_pool(
    settings: Settings | PoolSettings,
    *,
    configure: AsyncConfigureHook | None = None,
    name: str | None = None,
) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """Build and open a :class:`psycopg_pool.AsyncConnectionPool` (see :func:`make_pool`).

    ``configure`` is a coroutine function, e.g. ``async def f(conn): await conn.execute(...)``.
    """
    pool_settings = _pool_settings(settings)

    async def configure_connection(conn: psycopg.AsyncConnection[Any]) -> None:
        if configure is not None:
            await configure(conn)
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await conn.commit()

    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        pool_settings.conninfo,
        check=AsyncConnectionPool.check_connection,
        configure=configure_connection,
        **_pool_arguments(pool_settings, name),
    )
    try:
        await pool.open(wait=True, timeout=pool_settings.timeout.total_seconds())
    except BaseException:
        await pool.close()
        raise
    return pool
