"""Running an ASGI app with uvicorn: the listening socket, connection limits, a background thread.

* :func:`listening_socket`: bind and listen before uvicorn starts, so a caller learns the port
  (0: a free one) and a port in use is an error before anything else starts;
* connection limits uvicorn lacks: :func:`http_protocol` is uvicorn's HTTP protocol (httptools
  when installed, else h11) that closes a connection which has not sent a complete request head
  within the keep-alive timeout (uvicorn keeps a connection that never sends a byte forever);
  :func:`raise_open_file_limit` lifts the soft limit to the hard one; :class:`RepeatedLogFilter`
  turns floods of identical log records (accept failing for want of file descriptors, the
  concurrency limit) into one line per burst, counted in :data:`CONNECTION_COUNTERS`;
* :func:`serve_in_background`: uvicorn in a daemon thread, for tests and the demo.

It does not decide what the app is or how it is configured.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import resource
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Final

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

CONNECTION_COUNTERS: Final[Counter[str]] = Counter()
"""Connections this process closed or refused, by reason: ``head_timeout`` (no complete request
head in time), ``open_files`` (accept failed for want of file descriptors), ``concurrency``
(answered 503 beyond ``limit_concurrency``)."""

_logger = logging.getLogger("pgcache.service")


@dataclass(frozen=True)
class BackgroundServer:
    """A uvicorn server serving in ``thread`` on ``loop``, reachable at ``url``."""

    server: uvicorn.Server
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    url: str


def check_port(port: object) -> int:
    """A TCP port number, 0 meaning "any free port"."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port={port!r}: expected an int between 0 and 65535")
    return port


def listening_socket(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), listening, inheritable by worker
    processes. ``OSError`` when it cannot be bound (in use, no such address, no permission)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket says TCP; with proto 0, Nagle delays every response body by ~40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, check_port(port)))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


# --- connection limits -----------------------------------------------------------------------


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # some systems cap it below an "unlimited" hard limit
            return soft
    return hard


class RepeatedLogFilter(logging.Filter):
    """Lets the first record of a burst through (without its traceback), drops the rest of the
    burst, counts every one in :data:`CONNECTION_COUNTERS`. A burst ends after ``quiet``
    seconds without such a record; the line says how many the previous burst dropped.

    ``kinds`` maps a counter name to the start of the messages it counts.
    """

    def __init__(self, kinds: dict[str, str], quiet: float = 10.0) -> None:
        super().__init__()
        self._kinds = kinds
        self._quiet = quiet
        self._last_seen: dict[str, float] = {}
        self._dropped: Counter[str] = Counter()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        kind = next((k for k, start in self._kinds.items() if message.startswith(start)), None)
        if kind is None:
            return True
        now = time.monotonic()
        with self._lock:
            CONNECTION_COUNTERS[kind] += 1
            last = self._last_seen.get(kind)
            self._last_seen[kind] = now
            if last is not None and now - last < self._quiet:
                self._dropped[kind] += 1
                return False
            dropped, self._dropped[kind] = self._dropped[kind], 0
        record.msg = (
            f"{message} (repeats within {self._quiet:g} s are not logged, only counted in "
            f"pgcache_connections_refused_total{{reason={kind!r}}}"
            + (f"; {dropped} since the last line)" if dropped else ")")
        )
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True


_REPEATED = RepeatedLogFilter(
    {
        "open_files": "socket.accept() out of system resource",
        "concurrency": "Exceeded concurrency limit.",
    }
)


def install_log_filters() -> None:
    """Put :class:`RepeatedLogFilter` on the loggers that flood (idempotent)."""
    for name in ("asyncio", "uvicorn.error"):
        target = logging.getLogger(name)
        if _REPEATED not in target.filters:
            target.addFilter(_REPEATED)


class _HeadTimeout(asyncio.Protocol):
    """Closes a connection that has not sent a complete request head within the keep-alive
    timeout, counting from when it opened or its last answer ended (mixed into uvicorn's
    protocols: uvicorn itself times out only a connection idle after an answer).

    One timer per connection, not one per request: an answer that ends moves the deadline, a
    head that arrives clears it, and the timer, when it fires, closes the connection only if a
    deadline has passed (else it waits for the one set since, or stops)."""

    timeout_keep_alive: int
    transport: asyncio.Transport
    _head_timer: asyncio.TimerHandle | None = None
    _head_deadline: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        install_log_filters()
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_deadline = loop.time() + self.timeout_keep_alive
        if self._head_timer is None:
            self._head_timer = loop.call_at(self._head_deadline, self._head_timed_out)

    def _head_arrived(self) -> None:
        self._head_deadline = None

    def _stop_head_timer(self) -> None:
        self._head_deadline = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None or self.transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        if loop.time() < deadline:  # an answer ended since the timer was set: wait for it
            self._head_timer = loop.call_at(deadline, self._head_timed_out)
            return
        CONNECTION_COUNTERS["head_timeout"] += 1
        self.transport.close()


class H11HeadTimeoutProtocol(_HeadTimeout, H11Protocol):
    """uvicorn's h11 protocol with the head timeout of :class:`_HeadTimeout`."""

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the head has arrived
            self._head_arrived()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()


HTTPTOOLS_PROTOCOL: Final = "pgcache.service.serving:HttpToolsHeadTimeoutProtocol"
H11_PROTOCOL: Final = "pgcache.service.serving:H11HeadTimeoutProtocol"

if importlib.util.find_spec("httptools") is not None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsHeadTimeoutProtocol(_HeadTimeout, HttpToolsProtocol):
        """uvicorn's httptools protocol with the head timeout of :class:`_HeadTimeout`."""

        def on_headers_complete(self) -> None:
            self._head_arrived()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()


def http_protocol(parser: str = "auto") -> str:
    """The import string of uvicorn's HTTP protocol ``parser`` ("auto": httptools when
    installed, else h11) with the request-head timeout, for ``uvicorn.Config(http=...)``."""
    if parser not in ("auto", "h11", "httptools"):
        raise ValueError(f"parser={parser!r}: expected auto, h11 or httptools")
    if parser == "auto":
        parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if parser == "httptools" and importlib.util.find_spec("httptools") is None:
        raise ValueError("parser='httptools': the httptools package is not installed")
    return HTTPTOOLS_PROTOCOL if parser == "httptools" else H11_PROTOCOL


def parser_name(http: object) -> str:
    """The HTTP parser behind a ``uvicorn.Config.http`` value (h11 or httptools)."""
    if http in ("auto",):
        return "httptools" if importlib.util.find_spec("httptools") else "h11"
    if http == HTTPTOOLS_PROTOCOL:
        return "httptools"
    if http == H11_PROTOCOL:
        return "h11"
    return str(http)


# --- running in a thread ---------------------------------------------------------------------


def serve_in_background(
    config: uvicorn.Config, *, name: str, what: str, timeout: float
) -> BackgroundServer:
    """Bind ``config.host:config.port``, serve ``config.app`` in a daemon thread, return once
    it accepts connections; ``RuntimeError`` naming ``what`` if it does not start in time."""
    sock = listening_socket(config.host, check_port(config.port))
    bound_port = sock.getsockname()[1]
    config.port = bound_port
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()

    def run() -> None:
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        finally:
            sock.close()
            loop.close()

    thread = threading.Thread(target=run, name=f"{name}-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout)
            raise RuntimeError(f"{what} did not start on {config.host}:{bound_port}")
        time.sleep(0.005)
    return BackgroundServer(server, thread, loop, socket_url(sock))
