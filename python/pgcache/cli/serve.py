"""pgcache serve, ml-service and config: the services on uvicorn, the effective configuration.

The command binds the listening socket itself, before uvicorn starts, so that a port in use is
one line and exit code 2; then uvicorn serves on it, in this process or in ``--workers N``
processes (its ``Multiprocess`` supervisor, the app built in each worker by
``pgcache.service.app:create_app``). SIGINT and SIGTERM stop every worker gracefully: open
requests get ``SHUTDOWN_TIMEOUT`` seconds, then the lifespan closes the pool and the clients.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import socket
import sys
from typing import TYPE_CHECKING, Final

from pgcache.cli.exits import EXIT_OK, CommandError, UsageError

if TYPE_CHECKING:
    import uvicorn

SHUTDOWN_TIMEOUT: Final = 10.0
"""Seconds a stopping worker waits for requests in flight before cancelling them."""

SERVICE_FACTORY: Final = "pgcache.service.app:create_app"

_logger = logging.getLogger("pgcache.cli")

# --- listening and running -----------------------------------------------------------------


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening; :class:`UsageError` naming
    ``host:port`` when it cannot be bound (in use, no such address, no permission)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket says TCP; with proto 0, Nagle delays every response body by ~40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        raise UsageError(f"cannot listen on {shown}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def _runtime(config: uvicorn.Config) -> str:
    """The event loop and HTTP parser uvicorn's "auto" picks (uvloop and httptools if found)."""
    loop = config.loop
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = config.http
    if http == "auto":
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"event loop {loop}, HTTP parser {http}"


def run_uvicorn(config: uvicorn.Config, what: str) -> int:
    """Serve ``config`` (a ``uvicorn.Config``; ``config.workers`` processes) until SIGINT or
    SIGTERM; exit code 0 after a graceful stop, :class:`CommandError` if it did not start."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from pgcache.postgres.devserver import sigterm_as_interrupt

    sock = listening_socket(config.host, config.port)
    try:
        workers = config.workers
        _logger.info(
            "%s on %s: %d %s, %s (Ctrl-C or SIGTERM stops it)",
            what,
            _url(sock),
            workers,
            "worker" if workers == 1 else "workers",
            _runtime(config),
        )
        if workers > 1:
            supervisor = Multiprocess(config, sockets=[sock])  # handles SIGINT and SIGTERM
            supervisor.run()
            if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
                raise CommandError(f"{what} did not start (its log above says why)")
            return EXIT_OK
        try:
            with sigterm_as_interrupt():
                # uvicorn stops gracefully on the signal, then raises it again: KeyboardInterrupt
                uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:
            return EXIT_OK
        except SystemExit:  # uvicorn's exit when the application or its lifespan fails
            raise CommandError(f"{what} did not start (its log above says why)") from None
        return EXIT_OK
    finally:
        sock.close()


# --- serve, ml-service, config -------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pgcache.config import Settings
    from pgcache.service.logs import logging_config

    Settings.load()  # a bad variable stops here (exit 2), not in every worker
    config = uvicorn.Config(
        SERVICE_FACTORY,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="auto",
        http="auto",
        log_config=logging_config(args.log_level, args.log_format),
        log_level=args.log_level,
        timeout_graceful_shutdown=int(SHUTDOWN_TIMEOUT),
    )
    return run_uvicorn(config, "pgcache service")


def ml_service(args: argparse.Namespace) -> int:
    import uvicorn

    from pgcache.ml.reference import create_app
    from pgcache.service.logs import logging_config

    # As pgcache.ml.reference.main runs it, with the command's logging.
    config = uvicorn.Config(
        create_app(),
        host=args.host,
        port=args.port,
        log_config=logging_config(args.log_level, args.log_format),
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        loop="asyncio",
        http="h11",
        timeout_graceful_shutdown=1,
    )
    return run_uvicorn(config, "reference ML service")


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
