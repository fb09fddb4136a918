"""Exit codes and the one-line error a command prints instead of a traceback.

Every exit code of the ``pgcache`` command:

=====  ==========================================================================================
code   meaning
=====  ==========================================================================================
0      success; also ``demo --serve`` stopped by Ctrl-C (SIGINT) or SIGTERM, and ``--help`` /
       ``--version``
1      a runtime failure: one line on stderr (``pgcache COMMAND: ...``), no traceback; also a
       service that did not start (its log says why)
2      a usage or configuration error: a bad option or option value (argparse's message), a bad
       environment variable (named with its value), a missing ``--env-file``, a port in use
130    interrupted: Ctrl-C (or SIGTERM in ``demo``) before the command finished; one line
       ``pgcache COMMAND: interrupted``; also ``serve`` and ``ml-service`` stopped by SIGINT
       (Ctrl-C), after their shutdown (graceful, or cut at ``SHUTDOWN_TIMEOUT``)
143    ``serve`` and ``ml-service`` stopped by SIGTERM, after their shutdown (as for 130)
=====  ==========================================================================================
"""

from __future__ import annotations

import sys
from typing import Final

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


def exit_code_of_signal(signum: int) -> int:
    """The shell's exit code of a process ended by signal ``signum``: 128 + its number (130 for
    SIGINT, 143 for SIGTERM)."""
    return 128 + signum


class CommandError(Exception):
    """A runtime failure the command reports in one line (exit code 1)."""


class UsageError(CommandError):
    """A bad argument found once parsing is over (a missing file, a port in use): exit code 2."""


def describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, CommandError):
        return text
    return f"{type(exc).__name__}: {text}"


def error(command: str, message: str) -> None:
    sys.stderr.write(f"pgcache {command}: {message}\n")
    sys.stderr.flush()
