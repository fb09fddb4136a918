"""Caches across ``os.fork()``: pre-forking servers and ``multiprocessing`` with fork.

A forked child gets its own copy of every cache's entries, with background expiry working;
forking never leaves the child a lock held by a thread that does not exist there (the fork
waits for the expiry thread and takes every store lock); the child forgets the
``get_or_set`` loads of threads that did not survive the fork; and it exits cleanly.

Every test runs a script in a subprocess with a timeout, and each child of the script is
waited for with a deadline: a hung child is killed and reported.
"""

from __future__ import annotations

import functools

import pytest
from tests.support.scripts import SLOW_KEY, SLOW_LOAD, run_python

#: Helpers for the scripts: fork a child running a function, wait for it with a deadline.
PRELUDE = """
import os, sys, threading, time
from pgcache import Cache

def forked(child):
    pid = os.fork()
    if pid == 0:
        try:
            code = child()
        except BaseException as e:
            print("child raised", type(e).__name__, e, flush=True)
            code = 3
        os._exit(code or 0)
    return pid

def exit_code(pid, deadline=20.0):
    end = time.monotonic() + deadline
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > end:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "hung"
        time.sleep(0.005)

def eventually(predicate, deadline=20.0):
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True
"""

#: The forking scripts wait for their children with deadlines of their own.
run_script = functools.partial(run_python, prelude=PRELUDE, timeout=120.0)


@pytest.mark.slow
def test_children_forked_during_a_sweep_of_a_large_cache_never_hang() -> None:
    # The finding: a fork landing while the expiry thread held a store lock left the
    # child a lock that no thread would ever release (1 run in 3 with 2M entries).
    result = run_script(
        """
        entries = 400_000
        cache = Cache(max_size=1_000_000, cleanup_interval=0.001)

        def child():
            cache.set("child", 1)
            return 0 if cache.get("child") == 1 else 1

        codes = []
        for round_ in range(3):
            cache.set_many(((i, i) for i in range(entries)), ttl=0.5)
            while len(cache) >= entries:    # until the sweep has begun: it holds the lock
                pass
            pids = []
            while len(cache) > 0 and len(pids) < 20:
                pids.append(forked(child))  # while the sweep runs
            codes += [exit_code(pid) for pid in pids]
        print("forked", len(codes) > 0, "failed", [c for c in codes if c != 0], flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["forked True failed []"]


def test_a_forked_child_gets_background_expiry_and_so_does_the_parent() -> None:
    result = run_script(
        """
        cache = Cache(ttl=0.05, cleanup_interval=0.01)
        cache.set_many((i, i) for i in range(100))

        def child():
            if len(cache) != 100:
                return 1                       # its own copy of the entries
            cache.set("added in the child", 1)
            return 0 if eventually(lambda: len(cache) == 0) else 2

        pid = forked(child)
        print("child", exit_code(pid), flush=True)
        cache.set("added in the parent", 1)
        print("parent expired", eventually(lambda: len(cache) == 0), flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child 0", "parent expired True"]


def test_a_child_that_exits_with_sys_exit_prints_nothing() -> None:
    result = run_script(
        """
        cache = Cache(ttl=60, cleanup_interval=0.01)
        cache["k"] = "v"
        pid = os.fork()
        if pid == 0:
            assert cache.get("k") == "v"
            sys.exit(0)                         # atexit hooks run in the child
        print("child", exit_code(pid), flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child 0"]
    assert result.stderr == ""


def test_a_multiprocessing_fork_pool_works_with_its_copies() -> None:
    result = run_script(
        """
        import multiprocessing

        SHARED = Cache(max_size=None)
        SHARED.set_many((i, i * i) for i in range(1000))
        SHORT = Cache(ttl=0.02, cleanup_interval=0.005)
        busy = Cache(ttl=0.001, cleanup_interval=0.001)   # keeps the expiry thread sweeping

        def churn():
            for i in range(200_000):
                busy.set(i, i)
        churner = threading.Thread(target=churn)
        churner.start()

        def work(i):
            SHARED.set(("worker", os.getpid()), i)
            SHORT.set(("short", i), i)
            expired = eventually(lambda: len(SHORT) == 0)
            return SHARED.get(i), expired

        with multiprocessing.get_context("fork").Pool(3) as pool:
            results = pool.map(work, range(30))
        churner.join()
        print(results == [(i * i, True) for i in range(30)], flush=True)
        print("parent untouched", len(SHARED), flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["True", "parent untouched 1000"]


def test_the_child_forgets_loads_of_threads_lost_in_the_fork() -> None:
    result = run_script(
        """
        cache = Cache()
        loader = start_load(cache, "k", "parent's load")

        def child():
            # The loader thread does not exist here: waiting for it would never end.
            value = cache.get_or_set("k", lambda: "child's load")
            return 0 if value == "child's load" else 1

        pid = forked(child)
        print("child", exit_code(pid), flush=True)
        finish.set()
        loader.join()
        print("parent", cache.get("k"), flush=True)
        """,
        prelude=PRELUDE + SLOW_LOAD,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child 0", "parent parent's load"]


def test_a_cache_locked_by_another_thread_at_the_fork_raises_in_the_child() -> None:
    result = run_script(
        """
        cache, other = Cache(), Cache()

        cache[Key()] = "stored"
        other["k"] = "other"
        slow = True
        holder = threading.Thread(target=lambda: cache.get(Key()))
        holder.start()
        inside.wait()

        def child():
            try:
                cache.get("x")
            except RuntimeError as e:
                print("child RuntimeError", "forked" in str(e), flush=True)
            print("child other", other.get("k"), flush=True)
            return 0

        pid = forked(child)
        print("child", exit_code(pid), flush=True)
        leave.set()
        holder.join()
        slow = False
        print("parent", cache.get("x", "absent"), flush=True)
        """,
        prelude=PRELUDE + SLOW_KEY,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "child RuntimeError True",
        "child other other",
        "child 0",
        "parent absent",
    ]


def test_a_fork_from_inside_a_key_eq_keeps_that_cache_usable_in_the_child() -> None:
    result = run_script(
        """
        cache = Cache()
        pids = []

        class Key:
            def __hash__(self):
                return 7
            def __eq__(self, other):
                if not pids:
                    pids.append(forked(child))
                return self is other

        def child():
            # Still inside __eq__ here: the lookup finishes once it returns.
            return 0

        stored = Key()
        cache[stored] = "stored"
        cache.get(Key())                     # compares, and forks from __eq__
        print("parent child", exit_code(pids[0]), flush=True)

        def child_after():
            cache.set("k", 1)
            return 0 if cache.get("k") == 1 and cache.get(stored) == "stored" else 1

        print("second child", exit_code(forked(child_after)), flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["parent child 0", "second child 0"]


def test_children_forked_while_other_threads_use_the_cache_never_hang() -> None:
    # Threads that wait for a store lock while the fork holds it do not exist in the child:
    # releasing the lock there must not hand it to one of them.
    result = run_script(
        """
        cache = Cache(ttl=60, cleanup_interval=0.001)
        stop = threading.Event()

        def hammer(offset):
            i = 0
            while not stop.is_set():
                cache.set(offset + i % 1000, i)
                cache.get(offset + (i * 7) % 1000)
                i += 1

        workers = [threading.Thread(target=hammer, args=(n * 1000,)) for n in range(4)]
        for w in workers:
            w.start()

        def child():
            cache.set("child", 1)
            return 0 if cache.get("child") == 1 and len(cache) > 0 else 1

        codes = []
        for _ in range(40):
            codes.append(exit_code(forked(child)))
        stop.set()
        for w in workers:
            w.join()
        print("failed", [c for c in codes if c != 0], flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["failed []"]


def test_children_never_inherit_the_lock_given_to_a_thread_that_waited_in_the_parent() -> None:
    # Several threads wait for a lock that a slow key __eq__ holds when the fork starts; the
    # fork takes the lock after it, with some of them still queued. They do not exist in the
    # child, and the child's release of the lock must not hand it to one of them.
    result = run_script(
        """
        cache = Cache()

        cache[Key()] = "stored"

        def child():
            cache.set("child", 1)
            return 0 if cache.get("child") == 1 else 1

        codes = []
        for round_ in range(5):
            slow = True
            inside.clear(); leave.clear()
            holder = threading.Thread(target=lambda: cache.get(Key()))
            holder.start()
            inside.wait()
            waiters = [threading.Thread(target=cache.set, args=(n, n)) for n in range(4)]
            for w in waiters:
                w.start()
            time.sleep(0.05)                       # the waiters are queued for the lock
            threading.Timer(0.2, leave.set).start()  # the holder leaves during the fork's wait
            slow = False
            codes.append(exit_code(forked(child)))
            holder.join()
            for w in waiters:
                w.join()
        print("failed", [c for c in codes if c != 0], len(cache), flush=True)
        """,
        prelude=PRELUDE + SLOW_KEY,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["failed [] 5"]
