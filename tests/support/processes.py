"""``python -m pgcache ...`` in a process of its own (:class:`PgcacheCommand`, its log collected;
:func:`serve_pgcache`), and processes as Linux's /proc shows them (:func:`children`), for tests
that start, stop or count a server's processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

LISTENING = re.compile(r"on http://(?P<host>[^:]+):(?P<port>\d+): (?P<workers>\d+) worker")


def pgcache_environment(**variables: str) -> dict[str, str]:
    """This process's environment without DATABASE_URL, unbuffered, with ``variables``."""
    env = {k: v for k, v in os.environ.items() if k.upper() != "DATABASE_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(variables)
    return env


class PgcacheCommand:
    """``python -m pgcache ARGS`` in the background, its stderr collected line by line."""

    def __init__(
        self,
        *args: str,
        cwd: Path,
        env: dict[str, str],
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pgcache", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec_fn,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first log line matching ``pattern`` (fails if none comes, or the process ends)."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if match := compiled.search(line):
                    return match
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._reader.join(5)
                pytest.fail(f"no log line matches {pattern!r}:\n" + "\n".join(self.lines))
            time.sleep(0.02)

    def listening(self) -> tuple[str, int]:
        """The host and port ``pgcache serve`` said it listens on."""
        match = self.wait_for(LISTENING.pattern)
        return match["host"], int(match["port"])

    def stop(self, stop_signal: signal.Signals = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``stop_signal``; the exit code once it (and the log reader) ended."""
        if self.process.poll() is None:
            self.process.send_signal(stop_signal)
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()


@contextmanager
def serve_pgcache(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[PgcacheCommand]:
    """``pgcache serve --port 0 ARGS``, killed at the end of the block."""
    env = env or pgcache_environment()
    command = PgcacheCommand("serve", "--port", "0", *args, cwd=cwd, env=env, preexec_fn=preexec_fn)
    try:
        yield command
    finally:
        command.kill()


def children(pid: int) -> list[int]:
    """The ids of the processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found
