"""pgcache serve, ml-service and config: the services on uvicorn, the effective configuration.

The command binds the listening socket itself, before uvicorn starts, so that a port in use is
one line and exit code 2; then uvicorn serves on it, in this process or in ``--workers N``
processes (its ``Multiprocess`` supervisor, the app built in each worker by
``pgcache.service.app:create_app``). At start-up the open-file limit is raised to its hard limit.
SIGINT and SIGTERM stop every worker gracefully: requests in flight get ``SHUTDOWN_TIMEOUT``
seconds, then they are cancelled and the lifespan closes the pool and the clients; a process
still running a few seconds after that is ended. The exit code says which signal stopped it:
130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from pgcache.cli.exits import EXIT_OK, CommandError, UsageError, exit_code_of_signal

if TYPE_CHECKING:
    import socket

    import uvicorn

    from pgcache.config import Settings

SERVICE_FACTORY: Final = "pgcache.service.app:create_app"
LIFESPAN_GRACE: Final = 5.0
"""Seconds a stopping process gets beyond ``SHUTDOWN_TIMEOUT`` (its lifespan closing the pool and
the clients) before it is ended without waiting any longer."""

_logger = logging.getLogger("pgcache.cli")

# --- listening and running -----------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    from pgcache.service.serving import listening_socket

    try:
        return listening_socket(host, port)
    except OSError as exc:
        shown = f"[{host}]" if ":" in host else host
        raise UsageError(f"cannot listen on {shown}:{port}: {exc.strerror or exc}") from None


def _runtime(config: uvicorn.Config) -> str:
    """The event loop and HTTP parser uvicorn runs with (uvloop and httptools if found)."""
    import importlib.util

    from pgcache.service.serving import parser_name

    loop = config.loop
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"event loop {loop}, HTTP parser {parser_name(config.http)}"


class _StopSignalError(Exception):
    """Raised in the main thread by SIGINT or SIGTERM once uvicorn has let go of them."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _stopping_signals() -> Iterator[None]:
    """In the block, SIGINT and SIGTERM (outside uvicorn's handling) raise _StopSignalError."""

    def stopped(signum: int, frame: FrameType | None) -> None:
        raise _StopSignalError(signum)

    previous = {sig: signal.signal(sig, stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _end_now(signum: int, after: float) -> None:
    """The shutdown deadline passed: say so in one line and end the process at once."""
    _logger.error(
        "still running %.0f s after %s: exiting without waiting any longer",
        after,
        signal.Signals(signum).name,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(exit_code_of_signal(signum))


def _shutdown_deadline(shutdown_timeout: float) -> type[uvicorn.Server]:
    """uvicorn's Server whose first stopping signal also starts the shutdown deadline."""
    import uvicorn

    class DeadlineServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            first = not self.should_exit
            super().handle_exit(sig, frame)
            if first:
                after = shutdown_timeout + LIFESPAN_GRACE
                timer = threading.Timer(after, _end_now, args=(sig, after))
                timer.daemon = True
                timer.start()

    return DeadlineServer


def _supervisor(config: uvicorn.Config, sock: socket.socket, shutdown_timeout: float) -> Any:
    """uvicorn's Multiprocess supervisor, remembering the stopping signal and ending workers
    still running past the shutdown deadline."""
    import time

    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        stopped_by: int | None = None

        def handle_int(self) -> None:
            self.stopped_by = self.stopped_by or signal.SIGINT
            super().handle_int()

        def handle_term(self) -> None:
            self.stopped_by = self.stopped_by or signal.SIGTERM
            super().handle_term()

        def join_all(self) -> None:
            deadline = time.monotonic() + shutdown_timeout + LIFESPAN_GRACE
            for process in self.processes:
                process.process.join(max(0.0, deadline - time.monotonic()))
                if process.process.is_alive():
                    _logger.error(
                        "worker %s still running past the shutdown deadline: killed",
                        process.pid,
                    )
                    process.kill()
                    process.process.join()

    return Supervisor(config, sockets=[sock])


def run_uvicorn(config: uvicorn.Config, what: str, *, shutdown_timeout: float) -> int:
    """Serve ``config`` (a ``uvicorn.Config``; ``config.workers`` processes) until SIGINT or
    SIGTERM, then stop within ``shutdown_timeout`` seconds (plus :data:`LIFESPAN_GRACE`).
    The exit code: 130 after SIGINT, 143 after SIGTERM, 0 when it stopped on its own;
    :class:`CommandError` if it did not start."""
    from uvicorn.config import STARTUP_FAILURE

    from pgcache.service.serving import install_log_filters, raise_open_file_limit, socket_url

    open_files = raise_open_file_limit()
    install_log_filters()
    sock = _listen(config.host, config.port)
    try:
        workers = config.workers
        _logger.info(
            "%s on %s: %d %s, %s (Ctrl-C or SIGTERM stops it; up to %d open files)",
            what,
            socket_url(sock),
            workers,
            "worker" if workers == 1 else "workers",
            _runtime(config),
            open_files,
        )
        if workers > 1:
            supervisor = _supervisor(config, sock, shutdown_timeout)
            supervisor.run()  # handles SIGINT and SIGTERM
            if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
                raise CommandError(f"{what} did not start (its log above says why)")
            return (
                EXIT_OK
                if supervisor.stopped_by is None
                else exit_code_of_signal(supervisor.stopped_by)
            )
        server = _shutdown_deadline(shutdown_timeout)(config)
        try:
            with _stopping_signals():
                # uvicorn stops gracefully on the signal, then raises it again: _StopSignalError
                server.run(sockets=[sock])
        except _StopSignalError as stopped:
            return exit_code_of_signal(stopped.signum)
        except SystemExit:  # uvicorn's exit when the application or its lifespan fails
            raise CommandError(f"{what} did not start (its log above says why)") from None
        return EXIT_OK
    finally:
        sock.close()


# --- serve, ml-service, config -------------------------------------------------------------


KEEP_ALIVE_SECONDS: Final = 5
"""Seconds an idle keep-alive connection is kept (and a client gets to send a request head):
uvicorn's default, written down. A proxy in front should close its idle upstream connections
sooner than this (nginx ``keepalive_timeout`` below 5 s), or it may reuse one as it closes."""


def uvicorn_config(
    app: str | Callable[[], Any],
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int = 1,
    log_level: str = "info",
    log_format: str = "text",
) -> uvicorn.Config:
    """What ``pgcache serve`` runs ``app`` (an ASGI app factory, or its import string) with:
    uvloop and httptools when installed (the ``service`` extra brings both), the request-head
    timeout of :func:`pgcache.service.serving.http_protocol`, ``MAX_CLIENT_CONNS``, the
    shutdown deadline. benches/test_service_stack.py runs its one-route app with it too."""
    import math

    import uvicorn

    from pgcache.service.logs import logging_config
    from pgcache.service.serving import http_protocol

    return uvicorn.Config(
        app,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="auto",
        http=http_protocol(),
        log_config=logging_config(log_level, log_format),
        log_level=log_level,
        limit_concurrency=settings.max_client_conns,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_timeout.total_seconds())),
    )


def serve(args: argparse.Namespace) -> int:
    from pgcache.config import Settings

    settings = Settings.load()  # a bad variable stops here (exit 2), not in every worker
    config = uvicorn_config(
        SERVICE_FACTORY,
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_format=args.log_format,
    )
    shutdown_timeout = settings.shutdown_timeout.total_seconds()
    return run_uvicorn(config, "pgcache service", shutdown_timeout=shutdown_timeout)


def ml_service(args: argparse.Namespace) -> int:
    from pgcache.ml.reference import server_config
    from pgcache.service.logs import logging_config

    config = server_config(
        args.host,
        args.port,
        log_level=args.log_level,
        log_config=logging_config(args.log_level, args.log_format),
    )
    return run_uvicorn(config, "reference ML service", shutdown_timeout=config_timeout(config))


def config_timeout(config: uvicorn.Config) -> float:
    """The graceful-shutdown timeout a uvicorn configuration carries (10 s if it has none)."""
    return float(config.timeout_graceful_shutdown or 10)


def config(args: argparse.Namespace) -> int:
    from pgcache.config import Settings

    if args.env_file is None:
        settings = Settings.load()
    else:
        try:
            settings = Settings.from_env_file(args.env_file)
        except FileNotFoundError as exc:
            raise UsageError(f"--env-file: {exc}") from None
    sys.stdout.write(f"{settings}\n")
    return EXIT_OK
