"""Ctrl-C reaches a thread that waits inside the cache.

A thread waiting for another thread's ``get_or_set`` load, or for the store lock (held by a
thread running a slow key ``__eq__``), waits with the interpreter released in slices and
runs signal handlers between them: ``KeyboardInterrupt`` arrives while it waits, not when
the wait ends. The interrupted waiter leaves cleanly; the load goes on for the others.

Each test runs a script in a subprocess (signals are delivered to that process's main
thread). The thing waited for is only released after the interrupt arrived, so a wait that
ignores signals hangs the script, and the timeout fails the test.
"""

from __future__ import annotations

import functools

import pytest
from tests.support.scripts import SLOW_KEY, SLOW_LOAD, run_python

#: Arms a SIGINT handler that raises only while the main thread is in the call under test,
#: and a thread that sends SIGINT (or calls _thread.interrupt_main) until it was seen.
PRELUDE = """
import _thread, os, signal, sys, threading, time
from pgcache import Cache

HOW = sys.argv[1]
armed = threading.Event()
seen = threading.Event()

def on_sigint(signum, frame):
    if armed.is_set():
        seen.set()
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, on_sigint)

def keep_interrupting():
    armed.wait()
    while not seen.is_set():
        if HOW == "kill":
            os.kill(os.getpid(), signal.SIGINT)
        else:
            _thread.interrupt_main()
        time.sleep(0.05)

threading.Thread(target=keep_interrupting, daemon=True).start()
"""


run_script = functools.partial(run_python, prelude=PRELUDE)

HOW = pytest.mark.parametrize("how", ["kill", "interrupt_main"])


@HOW
def test_ctrl_c_reaches_a_get_or_set_waiting_for_another_threads_load(how: str) -> None:
    result = run_script(
        """
        cache = Cache()
        loading, finish = threading.Event(), threading.Event()
        results = {}

        def slow_factory():
            loading.set()
            finish.wait()
            return "loaded"

        def load(name):
            results[name] = cache.get_or_set("k", slow_factory)

        loader = threading.Thread(target=load, args=("loader",))
        loader.start()
        loading.wait()
        other = threading.Thread(target=load, args=("other waiter",))
        other.start()
        try:
            armed.set()
            cache.get_or_set("k", lambda: "never called")
        except KeyboardInterrupt:
            print("interrupted while waiting", flush=True)
        armed.clear()
        finish.set()
        loader.join()
        other.join()
        print(sorted(results.items()), cache.get("k"), flush=True)
        """,
        how,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "interrupted while waiting",
        "[('loader', 'loaded'), ('other waiter', 'loaded')] loaded",
    ]


@HOW
def test_ctrl_c_reaches_a_thread_waiting_for_the_store_lock(how: str) -> None:
    result = run_script(
        """
        cache = Cache()

        cache[Key()] = "stored"
        slow = True
        holder = threading.Thread(target=lambda: cache.get(Key()))
        holder.start()
        inside.wait()
        try:
            armed.set()
            cache.set("other", 1)     # waits for the lock
        except KeyboardInterrupt:
            print("interrupted while waiting", flush=True)
        armed.clear()
        leave.set()
        holder.join()
        slow = False
        cache.set("other", 2)
        print("usable", cache.get("other"), len(cache), flush=True)
        """,
        how,
        prelude=PRELUDE + SLOW_KEY,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["interrupted while waiting", "usable 2 2"]


def test_an_interrupted_waiter_changes_nothing_and_the_next_call_succeeds() -> None:
    result = run_script(
        """
        cache = Cache()
        loader = start_load(cache, "k", "loaded")
        try:
            armed.set()
            cache.get_or_set("k", lambda: "never called")
        except KeyboardInterrupt:
            pass
        armed.clear()
        finish.set()
        loader.join()
        m = cache.metrics()
        print(cache.get_or_set("k", lambda: "again"), m.hits, m.misses, len(cache), flush=True)
        """,
        "kill",
        prelude=PRELUDE + SLOW_LOAD,
    )
    assert result.returncode == 0, result.stderr
    # One miss for the loader and one for the interrupted waiter (it looked before waiting).
    assert result.stdout.splitlines() == ["loaded 0 2 1"]


def test_a_load_interrupted_while_storing_its_result_does_not_block_its_key() -> None:
    # The loader itself is interrupted while it waits for the lock to store the result: its
    # load ends without being unregistered, and the next call for the key must replace it.
    result = run_script(
        """
        cache = Cache()

        def factory():
            global slow
            slow = True
            threading.Thread(target=lambda: cache.get(Key())).start()
            inside.wait()             # the store step will wait for this thread's lock
            armed.set()
            return "value"

        def on_sigint(signum, frame):
            if armed.is_set() and frame is not None and frame.f_code is not factory.__code__:
                seen.set()
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)
        cache[Key()] = "stored"
        try:
            cache.get_or_set("k", factory)
        except KeyboardInterrupt:
            print("interrupted while storing", flush=True)
        armed.clear()
        slow = False
        leave.set()
        print(cache.get_or_set("k", lambda: "loaded again"), flush=True)
        """,
        "kill",
        prelude=PRELUDE + SLOW_KEY,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["interrupted while storing", "loaded again"]
