"""Instructions per call of the cache's core operations, decorators and feature lookup (callgrind).

Usage (from the repository root, with the project's venv; needs ``valgrind``, a Debian package:
``apt-get install valgrind``; ``make instructions`` runs the first line)::

    python benches/instructions.py                  # every figure, Markdown on stdout (~5 min)
    python benches/instructions.py --write          # also replaces the table in BENCHMARKS.md
    python benches/instructions.py --only pgcache   # the cases whose id contains "pgcache"
    python benches/instructions.py --calls 20000    # fewer calls per loop (less precise)
    python benches/instructions.py --jobs 2         # two worker processes at once

Wall-clock figures move by 10-30 % on a shared machine; instruction counts do not, so this is
the record of what one call costs. Each library (and the decorators, and the feature lookups)
runs in one worker process under ``valgrind --tool=callgrind --dump-before=getsid`` (this
script with the hidden ``--worker CASES CALLS`` arguments, ``PYTHONHASHSEED=0``, the garbage
collector off). For each case the worker builds its cache and key lists, then runs the measured
loop over ``--calls`` keys (``for k in keys: c.get(k)``), then the same loop with an empty body
(``for k in keys: pass``), calling ``os.getsid(0)`` between them: callgrind writes the
instructions of each stretch (every thread's) to a file of its own. Per call = (measured loop -
empty loop) / calls: what is left is the call itself (method lookup, argument passing, the
library's work), without the interpreter's start, the imports or the set-up.

Caches hold 10,000 entries (``max_size`` 10,000), str keys (hashed beforehand, as Python keeps
a str's hash), one shared value object; hits look up stored keys in a scattered order (a prime
stride through them):

* ``pgcache`` columns: ``pgcache.Cache(ttl=900, max_size=10_000, policy=...)`` (the TTL path
  runs, a clock read on every hit and write; nothing expires), and ``pgcache lru, no TTL``:
  ``Cache(max_size=10_000, policy="lru")``, the like of ``cachebox LRUCache``:
  ``LRUCache(10_000)`` (no TTL);
  ``cachebox TTLCache``: ``TTLCache(10_000, 900)``; ``dict``: a plain dict, where "new key
  into a full cache" grows the dict (it has no bound) instead of evicting.
* Decorator hits: a one-argument function, 10,000 results stored, ``f(k)`` on stored keys in
  the same order. Async (``pgcache.cached`` of an ``async def``): the call and its coroutine
  driven to completion by ``coro.send(None)`` catching ``StopIteration`` (no event loop); the
  row "plain ``async def``, no cache" is that driver around an uncached coroutine, for
  reference.
* Feature lookup: ``CachedFeatureExtractor.extract_query_features(h, "current")`` with its
  10,000 entries loaded through the extractor itself (a base extractor that builds the
  features in memory: a hit never reaches it, which the worker checks), beside a bare
  ``Cache.get`` of the same key (``pgcache.keys.feature_key``) in the same cache.

Every worker checks that its loop did what the row says (hits hit, misses miss, the loader of a
decorated function is not called during the loop, a full cache stays full).
"""

from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

# Only what a worker needs is imported here: a worker's imports run under callgrind, and
# argparse, subprocess, dataclasses and friends would triple its start-up. The parent imports
# the rest where it uses them.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "BENCHMARKS.md")
BEGIN, END = "<!-- instructions:begin -->", "<!-- instructions:end -->"
SIZE = 10_000  # entries in every cache
TTL = 900.0
CALLS = 100_000
VALUE = {"plan": "Seq Scan on t", "cost": 42.0}  # one shared value object
SCENARIO = "current"


# --------------------------------------------------------------------------------------------
# The measured loops. Each has the shape `for k in keys: <one call>`; `empty` is the baseline.
# --------------------------------------------------------------------------------------------


def empty(target: Any, keys: Sequence[Any]) -> None:
    for _k in keys:
        pass


def get(c: Any, keys: Sequence[Any]) -> None:
    for k in keys:
        c.get(k)


def subscript(c: Any, keys: Sequence[Any]) -> None:
    for k in keys:
        c[k]


def store(c: Any, keys: Sequence[Any]) -> None:
    v = VALUE
    for k in keys:
        c[k] = v


def call(f: Any, keys: Sequence[Any]) -> None:
    for k in keys:
        f(k)


def call_and_drive(f: Any, keys: Sequence[Any]) -> None:
    for k in keys:
        try:  # noqa: SIM105  # contextlib.suppress would add a context manager to every call
            f(k).send(None)
        except StopIteration:
            pass


def extract(extractor: Any, hashes: Sequence[int]) -> None:
    s = SCENARIO
    for h in hashes:
        extractor.extract_query_features(h, s)


LOOPS: dict[str, Callable[[Any, Sequence[Any]], None]] = {
    f.__name__: f for f in (empty, get, subscript, store, call, call_and_drive, extract)
}


# --------------------------------------------------------------------------------------------
# Set-ups: each returns (target, keys, check); check() runs after the loop, in both processes.
# --------------------------------------------------------------------------------------------

Setup = tuple[Any, list[Any], Callable[[], None]]


def str_keys(prefix: str, count: int) -> list[str]:
    keys = [f"{prefix}:{i:07d}:{SCENARIO}" for i in range(count)]
    for key in keys:
        hash(key)  # a str keeps its hash: no library pays for hashing it in the loop
    return keys


def random_picks(keys: list[Any], calls: int) -> list[Any]:
    """`calls` keys in a scattered order that visits every key (a prime stride: cheaper to build
    under callgrind than `random.choice`, and instruction counts do not depend on locality)."""
    return [keys[(i * 7_919) % len(keys)] for i in range(calls)]


def make_cache(library: str) -> Any:
    if library.startswith("pgcache."):
        import pgcache

        _, policy, *variant = library.split(".")
        ttl = None if variant == ["no-ttl"] else TTL
        return pgcache.Cache(ttl=ttl, max_size=SIZE, policy=policy)
    if library == "cachebox.LRUCache":
        import cachebox

        return cachebox.LRUCache(SIZE)
    if library == "cachebox.TTLCache":
        import cachebox

        return cachebox.TTLCache(SIZE, TTL)
    if library == "dict":
        return {}
    raise ValueError(f"unknown library {library!r}")


def full_cache(library: str) -> tuple[Any, list[str]]:
    cache = make_cache(library)
    stored = str_keys("stored", SIZE)
    for key in stored:
        cache[key] = VALUE
    if len(cache) != SIZE:
        raise AssertionError(f"{library}: {len(cache)} entries after storing {SIZE} keys")
    return cache, stored


def operation_setup(library: str, operation: str, calls: int) -> Setup:
    cache, stored = full_cache(library)

    def stays_full() -> None:
        if len(cache) != SIZE and library != "dict":
            raise AssertionError(f"{library}: {len(cache)} entries, expected {SIZE}")

    if operation in ("get_hit", "subscript_hit", "overwrite"):
        if cache.get(stored[0]) is not VALUE:
            raise AssertionError(f"{library}: a stored key missed")
        return cache, random_picks(stored, calls), stays_full
    if operation == "get_miss":
        absent = str_keys("absent", SIZE)
        if cache.get(absent[0]) is not None:
            raise AssertionError(f"{library}: an absent key hit")
        return cache, random_picks(absent, calls), stays_full
    if operation == "insert_new":
        fresh = str_keys("fresh", calls)

        def all_stored() -> None:
            stays_full()
            if cache.get(fresh[-1]) is not VALUE:
                raise AssertionError(f"{library}: the last new key is not stored")

        return cache, fresh, all_stored
    raise ValueError(f"unknown operation {operation!r}")


def counted_loader(primed: int) -> tuple[Callable[[Any], Any], Callable[[], None]]:
    """A function to decorate and a check that it ran exactly `primed` times (no loop miss)."""
    calls = [0]

    def load(key: Any) -> Any:
        calls[0] += 1
        return VALUE

    def only_primed() -> None:
        if calls[0] != primed:
            raise AssertionError(f"the loader ran {calls[0]} times, expected {primed}")

    return load, only_primed


def decorator_setup(library: str, calls: int) -> Setup:
    stored = str_keys("stored", SIZE)
    if library == "pgcache.cached.async":
        return async_decorator_setup(stored, calls)
    load, only_primed = counted_loader(SIZE)
    if library == "functools.lru_cache":
        f = functools.lru_cache(maxsize=SIZE)(load)
    elif library == "pgcache.cached":
        import pgcache

        f = pgcache.cached(max_size=SIZE)(load)
    elif library == "cachebox.cached":
        import cachebox

        f = cachebox.cached(cachebox.LRUCache(SIZE))(load)
    elif library == "moka_py.cached":
        import moka_py

        f = moka_py.cached(maxsize=SIZE)(load)
    elif library == "cachetools.cached":
        import cachetools

        f = cachetools.cached(cachetools.LRUCache(maxsize=SIZE))(load)
    else:
        raise ValueError(f"unknown decorator {library!r}")
    for key in stored:
        f(key)
    return f, random_picks(stored, calls), only_primed


def async_decorator_setup(stored: list[str], calls: int) -> Setup:
    import asyncio

    import pgcache

    primed = [0]

    async def load(key: str) -> Any:
        primed[0] += 1
        return VALUE

    f = pgcache.cached(max_size=SIZE)(load)

    async def prime() -> None:  # a miss awaits the loader: driven by an event loop
        for key in stored:
            await f(key)

    asyncio.run(prime())
    coroutine = f(stored[0])
    try:
        coroutine.send(None)
    except StopIteration as done:
        if done.value is not VALUE:
            raise AssertionError("the async hit returned another value") from None
    else:
        raise AssertionError("an async hit suspended: it cannot complete without a loop")

    def only_primed() -> None:
        if primed[0] != SIZE:
            raise AssertionError(f"the loader ran {primed[0]} times, expected {SIZE}")

    return f, random_picks(stored, calls), only_primed


def plain_coroutine_setup(calls: int) -> Setup:
    async def uncached(key: str) -> Any:
        return VALUE

    return uncached, random_picks(str_keys("stored", SIZE), calls), lambda: None


class InMemoryExtractor:
    """A base extractor that builds features without a database, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def extract_query_features(self, query_hash: int, scenario: str) -> Any:
        from datetime import UTC, datetime

        from pgcache.postgres.features import QueryFeatures

        self.calls += 1
        numbers = {
            name: 0
            for name, field in QueryFeatures.model_fields.items()
            if field.annotation in (int, float, "int", "float")
        }
        fields: dict[str, Any] = {**numbers, "query_hash": query_hash, "scenario": scenario}
        return QueryFeatures(**fields, collected_at=datetime.now(UTC))

    def extract_batch_query_features(self, hashes: Iterable[int], scenario: str) -> Any:
        return {h: self.extract_query_features(h, scenario) for h in hashes}


def feature_setup(loop: str, calls: int) -> Setup:
    import pgcache
    from pgcache.keys import feature_key
    from pgcache.postgres.cached_features import CachedFeatureExtractor

    base = InMemoryExtractor()
    cache = pgcache.Cache(ttl=TTL, max_size=SIZE)
    extractor = CachedFeatureExtractor(base, cache)
    hashes = [-(10**15) - 7919 * i for i in range(SIZE)]  # queryids are large signed ints
    for query_hash in hashes:
        extractor.extract_query_features(query_hash, SCENARIO)
    picks = random_picks(hashes, calls)

    def only_primed() -> None:
        if base.calls != SIZE:
            raise AssertionError(f"the base extractor ran {base.calls} times, expected {SIZE}")

    if loop == "get":
        keys = [feature_key(h) for h in picks]
        if cache.get(keys[0]) is None:
            raise AssertionError("the feature key is not the one the extractor stores under")
        return cache, keys, only_primed
    return extractor, picks, only_primed


# --------------------------------------------------------------------------------------------
# The cases: (id, loop, set-up). The id names the table cell.
# --------------------------------------------------------------------------------------------

OPERATIONS = {  # operation -> (row label, loop)
    "get_hit": ("`c.get(k)` hit", "get"),
    "subscript_hit": ("`c[k]` hit", "subscript"),
    "get_miss": ("`c.get(k)` miss", "get"),
    "overwrite": ("`c[k] = v` overwrite", "store"),
    "insert_new": ("`c[k] = v` new key, full cache", "store"),
}
LIBRARIES = {  # library -> column label
    "pgcache.tinylfu": "pgcache tinylfu (default)",
    "pgcache.lru": "pgcache lru",
    "pgcache.lru.no-ttl": "pgcache lru, no TTL",
    "cachebox.LRUCache": "cachebox LRUCache",
    "cachebox.TTLCache": "cachebox TTLCache",
    "dict": "dict",
}
DECORATORS = {  # decorator -> (row label, loop)
    "functools.lru_cache": ("`functools.lru_cache`", "call"),
    "pgcache.cached": ("`pgcache.cached`", "call"),
    "pgcache.cached.async": ("`pgcache.cached`, async (call + `send(None)`)", "call_and_drive"),
    "plain.async": ("plain `async def`, no cache (call + `send(None)`)", "call_and_drive"),
    "cachebox.cached": ("`cachebox.cached`", "call"),
    "moka_py.cached": ("`moka_py.cached`", "call"),
    "cachetools.cached": ("`cachetools.cached`", "call"),
}
FEATURES = {  # case -> (row label, loop)
    "features.extractor": ("`CachedFeatureExtractor.extract_query_features(h, s)` hit", "extract"),
    "features.get": ("`Cache.get(feature_key(h))` hit, same cache", "get"),
}
MODULES = {"cachebox": "cachebox", "moka_py": "moka-py", "cachetools": "cachetools"}


class Case(NamedTuple):
    id: str
    loop: str

    def setup(self, calls: int) -> Setup:
        kind, _, name = self.id.partition(":")
        if kind == "op":
            library, operation = name.split("/")
            return operation_setup(library, operation, calls)
        if kind == "decorator":
            if name == "plain.async":
                return plain_coroutine_setup(calls)
            return decorator_setup(name, calls)
        return feature_setup(self.loop, calls)

    def module(self) -> str:
        """The third-party module the case needs ("" for pgcache and the standard library)."""
        name = self.id.partition(":")[2]
        return next((m for m in MODULES if name.startswith(m)), "")


CASES = [
    *(
        Case(f"op:{library}/{operation}", loop)
        for operation, (_, loop) in OPERATIONS.items()
        for library in LIBRARIES
    ),
    *(Case(f"decorator:{name}", loop) for name, (_, loop) in DECORATORS.items()),
    *(Case(f"feature:{name}", loop) for name, (_, loop) in FEATURES.items()),
]


def mark() -> None:
    """A segment boundary: callgrind (``--dump-before=getsid``) writes the instructions since
    the previous one to a file of their own. Nothing else in a worker calls getsid() (getppid()
    would not do: a library of the decorator group calls it)."""
    os.getsid(0)


def worker(case_ids: list[str], calls: int) -> None:
    """Runs each case's loop, then its empty loop, each between two marks; prints the ids."""
    gc.disable()  # collections would land in random segments
    for case_id in case_ids:
        case = next(c for c in CASES if c.id == case_id)
        target, keys, check = case.setup(calls)
        loop = LOOPS[case.loop]
        mark()
        loop(target, keys)
        mark()
        empty(target, keys)
        mark()
        check()
        del target, keys, check
        gc.collect()
    print("\n".join(case_ids))


# --------------------------------------------------------------------------------------------
# Running callgrind and reporting.
# --------------------------------------------------------------------------------------------


def run_group(cases: list[Case], calls: int, scratch: str) -> dict[str, float]:
    """Instructions per call of each case, from one worker process under callgrind: the
    segments between its marks are the loops (every thread's instructions count)."""
    import glob
    import re
    import subprocess
    import tempfile

    directory = tempfile.mkdtemp(dir=scratch)
    out = os.path.join(directory, "callgrind.out")
    command = [
        "valgrind",
        "--tool=callgrind",
        "--dump-before=getsid",
        f"--callgrind-out-file={out}",
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        ",".join(case.id for case in cases),
        str(calls),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    names = [c.id for c in cases]
    if done.returncode != 0 or done.stdout.split() != names:
        raise RuntimeError(f"{names[0]}...: the worker failed:\n{done.stderr[-3000:]}")
    totals = {}
    for path in glob.glob(out + ".*"):
        with open(path) as dump:
            found = re.search(r"^totals:\s*(\d+)", dump.read(), re.MULTILINE)
        if found is None:
            raise RuntimeError(f"{path}: no totals line")
        totals[int(path.rsplit(".", 1)[1])] = int(found.group(1))
    # Dump k holds what ran between marks k-1 and k: case i's loop is dump 3i+2, its empty
    # loop dump 3i+3 (dump 3i+1 is its set-up, after the previous case's check).
    if sorted(totals) != list(range(1, 3 * len(cases) + 1)):
        raise RuntimeError(f"{names[0]}...: {len(totals)} segments, expected {3 * len(cases)}")
    return {
        case.id: (totals[3 * i + 2] - totals[3 * i + 3]) / calls for i, case in enumerate(cases)
    }


def groups(cases: list[Case]) -> list[list[Case]]:
    """One worker per library (the operations' columns), one for the decorators, one for the
    feature lookups: a library's imports and threads never share a process with another's."""
    grouped: dict[str, list[Case]] = {}
    for case in cases:
        kind, _, name = case.id.partition(":")
        grouped.setdefault(name.split("/")[0] if kind == "op" else kind, []).append(case)
    return list(grouped.values())


def available(case: Case) -> bool:
    import importlib

    module = case.module()
    if not module:
        return True
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def commit() -> str:
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if dirty else "")


def cell(figures: dict[str, float], case_id: str) -> str:
    figure = figures.get(case_id)
    return "-" if figure is None else f"{figure:,.0f}"


def ratio(figure: float | None, reference: float | None) -> str:
    return "-" if figure is None or not reference else f"{figure / reference:.2f}"


def markdown(figures: dict[str, float], calls: int) -> str:
    import platform
    from datetime import UTC, datetime

    from compare import cpu_model  # beside this script, on sys.path when it runs

    versions = ", ".join(f"{dist} {version(dist)}" for dist in ["pgcache", *MODULES.values()])
    lines = [
        "```sh",
        "make instructions   # = .venv/bin/python benches/instructions.py --write",
        "```",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} at commit {commit()} on an "
        f'"{cpu_model()}" ({os.cpu_count()} cores), CPython {platform.python_version()}, '
        f"{versions}; {calls:,} calls per loop, the empty loop's instructions subtracted "
        "(see the script's docstring). Instructions per call:",
        "",
        "| operation | " + " | ".join(LIBRARIES.values()) + " |",
        "|---" * (len(LIBRARIES) + 1) + "|",
    ]
    for operation, (label, _) in OPERATIONS.items():
        cells = [cell(figures, f"op:{library}/{operation}") for library in LIBRARIES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    reference = figures.get("decorator:functools.lru_cache")
    lines += ["", "| decorated one-argument function, `f(k)` hit | instructions | x lru_cache |"]
    lines.append("|---|---|---|")
    for name, (label, _) in DECORATORS.items():
        case_id = f"decorator:{name}"
        figure = figures.get(case_id)
        lines.append(f"| {label} | {cell(figures, case_id)} | {ratio(figure, reference)} |")
    bare = figures.get("feature:features.get")
    lines += ["", "| cached feature lookup | instructions | x bare `Cache.get` |", "|---|---|---|"]
    for name, (label, _) in FEATURES.items():
        case_id = f"feature:{name}"
        figure = figures.get(case_id)
        lines.append(f"| {label} | {cell(figures, case_id)} | {ratio(figure, bare)} |")
    return "\n".join(lines) + "\n"


def write_section(table: str) -> None:
    with open(BENCHMARKS) as file:
        text = file.read()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{BENCHMARKS}: no {BEGIN} ... {END} section to replace")
    with open(BENCHMARKS, "w") as file:
        file.write(text[: start + len(BEGIN)] + "\n" + table + text[end:])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # --worker CASE,CASE,... CALLS: one process under callgrind
        worker(argv[1].split(","), int(argv[2]))
        return 0
    import argparse
    import shutil
    import tempfile
    from concurrent.futures import ThreadPoolExecutor, as_completed

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=CALLS, help="calls per measured loop")
    parser.add_argument("--only", help="run only the cases whose id contains this")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes at once")
    parser.add_argument("--write", action="store_true", help=f"replace the table in {BENCHMARKS}")
    parser.add_argument("--list", action="store_true", help="print the case ids and exit")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error(f"--calls must be at least 1, got {args.calls}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.list:
        print("\n".join(case.id for case in CASES))
        return 0
    if args.write and args.only:
        parser.error("--write replaces the whole table: run it without --only")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    cases = [c for c in CASES if args.only is None or args.only in c.id]
    if not cases:
        parser.error(f"--only {args.only!r} matches no case (see --list)")
    skipped = [case for case in cases if not available(case)]
    for case in skipped:
        print(f"{case.id}: skipped ({case.module()} does not import)", file=sys.stderr)
    figures: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="pgcache-instructions-") as scratch,
        ThreadPoolExecutor(max_workers=args.jobs) as pool,
    ):
        runs = [
            pool.submit(run_group, group, args.calls, scratch)
            for group in groups([case for case in cases if case not in skipped])
        ]
        for run in as_completed(runs):
            for case_id, figure in run.result().items():
                figures[case_id] = figure
                print(f"{case_id}: {figure:,.1f}", file=sys.stderr, flush=True)
    table = markdown(figures, args.calls)
    print(table)
    if args.write:
        write_section(table)
        print(f"written to {BENCHMARKS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
