"""A private, throw-away PostgreSQL with ``pg_stat_statements``, and a workload to fill it.

The demo (``pgcache demo``), the test suite and the benchmarks need a real PostgreSQL whose
``pg_stat_statements`` has rows. This module provides both halves:

* :class:`PgServer` runs ``initdb`` in a temporary directory, starts the server from the
  installed binaries on a free loopback port (its unix socket also inside that directory) with
  ``pg_stat_statements`` preloaded and ``track = all``, trust authentication and no fsync,
  creates the extension, and removes everything on :meth:`PgServer.stop`. Run as root, it runs
  the server as the unprivileged ``postgres`` user (``initdb`` refuses root) via ``runuser``.
  :func:`private_postgres` wraps it as a context manager that also cleans up on Ctrl-C and on
  SIGTERM.
* :func:`run_workload` creates a small schema and runs a few dozen distinct query shapes, each
  several times, and returns their ``queryid`` values (the query hashes pgcache caches by).

:func:`prepare_external` checks a server given by ``DATABASE_URL`` instead.

It deliberately does not install PostgreSQL: when the server binaries are missing it raises
:class:`PostgresUnavailableError` saying which package to install. It is a development and demo
aid, not a way to run a production database.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final

import psycopg

__all__ = [
    "SECOND_ROLE",
    "WORKLOAD_SCHEMA",
    "PgServer",
    "PostgresUnavailableError",
    "Workload",
    "extractor_statement_calls",
    "find_bindir",
    "prepare_external",
    "private_postgres",
    "queryid_of",
    "run_workload",
    "sigterm_as_interrupt",
]

_REQUIRED_BINARIES: Final = ("initdb", "pg_ctl", "postgres")
_UNPRIVILEGED_USERS: Final = ("postgres", "nobody")
_START_TIMEOUT_SECONDS: Final = 30
_KILL_WAIT_SECONDS: Final = 10.0


class PostgresUnavailableError(RuntimeError):
    """The PostgreSQL server binaries (or pg_stat_statements) are not usable here."""


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path))


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (newest version first)."""
    candidates: list[str] = []
    if override := os.environ.get("PGCACHE_PG_BINDIR"):
        candidates.append(override)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], check=True, capture_output=True, text=True
            )
            candidates.append(out.stdout.strip())
    candidates.extend(
        sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    )
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(str(Path(initdb).resolve().parent))
    for candidate in candidates:
        bindir = Path(candidate)
        if all((bindir / name).is_file() for name in _REQUIRED_BINARIES):
            return bindir
    raise PostgresUnavailableError(
        "the PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found under "
        f"`pg_config --bindir` or /usr/lib/postgresql/*/bin (looked in {candidates}); "
        "install the `postgresql` Debian package (apt-get install postgresql), "
        "or set DATABASE_URL to a server with pg_stat_statements enabled"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unprivileged_user() -> pwd.struct_passwd:
    for name in _UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailableError(
        "running as root, and neither a `postgres` nor a `nobody` user exists to run the "
        "server as (initdb refuses root); create one: useradd --system postgres"
    )


def _ensure_extension(url: str) -> None:
    """Create pg_stat_statements and check it can be read (it needs preloading)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()


def prepare_external(url: str) -> None:
    """Check that the server at ``url`` (from DATABASE_URL) has a usable pg_stat_statements."""
    try:
        _ensure_extension(url)
    except psycopg.Error as exc:
        raise PostgresUnavailableError(
            f"DATABASE_URL is set but pg_stat_statements is not usable there ({exc}); the "
            "server needs shared_preload_libraries = 'pg_stat_statements' (then a restart), "
            "and its user must be allowed to CREATE EXTENSION pg_stat_statements"
        ) from exc


class PgServer:
    """One private PostgreSQL server in a temporary directory; :meth:`stop` removes it all."""

    def __init__(self, bindir: Path | None = None, *, preload: bool = True) -> None:
        self.preload = preload
        self.bindir = bindir if bindir is not None else find_bindir()
        self._run_as: pwd.struct_passwd | None = _unprivileged_user() if os.geteuid() == 0 else None
        self.base_dir = Path(tempfile.mkdtemp(prefix="pgcache-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "server.log"
        self.port = _free_port()
        self.running = False

    @property
    def url(self) -> str:
        """The connection URL (user ``postgres``, trust authentication, database ``postgres``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, or None when the server is not running."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _command(self, binary: str, *args: str) -> list[str]:
        command = [str(self.bindir / binary), *args]
        if self._run_as is not None:
            command = ["runuser", "-u", self._run_as.pw_name, "--", *command]
        return command

    def _run(self, binary: str, *args: str) -> None:
        command = self._command(binary, *args)
        try:
            # A session of its own: a Ctrl-C in the terminal reaches us, not the server, so
            # the server is stopped by stop() in order rather than killed half-way.
            result = subprocess.run(
                command,
                cwd=self.base_dir,
                capture_output=True,
                text=True,
                check=False,
                start_new_session=True,
            )
        except OSError as exc:
            raise PostgresUnavailableError(f"cannot run {' '.join(command)}: {exc}") from exc
        if result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise PostgresUnavailableError(
                f"{' '.join(command)} failed with exit code {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\n--- server log ---\n{log[-4000:]}"
            )

    def start(self) -> None:
        """initdb (first time only), start, and create the extension."""
        if self._run_as is not None:
            os.chown(self.base_dir, self._run_as.pw_uid, self._run_as.pw_gid)
        if not self.data_dir.exists():
            self._initdb()
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                  "-t", str(_START_TIMEOUT_SECONDS), "start")  # fmt: skip
        self.running = True
        if self.preload:
            _ensure_extension(self.url)

    def _initdb(self) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")  # fmt: skip
        self.socket_dir.mkdir()
        if self._run_as is not None:
            os.chown(self.socket_dir, self._run_as.pw_uid, self._run_as.pw_gid)
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "shared_preload_libraries": "'pg_stat_statements'" if self.preload else "''",
            "compute_query_id": "on",
            "track_io_timing": "on",
            "max_connections": "300",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
        }
        if self.preload:
            settings["pg_stat_statements.track"] = "all"
            settings["pg_stat_statements.max"] = "10000"
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write("\n# pgcache test server\n")
            handle.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def restart(self) -> None:
        """Restart the server (fast mode: every open connection is terminated)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                  "-t", str(_START_TIMEOUT_SECONDS), "-m", "fast", "restart")  # fmt: skip
        self.running = True

    def stop_server(self) -> None:
        """Stop the server but keep its directory (it can be started again)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", "fast", "stop")
            self.running = False

    def stop(self) -> None:
        """Stop the server and remove its directory (idempotent; never leaves the server up)."""
        try:
            if self.running or self.pid is not None:
                try:
                    self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", "immediate", "stop")
                except PostgresUnavailableError:
                    self._kill()
                self.running = False
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _kill(self) -> None:
        """SIGKILL the postmaster (its backends exit when it dies) and wait until it is gone."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + _KILL_WAIT_SECONDS
        while _process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` and ``with`` block runs."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`KeyboardInterrupt`, as Ctrl-C does.

    So ``kill PID`` runs every ``finally`` and ``with`` exit on the way out. Only the main
    thread can install a signal handler; elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise _Terminated(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def private_postgres(*, preload: bool = True) -> Iterator[PgServer]:
    """A started :class:`PgServer`, stopped and removed at the end of the block.

    Also on Ctrl-C and on SIGTERM (turned into :class:`KeyboardInterrupt` while the block runs
    in the main thread), so an interrupted demo leaves no server and no directory behind.
    Raises :class:`PostgresUnavailableError` when the server binaries are missing.
    """
    with sigterm_as_interrupt():
        server = PgServer(preload=preload)
        try:
            server.start()
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def database(url: str | None) -> Iterator[tuple[str, PgServer | None]]:
    """``url`` (checked for a usable pg_stat_statements), or a private PostgreSQL removed when
    the block ends: ``(url, server)``, with ``server`` None for an external database."""
    if url is not None:
        prepare_external(url)
        yield url, None
        return
    with private_postgres() as server:
        yield server.url, server


# --- a real workload, so that pg_stat_statements has rows -----------------------------------

WORKLOAD_SCHEMA = "pgcache_workload"
SECOND_ROLE = "pgcache_workload_reader"

_SCHEMA_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {WORKLOAD_SCHEMA};
CREATE TABLE IF NOT EXISTS {WORKLOAD_SCHEMA}.customers (
    id int PRIMARY KEY, name text NOT NULL, region text NOT NULL);
CREATE TABLE IF NOT EXISTS {WORKLOAD_SCHEMA}.orders (
    id serial PRIMARY KEY, customer int NOT NULL, amount numeric(12, 2) NOT NULL,
    created timestamptz NOT NULL, note text);
CREATE INDEX IF NOT EXISTS orders_customer ON {WORKLOAD_SCHEMA}.orders (customer);
"""

_FILL_SQL = f"""
INSERT INTO {WORKLOAD_SCHEMA}.customers
    SELECT i, 'customer ' || i, (ARRAY['eu', 'us', 'apac'])[1 + i % 3]
    FROM generate_series(1, 200) AS i;
INSERT INTO {WORKLOAD_SCHEMA}.orders (customer, amount, created, note)
    SELECT 1 + i % 200, (i % 997) / 7.0, now() - make_interval(mins => i), 'note ' || i
    FROM generate_series(1, 5000) AS i;
ANALYZE {WORKLOAD_SCHEMA}.customers;
ANALYZE {WORKLOAD_SCHEMA}.orders;
"""

_T = WORKLOAD_SCHEMA
_FIXED_SHAPES: dict[str, str] = {
    "count_all": f"SELECT count(*) FROM {_T}.orders",
    "by_customer": f"SELECT id, amount FROM {_T}.orders WHERE customer = %s",
    "sum_by_customer": f"SELECT customer, sum(amount) FROM {_T}.orders GROUP BY customer",
    "avg_by_region": f"SELECT c.region, avg(o.amount) FROM {_T}.orders o "
    f"JOIN {_T}.customers c ON c.id = o.customer GROUP BY c.region",
    "top_orders": f"SELECT id, amount FROM {_T}.orders ORDER BY amount DESC LIMIT %s",
    "recent": f"SELECT id FROM {_T}.orders WHERE created > now() - make_interval(mins => %s)",
    "customer_name": f"SELECT name FROM {_T}.customers WHERE id = %s",
    "like_note": f"SELECT count(*) FROM {_T}.orders WHERE note LIKE %s",
    "insert_order": f"INSERT INTO {_T}.orders (customer, amount, created, note) "
    "VALUES (%s, %s, now(), 'workload')",
    "update_order": f"UPDATE {_T}.orders SET amount = amount + 0 WHERE id = %s",
    "delete_none": f"DELETE FROM {_T}.orders WHERE id = -%s",
    "sort_temp": f"SELECT note FROM {_T}.orders ORDER BY note DESC OFFSET %s LIMIT 1",
    "shared_by_two_roles": f"SELECT max(amount) FROM {_T}.orders WHERE customer < %s",
}

_COLUMNS = ("id", "customer", "amount", "created", "note")
_FILTERS = (("customer", "="), ("customer", "<"), ("amount", ">"), ("id", "<"))


def _generated_shapes() -> Iterator[tuple[str, str]]:
    """Endless distinct shapes: column lists x filters (each a different queryid)."""
    width = 1
    while width <= len(_COLUMNS):
        for columns in itertools.combinations(_COLUMNS, width):
            for column, operator in _FILTERS:
                name = f"select_{'_'.join(columns)}_where_{column}_{_OPERATOR_NAMES[operator]}"
                sql = (
                    f"SELECT {', '.join(columns)} FROM {_T}.orders "
                    f"WHERE {column} {operator} %s LIMIT 50"
                )
                yield name, sql
        width += 1


_OPERATOR_NAMES = {"=": "eq", "<": "lt", ">": "gt"}


def _params(sql: str, run: int) -> tuple[Any, ...]:
    count = sql.count("%s")
    if "LIKE" in sql:
        return (f"note {run}%",)
    if "INSERT" in sql:
        return (1 + run % 200, run)
    return tuple(run * 13 % 200 + 1 for _ in range(count))


@dataclass(frozen=True)
class Workload:
    """The queries run, by name, with their pg_stat_statements queryid."""

    queryids: dict[str, int]
    runs_per_shape: int
    #: a queryid with entries for two roles (None when the second role could not log in)
    shared_queryid: int | None

    @property
    def negative_ids(self) -> list[int]:
        return sorted(queryid for queryid in self.queryids.values() if queryid < 0)

    @property
    def positive_ids(self) -> list[int]:
        return sorted(queryid for queryid in self.queryids.values() if queryid > 0)


def queryid_of(url: str, sql: str, params: tuple[Any, ...] = ()) -> int:
    """The queryid PostgreSQL computes for ``sql``, without running or recording it.

    EXPLAIN VERBOSE shows the identifier; with ``pg_stat_statements.track = top`` for this
    session the explained statement gets no (nested) pg_stat_statements entry of its own.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        with contextlib.suppress(psycopg.Error):
            conn.execute("SET pg_stat_statements.track = top")
        row = conn.execute(f"EXPLAIN (VERBOSE, FORMAT JSON) {sql}", params).fetchone()
        assert row is not None
        plan: list[dict[str, Any]] = row[0]
        return int(plan[0]["Query Identifier"])


def run_workload(url: str, *, min_shapes: int = 40, runs_per_shape: int = 5) -> Workload:
    """Create the schema (once), run at least ``min_shapes`` distinct queries, return their ids.

    Shapes are added until both a negative and a positive queryid are among them.
    """
    queryids: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in _SCHEMA_SQL.split(";"):
            if statement.strip():
                conn.execute(statement)
        row = conn.execute(f"SELECT count(*) FROM {_T}.customers").fetchone()
        if row is not None and row[0] == 0:
            for statement in _FILL_SQL.split(";"):
                if statement.strip():
                    conn.execute(statement)
        generated = _generated_shapes()
        shapes = list(_FIXED_SHAPES.items())
        while len(shapes) < min_shapes:
            shapes.append(next(generated))
        index = 0
        while index < len(shapes):
            name, sql = shapes[index]
            for run in range(runs_per_shape):
                conn.execute(sql, _params(sql, run))
            queryids[name] = queryid_of(url, sql, _params(sql, 0))
            index += 1
            signs = {queryid > 0 for queryid in queryids.values()}
            if index == len(shapes) and signs != {True, False}:
                shapes.append(next(generated))
    shared_sql = _FIXED_SHAPES["shared_by_two_roles"]
    return Workload(
        queryids=queryids,
        runs_per_shape=runs_per_shape,
        shared_queryid=_run_as_second_role(url, shared_sql, runs_per_shape),
    )


def _run_as_second_role(url: str, sql: str, runs: int) -> int | None:
    """Run ``sql`` as another role, so that its queryid has entries for two users."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                f"DO $$ BEGIN CREATE ROLE {SECOND_ROLE} LOGIN; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            )
            conn.execute(f"GRANT USAGE ON SCHEMA {_T} TO {SECOND_ROLE}")
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {_T} TO {SECOND_ROLE}")
            queryid = queryid_of(url, sql, _params(sql, 0))
        with psycopg.connect(url, user=SECOND_ROLE, autocommit=True) as conn:
            for run in range(runs):
                conn.execute(sql, _params(sql, run))
    except psycopg.Error:
        return None
    return queryid


def extractor_statement_calls(url: str) -> int:
    """How many times the feature extractors' statement has run (from pg_stat_statements)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE query LIKE '/* pgcache.features */%'"
        ).fetchone()
        return 0 if row is None else int(row[0])
