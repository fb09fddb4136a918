"""mypy --strict and stubtest, run by the typing tests on code written for them.

A cold mypy run takes tens of seconds here and several times that on a loaded machine:
the typing tests carry :data:`SLOW` rather than the suite's default timeout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: The typing tests' own timeout (seconds): mypy starts without a cache every time.
TIMEOUT = 600
SLOW = pytest.mark.timeout(TIMEOUT)


def mypy_strict(tmp_path: Path, *files: Path) -> tuple[str, str, int]:
    """(stdout, stderr, exit status) of ``mypy --strict`` on ``files``, cache in ``tmp_path``."""
    mypy_api = pytest.importorskip("mypy.api")
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")
    result: tuple[str, str, int] = mypy_api.run(
        [
            "--strict",
            "--python-version",
            "3.11",
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--no-error-summary",
            "--show-error-codes",
            *map(str, files),
        ]
    )
    return result


def stubtest(module: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m mypy.stubtest module``, run from ``cwd`` (away from the source tree)."""
    pytest.importorskip("mypy.stubtest")
    return subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", module],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=TIMEOUT - 10,
        check=False,
    )
