"""Exit codes and the one-line error a command prints instead of a traceback."""

from __future__ import annotations

import sys
from typing import Final

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


class CommandError(Exception):
    """A runtime failure the command reports in one line (exit code 1)."""


def describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, CommandError):
        return text
    return f"{type(exc).__name__}: {text}"


def error(command: str, message: str) -> None:
    sys.stderr.write(f"pgcache {command}: {message}\n")
    sys.stderr.flush()
