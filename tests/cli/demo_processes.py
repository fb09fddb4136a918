"""What the demo tests share: a demo's environment and TMPDIR, and whether what it started is
still running (processes by id or by a path on their command line)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: variables of the test run that would change what the demo starts or how it authenticates
_DEMO_VARIABLES = {"DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN", "REDIS_KEY_PREFIX"}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (e.g. a data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def demo_environment(tmpdir: Path | None = None, **variables: str) -> dict[str, str]:
    """The test run's environment without a database, Redis or token of its own, plus
    ``variables``; ``TMPDIR`` set to ``tmpdir`` when given."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in _DEMO_VARIABLES}
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "120"
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    env.update(variables)
    return env


@contextmanager
def empty_tmpdir() -> Iterator[Path]:
    """An empty TMPDIR for a demo; readable by the unprivileged server user when root."""
    path = Path(tempfile.mkdtemp(prefix="pgcache-demo-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; its last value.

    Processes are reaped asynchronously on a loaded machine: what a demo stopped may take a
    moment to disappear from /proc."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        time.sleep(0.05)
    return True


@contextmanager
def serving_demo(
    args: tuple[str, ...], tmpdir: Path, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``pgcache *args --serve`` in ``tmpdir``: the process and its output up to its last curl
    line; stopped by SIGTERM (SIGKILL after 120 s) if still running when the block ends."""
    with subprocess.Popen(
        [sys.executable, "-m", "pgcache", *args, "--serve"],
        cwd=tmpdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            lines = []
            for line in process.stdout:
                lines.append(line)
                if "/api/health" in line:
                    break
            yield process, "".join(lines)
        finally:  # a signal, not SIGKILL: the demo removes its servers on the way out
            if process.poll() is None:
                process.terminate()
                try:
                    process.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    process.kill()
