"""A private PostgreSQL server for development, demos and tests."""

from __future__ import annotations

import contextlib
import glob
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
from pathlib import Path
from types import FrameType
from typing import Final

import psycopg

from pgcache.errors import PostgresUnavailableError

_REQUIRED_BINARIES: Final = ("initdb", "pg_ctl", "postgres")
_UNPRIVILEGED_USERS: Final = ("postgres", "nobody")
_START_TIMEOUT_SECONDS: Final = 30
_KILL_WAIT_SECONDS: Final = 10.0


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
