"""A private Redis for development, demos, tests and benchmarks: ``redis-server`` on a free
loopback port in a temporary directory, with no persistence, removed when stopped.

:class:`RedisServer` is one server (optionally a cluster node); :class:`RedisClusterServers` is
a Redis Cluster of three masters built with ``redis-cli --cluster create``; :func:`redis_url`
gives the ``REDIS_URL`` to use (the one set, or a private server's). This module speaks to the
servers only with ``PING`` over a raw socket, so it needs no redis-py, and it never touches a
server it did not start.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

_START_TIMEOUT: Final = 10.0
_STOP_TIMEOUT: Final = 10.0
_CLUSTER_TIMEOUT: Final = 30.0
_HINT: Final = (
    "install the `redis-server` Debian package (apt-get install redis-server, which brings "
    "redis-cli too), or set REDIS_URL to a Redis server"
)


def find_redis_binary(name: str = "redis-server") -> Path:
    """The path of ``redis-server`` (or ``redis-cli``); ``RuntimeError`` saying what to install."""
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None
    )
    if found is None:
        raise RuntimeError(f"{name} was not found on PATH or in /usr/bin: {_HINT}")
    return Path(found)


def _free_port(cluster: bool) -> int:
    """A free loopback port; for a cluster node, its bus port (port + 10000) is free too."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not cluster:
            return port
        if port + 10_000 < 65_536:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10_000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port pair for a Redis Cluster node")


def ping(port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis server on ``127.0.0.1:port`` answers ``PING`` now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One private ``redis-server``: loopback only, no RDB or AOF, ``DEBUG`` allowed from
    loopback (tests make it slow with ``DEBUG SLEEP``). ``cluster=True`` makes it a cluster
    node (see :class:`RedisClusterServers`). :meth:`stop` removes its directory."""

    def __init__(self, *, cluster: bool = False, binary: Path | None = None) -> None:
        self.binary = binary if binary is not None else find_redis_binary()
        self.cluster = cluster
        self.port = _free_port(cluster)
        self.base_dir = Path(tempfile.mkdtemp(prefix="pgcache-redis-"))
        self.log_file = self.base_dir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:{port}/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def _command(self) -> list[str]:
        command = [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.base_dir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.log_file),
            "--daemonize", "no",
            "--enable-debug-command", "local",
        ]  # fmt: skip
        if self.cluster:
            command += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.base_dir / "nodes.conf"),
                "--cluster-node-timeout", "2000",
            ]  # fmt: skip
        return command

    def start(self) -> RedisServer:
        """Start the server (on the same port as before after a :meth:`kill`); wait for PING."""
        if self.running:
            return self
        self._process = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT
        while not ping(self.port, timeout=0.5):
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = (
                    self.log_file.read_text(errors="replace")[-2000:]
                    if self.log_file.exists()
                    else ""
                )
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL the server (no shutdown: clients see their connections reset)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(_STOP_TIMEOUT)

    def restart(self) -> None:
        """SIGKILL, then start again on the same port, empty (it persists nothing)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 10 s) and remove its directory (idempotent)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_TIMEOUT)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class RedisClusterServers:
    """A private Redis Cluster: three master nodes (no replicas) holding all 16384 slots.

    :attr:`url` is ``redis+cluster://127.0.0.1:{first port}`` (the tier discovers the rest).
    """

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [RedisServer(cluster=True) for _ in range(masters)]
        self._cli = find_redis_binary("redis-cli")

    @property
    def url(self) -> str:
        """The ``REDIS_URL`` of the cluster."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisClusterServers:
        """Start the nodes, create the cluster, wait until every node reports it ``ok``."""
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [str(self._cli), "--cluster", "create", *addresses,
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=_CLUSTER_TIMEOUT,
            )  # fmt: skip
            deadline = time.monotonic() + _CLUSTER_TIMEOUT
            while not all(self._cluster_ok(node.port) for node in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def _cluster_ok(self, port: int) -> bool:
        result = subprocess.run(
            [str(self._cli), "-p", str(port), "cluster", "info"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
        return "cluster_state:ok" in result.stdout

    def stop(self) -> None:
        """Stop every node and remove their directories (idempotent)."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def redis_url(url: str | None) -> Iterator[tuple[str, RedisServer | None]]:
    """``(REDIS_URL, server)``: ``url`` when it is set (``Settings.redis_url``), with no server;
    else a private :class:`RedisServer`, stopped and removed at exit (as the demo does for
    PostgreSQL)."""
    if url:
        yield url, None
        return
    with RedisServer() as server:
        yield server.url, server
