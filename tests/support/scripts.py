"""Scripts run in a fresh interpreter: forks, signals, interpreter exit and hangs need a
process of their own. A hang fails the test that ran the script, never the whole suite."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: Defines ``Key``: every instance hashes to 7, so lookups compare keys under the store lock.
#: Once the script sets ``slow = True``, a comparison sets ``inside`` and then holds the lock
#: (with the interpreter released) until the script sets ``leave``.
SLOW_KEY = """
import threading
inside, leave = threading.Event(), threading.Event()
slow = False

class Key:
    def __hash__(self):
        return 7
    def __eq__(self, other):
        if slow:
            inside.set()
            leave.wait()      # holds the store lock, interpreter released
        return self is other
"""

#: Defines ``start_load(cache, key, value)``: a thread calls ``cache.get_or_set(key, ...)`` with a
#: factory that returns ``value`` once the script sets ``finish``; it returns that thread once
#: the load has begun.
SLOW_LOAD = """
import threading
finish = threading.Event()

def start_load(cache, key, value):
    loading = threading.Event()

    def slow_factory():
        loading.set()
        finish.wait()
        return value

    loader = threading.Thread(target=lambda: cache.get_or_set(key, slow_factory))
    loader.start()
    loading.wait()
    return loader
"""


def run_python(
    script: str, *argv: str, prelude: str = "", timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Runs ``prelude`` then ``script`` (dedented) with ``argv``; fails the test after
    ``timeout`` seconds, with what the script printed until then."""
    source = textwrap.dedent(prelude) + textwrap.dedent(script)
    try:
        return subprocess.run(
            [sys.executable, "-c", source, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"hung (killed after {timeout} s): {hung.stdout!r} {hung.stderr!r}")
