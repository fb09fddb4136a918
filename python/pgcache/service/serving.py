"""Running an ASGI app with uvicorn on a loopback port in a background thread.

Shared by the reference ML service and the pgcache service (their ``serve_in_thread``), for
tests and the demo. It binds the socket itself (port 0: a free one) so the caller learns the
port before the server starts; it does not decide what the app is or how it is configured.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn


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


def serve_in_background(
    config: uvicorn.Config, *, name: str, what: str, timeout: float
) -> BackgroundServer:
    """Bind ``config.host:config.port``, serve ``config.app`` in a daemon thread, return once
    it accepts connections; ``RuntimeError`` naming ``what`` if it does not start in time."""
    host = config.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket says TCP; with proto 0, Nagle delays every response body by ~40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, check_port(config.port)))
    except OSError:
        sock.close()
        raise
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
            raise RuntimeError(f"{what} did not start on {host}:{bound_port}")
        time.sleep(0.005)
    shown_host = f"[{host}]" if family == socket.AF_INET6 else host
    return BackgroundServer(server, thread, loop, f"http://{shown_host}:{bound_port}")
