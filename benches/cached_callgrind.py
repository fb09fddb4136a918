"""Instructions per hit of a decorated one-argument function, pgcache beside its peers (callgrind).

    .venv/bin/python benches/cached_callgrind.py   # needs valgrind (apt-get install valgrind)

Each case runs in its own process under ``valgrind --tool=callgrind`` twice, with N and 2N calls;
the difference divided by N is the cost of one loop iteration (start-up and warm-up cancel out),
from which the same figure for an empty loop is subtracted. Every call is a hit: 1,000 str keys
are loaded first into a 10,000-entry cache. Async hits are awaited inside one coroutine driven by
``send(None)`` (a hit never suspends, so no event loop is involved; the keys are loaded first
under ``asyncio.run``). ``--case NAME --calls N``
runs one case without valgrind (what each valgrind run executes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

KEYS = [f"query-{i:05d}" for i in range(1_000)]
SIZE = 10_000
CASES = (
    "loop",
    "functools.lru_cache",
    "pgcache.cached",
    "pgcache.cached typed",
    "pgcache.cached kwargs",
    "pgcache.cached lru",
    "cachebox.cached",
    "moka_py.cached",
    "cachetools.cached",
    "async loop",
    "pgcache.cached async",
)


def _identity(key: str) -> str:
    return key


async def _identity_async(key: str) -> str:
    return key


def _decorated(case: str) -> Callable[..., Any]:  # one branch per case
    if case == "functools.lru_cache":
        import functools

        return functools.lru_cache(maxsize=SIZE)(_identity)
    if case.startswith("pgcache.cached"):
        import pgcache

        typed = case.endswith("typed")
        func = _identity_async if case.endswith("async") else _identity
        if case.endswith("lru"):  # the policy of lru_cache, in a cache passed to @cached
            return pgcache.cached(pgcache.Cache(max_size=SIZE, policy="lru"))(func)
        return pgcache.cached(max_size=SIZE, typed=typed)(func)
    if case == "cachebox.cached":
        import cachebox

        return cachebox.cached(cachebox.LRUCache(SIZE))(_identity)
    if case == "moka_py.cached":
        import moka_py

        return moka_py.cached(maxsize=SIZE)(_identity)
    if case == "cachetools.cached":
        import cachetools

        return cachetools.cached(cachetools.LRUCache(SIZE))(_identity)
    return _identity


def run(case: str, calls: int) -> None:
    """Warm the cache with every key, then make ``calls`` hits (or empty iterations)."""
    func = _decorated(case)
    rounds = [KEYS] * (calls // len(KEYS))
    if case == "loop":
        for keys in rounds:
            for _ in keys:
                pass
    elif case == "pgcache.cached kwargs":
        for key in KEYS:
            func(key=key)
        for keys in rounds:
            for key in keys:
                func(key=key)
    elif case.startswith("async") or case.endswith("async"):
        import asyncio

        async def warm() -> None:
            for key in KEYS:
                await func(key)

        if case != "async loop":
            asyncio.run(warm())

        async def main() -> None:
            if case == "async loop":
                for keys in rounds:
                    for _ in keys:
                        pass
                return
            for keys in rounds:
                for key in keys:
                    await func(key)

        with contextlib.suppress(StopIteration):
            main().send(None)
    else:
        for key in KEYS:
            func(key)
        for keys in rounds:
            for key in keys:
                func(key)


def instructions(case: str, calls: int) -> int:
    with tempfile.TemporaryDirectory() as out:
        path = os.path.join(out, "callgrind.out")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={path}"]
        command += [sys.executable, __file__, "--case", case, "--calls", str(calls)]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, capture_output=True, env=env)
        with open(path) as dump:
            totals = re.search(r"^totals: (\d+)", dump.read(), re.MULTILINE)
        assert totals is not None, "callgrind wrote no totals"
        return int(totals.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES)
    parser.add_argument("--calls", type=int, default=100_000)
    options = parser.parse_args()
    if options.case:
        run(options.case, options.calls)
        return
    n = options.calls
    per_call = {}
    for case in CASES:
        per_call[case] = (instructions(case, 2 * n) - instructions(case, n)) / n
    print("| `f(k)` hit | instructions per call |\n|---|---|")
    for case in CASES:
        if "loop" in case:
            continue
        loop = per_call["async loop" if case.endswith("async") else "loop"]
        print(f"| {case} | {per_call[case] - loop:,.0f} |")


if __name__ == "__main__":
    main()
