"""pgcache.Cache beside its peers: one command, each library measured in its own subprocess.

Usage (from the repository root, with the project's venv)::

    python benches/compare.py                 # full run: a few minutes on 2 cores
    python benches/compare.py --quick         # smaller N and fewer repeats: under ~1 minute
    python benches/compare.py --json out.json # also write every figure as JSON
    python benches/compare.py --libs pgcache.Cache,dict  # only some libraries (labels below)
    python benches/compare.py --repeat 3      # every library 3 times, interleaved; best kept

(``make compare`` and ``make demo`` run the first two.)

Libraries (the labels --libs takes): pgcache.Cache, cachebox.TTLCache, cachebox.LRUCache,
cachetools.TTLCache, cachetools.LRUCache, moka_py.Moka, theine.Cache, lru.LRU (lru-dict),
functools.lru_cache (get hit only) and dict (a plain dict). A library that does not import is
skipped and the report says so. TTL-capable caches get a TTL of 900 s
(``Cache(ttl=900.0, ...)``; theine takes its TTL per ``set``), so their TTL path runs but nothing
expires during the run.

Each library runs in a fresh interpreter (this script with the hidden ``--worker LABEL``
argument, which prints one JSON object), so no library's memory or threads disturb another's.

Figures:

* get hit (``g = c.get; g(k)``), subscript hit (``c[k]``), get miss, set overwriting an existing
  key, set of a new key into a full cache (max_size 10,000, so every set evicts or is refused by
  an admission policy), delete of an existing key. str keys from pre-built lists; each timing is
  the best (min) of R repeats of a tight loop over N keys, with ``time.perf_counter_ns`` and the
  garbage collector off. **raw** = the loop's ns per op; **net** = raw minus an empty loop over
  the same list (``for k in keys: pass``), i.e. the cost of the call itself. Ratios use net.
* RSS growth per entry: 1,000,000 int keys (200,000 with --quick) sharing one value (the key
  list exists before the first reading, so only the cache's own growth counts; gc runs before
  each reading of /proc/self/statm). It is the first thing each worker measures. Hash tables
  grow by doubling, so the figure depends on where the entry count falls between two sizes.
* threaded throughput: 100 threads x 2,000 requests, 80 % of them on the hottest 20 % of a
  10,000-key space, ``get`` then ``set`` on a miss, max_size 5,000; ops/s (requests per second,
  best of a few runs, each with a new cache) and the hit rate of that run. cachetools is not
  thread-safe: its calls are wrapped in a ``threading.Lock``, as its documentation asks.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import itertools
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

TTL = 900.0
VALUE = {"plan": "Seq Scan on t", "cost": 42.0}  # one shared value object
MAX_SIZE = 10_000  # cache size of the per-op figures
RSS_ENTRIES = 1_000_000
THREADS, REQUESTS_PER_THREAD = 100, 2_000
KEYSPACE, HOT_FRACTION, HOT_SHARE, THREADED_MAX_SIZE = 10_000, 0.2, 0.8, 5_000


@dataclass(frozen=True)
class Settings:
    n: int  # ops per timed loop
    repeats: int  # timed loops per figure (the best one counts)
    threaded_runs: int
    rss_entries: int = RSS_ENTRIES


FULL = Settings(n=100_000, repeats=15, threaded_runs=3)
QUICK = Settings(n=20_000, repeats=5, threaded_runs=2, rss_entries=200_000)


# --------------------------------------------------------------------------------------------
# Adapters: how to build each library's cache and which call does what.
# --------------------------------------------------------------------------------------------

ITEM = "[]"  # as `set`: store with `c[k] = v` (the library has no set method)
FIGURES = (
    "rss",
    "get_hit",
    "subscript_hit",
    "get_miss",
    "set_overwrite",
    "set_evict",
    "delete",
    "threaded",
)


def _is_not_none(result: Any) -> bool:
    return result is not None


def _second(result: Any) -> bool:  # theine's get returns (value, found)
    return bool(result[1])


@dataclass(frozen=True)
class Adapter:
    label: str  # e.g. "cachebox.TTLCache"
    module: str  # imported by the worker; ImportError means "skipped"
    dist: str | None  # distribution whose version is reported (None: the standard library)
    make: Callable[[Any, int], Any]  # (imported module, max_size) -> cache
    get: str | None = "get"  # method name
    subscript: bool = False  # supports c[k]
    set: str | None = "set"  # method name, or ITEM
    set_ttl: timedelta | None = None  # passed as a third argument of every set (theine)
    delete: str | None = None  # method name
    hit_of: Callable[[Any], bool] = _is_not_none  # was a get's result a hit?
    thread_safe: bool = True
    figures: tuple[str, ...] = FIGURES
    note: str = ""

    def setter(self, cache: Any) -> Callable[[Any, Any], Any]:
        """A two-argument store function (for filling and the threaded run, not timed alone)."""
        if self.set == ITEM:
            return cache.__setitem__
        method = getattr(cache, self.set or "set")
        if self.set_ttl is None:
            return method
        ttl = self.set_ttl
        return lambda k, v: method(k, v, ttl)

    def set_form(self) -> str:
        if self.set == ITEM:
            return "c[k] = v"
        return f"c.{self.set}(k, v{', ttl' if self.set_ttl is not None else ''})"


def _lru_cache(functools: Any, max_size: int) -> Any:
    return functools.lru_cache(maxsize=max_size)(lambda key: VALUE)


ADAPTERS = (
    Adapter(
        "pgcache.Cache",
        "pgcache",
        "pgcache",
        lambda m, n: m.Cache(ttl=TTL, max_size=n),
        subscript=True,
        delete="delete",
    ),
    Adapter(
        "cachebox.TTLCache",
        "cachebox",
        "cachebox",
        lambda m, n: m.TTLCache(n, TTL),
        subscript=True,
        set="insert",
        delete="pop",
        note="evicts in FIFO order",
    ),
    Adapter(
        "cachebox.LRUCache",
        "cachebox",
        "cachebox",
        lambda m, n: m.LRUCache(n),
        subscript=True,
        set="insert",
        delete="pop",
        note="no TTL",
    ),
    Adapter(
        "cachetools.TTLCache",
        "cachetools",
        "cachetools",
        lambda m, n: m.TTLCache(maxsize=n, ttl=TTL),
        subscript=True,
        set=ITEM,
        delete="pop",
        thread_safe=False,
        note="pure Python; not thread-safe",
    ),
    Adapter(
        "cachetools.LRUCache",
        "cachetools",
        "cachetools",
        lambda m, n: m.LRUCache(maxsize=n),
        subscript=True,
        set=ITEM,
        delete="pop",
        thread_safe=False,
        note="pure Python; no TTL; not thread-safe",
    ),
    Adapter(
        "moka_py.Moka",
        "moka_py",
        "moka-py",
        lambda m, n: m.Moka(n, ttl=TTL),
        delete="remove",
        note="TinyLFU admission",
    ),
    Adapter(
        "theine.Cache",
        "theine",
        "theine",
        lambda m, n: m.Cache(n),
        set_ttl=timedelta(seconds=TTL),
        delete="delete",
        hit_of=_second,
        note="TinyLFU admission; get returns (value, found); ttl per set",
    ),
    Adapter(
        "lru.LRU",
        "lru",
        "lru-dict",
        lambda m, n: m.LRU(n),
        subscript=True,
        set=ITEM,
        delete="pop",
        note="no TTL",
    ),
    Adapter(
        "functools.lru_cache",
        "functools",
        None,
        _lru_cache,
        get=None,
        set=None,
        figures=("get_hit",),
        note="f(k) on a cached function; no TTL",
    ),
    Adapter(
        "dict",
        "builtins",
        None,
        lambda m, n: {},
        subscript=True,
        set=ITEM,
        delete="pop",
        figures=tuple(f for f in FIGURES if f != "set_evict"),
        note="unbounded: no eviction, no TTL",
    ),
)
BY_LABEL = {a.label: a for a in ADAPTERS}


# --------------------------------------------------------------------------------------------
# Timed loops. Each takes everything as arguments (locals) and returns elapsed ns.
# --------------------------------------------------------------------------------------------


def loop_empty(keys: list[Any]) -> int:
    t0 = time.perf_counter_ns()
    for _k in keys:
        pass
    return time.perf_counter_ns() - t0


def loop_call(fn: Callable[[Any], Any], keys: list[Any]) -> int:
    t0 = time.perf_counter_ns()
    for k in keys:
        fn(k)
    return time.perf_counter_ns() - t0


def loop_call_value(fn: Callable[[Any, Any], Any], keys: list[Any], value: Any) -> int:
    t0 = time.perf_counter_ns()
    for k in keys:
        fn(k, value)
    return time.perf_counter_ns() - t0


def loop_call_value_ttl(fn: Callable[..., Any], keys: list[Any], value: Any, ttl: Any) -> int:
    t0 = time.perf_counter_ns()
    for k in keys:
        fn(k, value, ttl)
    return time.perf_counter_ns() - t0


def loop_getitem(cache: Any, keys: list[Any]) -> int:
    t0 = time.perf_counter_ns()
    for k in keys:
        cache[k]
    return time.perf_counter_ns() - t0


def loop_setitem(cache: Any, keys: list[Any], value: Any) -> int:
    t0 = time.perf_counter_ns()
    for k in keys:
        cache[k] = value
    return time.perf_counter_ns() - t0


# --------------------------------------------------------------------------------------------
# The worker: measures one library, prints JSON.
# --------------------------------------------------------------------------------------------


@dataclass
class Worker:
    adapter: Adapter
    module: Any
    settings: Settings
    rng: random.Random = field(default_factory=lambda: random.Random(1234))
    open_caches: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.settings.n
        self.base = [f"query:{i:08d}" for i in range(MAX_SIZE)]  # what a full cache holds
        self.hits = self.rng.choices(self.base, k=n)  # random order, each key many times
        self.misses = self.rng.choices([f"absent:{i:08d}" for i in range(MAX_SIZE)], k=n)

    # -- helpers ---------------------------------------------------------------------------

    def new_cache(self, max_size: int) -> Any:
        cache = self.adapter.make(self.module, max_size)
        self.open_caches.append(cache)
        return cache

    def close_caches(self) -> None:
        """Close what a figure made (theine's maintenance task would otherwise run on)."""
        for cache in self.open_caches:
            close = getattr(cache, "close", None)
            if close is not None:
                close()
        self.open_caches.clear()
        gc.collect()

    def check_hit(self, result: Any) -> None:
        hit = result is VALUE if self.adapter.get is None else self.adapter.hit_of(result)
        assert hit, f"{self.adapter.label}: a key just stored was not found ({result!r})"

    def filled(self, keys: list[Any]) -> Any:
        """A new cache of MAX_SIZE holding `keys`."""
        cache = self.new_cache(MAX_SIZE)
        if self.adapter.label == "functools.lru_cache":  # filled by calling the function
            for k in keys:
                cache(k)
        else:
            store = self.adapter.setter(cache)
            for k in keys:
                store(k, VALUE)
        return cache

    def best(
        self, run: Callable[[], int], keys: list[Any], before: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Best-of-R ns/op for `run` and for an empty loop over the same keys."""
        raws, empties = [], []
        gc.collect()
        gc.disable()
        try:
            for _ in range(self.settings.repeats):
                if before is not None:
                    before()
                raws.append(run())
                empties.append(loop_empty(keys))
        finally:
            gc.enable()
        raw, empty = min(raws) / len(keys), min(empties) / len(keys)
        return {"unit": "ns/op", "raw": raw, "empty": empty, "net": max(raw - empty, 0.0)}

    def set_loop(self, cache: Any, keys: list[Any]) -> Callable[[], int]:
        a = self.adapter
        if a.set == ITEM:
            return lambda: loop_setitem(cache, keys, VALUE)
        method = getattr(cache, a.set or "set")
        if a.set_ttl is not None:
            return lambda: loop_call_value_ttl(method, keys, VALUE, a.set_ttl)
        return lambda: loop_call_value(method, keys, VALUE)

    # -- figures ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Every figure this library supports; "rss" first, before the heap has grown."""
        a = self.adapter
        supported = {
            "rss": True,
            "get_hit": True,
            "subscript_hit": a.subscript,
            "get_miss": a.get is not None,
            "set_overwrite": a.set is not None,
            "set_evict": a.set is not None,
            "delete": a.delete is not None,
            "threaded": a.set is not None,
        }
        out = {}
        for figure in FIGURES:
            if figure in a.figures and supported[figure]:
                out[figure] = getattr(self, figure)()
                self.close_caches()
        return out

    def get_hit(self) -> dict[str, Any]:
        a = self.adapter
        cache = self.filled(self.base)
        fn = cache if a.get is None else getattr(cache, a.get)  # lru_cache: the function
        self.check_hit(fn(self.base[0]))
        form = "f(k)" if a.get is None else f"g = c.{a.get}; g(k)"
        return self.best(lambda: loop_call(fn, self.hits), self.hits) | {"form": form}

    def subscript_hit(self) -> dict[str, Any]:
        cache = self.filled(self.base)
        assert cache[self.base[0]] is VALUE
        return self.best(lambda: loop_getitem(cache, self.hits), self.hits) | {"form": "c[k]"}

    def get_miss(self) -> dict[str, Any]:
        fn = getattr(self.filled(self.base), self.adapter.get or "")
        assert not self.adapter.hit_of(fn(self.misses[0]))
        result = self.best(lambda: loop_call(fn, self.misses), self.misses)
        return result | {"form": f"c.{self.adapter.get}(k)"}

    def set_overwrite(self) -> dict[str, Any]:
        cache = self.filled(self.base)
        result = self.best(self.set_loop(cache, self.hits), self.hits)
        return result | {"form": self.adapter.set_form()}

    def set_evict(self) -> dict[str, Any]:
        """New keys into a full cache; two disjoint key sets of n >= max_size keys alternate,
        so every key of a loop is new to the cache."""
        n = self.settings.n
        assert n >= MAX_SIZE
        fresh = [[f"new{j}:{i:08d}" for i in range(n)] for j in range(2)]
        cache = self.filled(self.base)
        loops = [self.set_loop(cache, keys) for keys in fresh]
        turns = itertools.cycle(loops)
        result = self.best(lambda: next(turns)(), fresh[0])
        return result | {"form": self.adapter.set_form() + " (new key, full cache)"}

    def delete(self) -> dict[str, Any]:
        """Delete every key of a full cache (refilled, untimed, before each loop)."""
        a = self.adapter
        cache = self.new_cache(MAX_SIZE)
        base = self.base
        order = self.rng.sample(base, len(base))
        store, remove = a.setter(cache), getattr(cache, a.delete or "")

        def refill() -> None:
            for k in base:
                store(k, VALUE)

        result = self.best(lambda: loop_call(remove, order), order, before=refill)
        return result | {"form": f"c.{a.delete}(k)"}

    def rss(self) -> dict[str, Any]:
        entries = self.settings.rss_entries
        keys = list(range(10**9, 10**9 + entries))  # real int objects, made before measuring
        gc.collect()
        before = rss_bytes()
        cache = self.new_cache(entries)
        store = self.adapter.setter(cache)
        gc.disable()  # the fill makes no garbage; collections would only slow it down
        try:
            for k in keys:
                store(k, VALUE)
        finally:
            gc.enable()
        gc.collect()
        grown = rss_bytes() - before
        self.check_hit(cache.get(keys[-1]))
        return {"unit": "B/entry", "value": grown / entries, "entries": entries}

    def threaded(self) -> dict[str, Any]:
        a = self.adapter
        keys = [f"user:{i:06d}" for i in range(KEYSPACE)]
        hot, cold = keys[: int(KEYSPACE * HOT_FRACTION)], keys[int(KEYSPACE * HOT_FRACTION) :]
        plans = []
        for t in range(THREADS):
            rng = random.Random(t)
            plans.append(
                [
                    rng.choice(hot if rng.random() < HOT_SHARE else cold)
                    for _ in range(REQUESTS_PER_THREAD)
                ]
            )
        runs = []
        for _ in range(self.settings.threaded_runs):
            cache = self.new_cache(THREADED_MAX_SIZE)
            runs.append(run_threads(cache, a, plans))
        best = max(runs, key=lambda r: r["value"])
        return best | {"runs": len(runs), "locked": not a.thread_safe}


def run_threads(cache: Any, a: Adapter, plans: list[list[str]]) -> dict[str, Any]:
    get, store, hit_of = getattr(cache, a.get or "get"), a.setter(cache), a.hit_of
    lock = threading.Lock()
    hits = [0] * len(plans)
    barrier = threading.Barrier(len(plans) + 1)

    def plain(i: int, plan: list[str]) -> None:
        n = 0
        barrier.wait()
        for k in plan:
            if hit_of(get(k)):
                n += 1
            else:
                store(k, VALUE)
        hits[i] = n

    def locked(i: int, plan: list[str]) -> None:
        n = 0
        barrier.wait()
        for k in plan:
            with lock:
                found = hit_of(get(k))
            if found:
                n += 1
            else:
                with lock:
                    store(k, VALUE)
        hits[i] = n

    body = plain if a.thread_safe else locked
    threads = [threading.Thread(target=body, args=(i, p)) for i, p in enumerate(plans)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter_ns()
    for t in threads:
        t.join()
    elapsed = time.perf_counter_ns() - t0
    requests = sum(len(p) for p in plans)
    return {
        "unit": "ops/s",
        "value": requests / (elapsed / 1e9),
        "hit_rate": 100.0 * sum(hits) / requests,
        "requests": requests,
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker_main(label: str, settings: Settings) -> int:
    adapter = BY_LABEL[label]
    try:
        module = importlib.import_module(adapter.module)
    except ImportError as exc:
        print(json.dumps({"label": label, "skipped": f"not importable ({exc})"}))
        return 0
    figures = Worker(adapter, module, settings).run()
    print(json.dumps({"label": label, "version": version_of(adapter), "figures": figures}))
    return 0


# --------------------------------------------------------------------------------------------
# The parent: runs one worker per library, prints the tables.
# --------------------------------------------------------------------------------------------

TITLES = {
    "get_hit": "get hit, str key",
    "subscript_hit": "subscript hit, str key",
    "get_miss": "get miss, str key",
    "set_overwrite": "set, overwriting an existing key",
    "set_evict": f"set of a new key into a full cache (max_size {MAX_SIZE:,})",
    "delete": "delete of an existing key",
    "rss": "RSS growth per entry (int keys, one shared value)",
    "threaded": (
        f"threaded: {THREADS} threads x {REQUESTS_PER_THREAD:,} requests, 80/20 hot keys over "
        f"{KEYSPACE:,} keys, get then set on miss, max_size {THREADED_MAX_SIZE:,}"
    ),
}


def version_of(adapter: Adapter) -> str:
    if adapter.dist is None:
        return f"stdlib (Python {platform.python_version()})"
    try:
        return importlib.metadata.version(adapter.dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_worker(label: str, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", label]
    if quick:
        cmd.append("--quick")
    env = os.environ | {"PYTHONHASHSEED": "0"}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120 if quick else 600, env=env
        )
    except subprocess.TimeoutExpired:
        return {"label": label, "skipped": "timed out"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"label": label, "skipped": f"worker failed: {tail}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _better(reading: dict[str, Any], than: dict[str, Any]) -> bool:
    if reading["unit"] == "ns/op":
        return bool(reading["net"] < than["net"])
    if reading["unit"] == "ops/s":
        return bool(reading["value"] > than["value"])
    return bool(reading["value"] < than["value"])  # B/entry


def merge_best(first: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Keeps each figure's best reading of two runs of one library (noise only slows)."""
    if "skipped" in first or "skipped" in other:
        return first if "skipped" in other else other
    figures = dict(first["figures"])
    for name, reading in other["figures"].items():
        mine = figures.get(name)
        if mine is None or _better(reading, mine):
            figures[name] = reading
    return first | {"figures": figures}


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (pastes into BENCHMARKS.md as is)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def ratio(ours: float | None, theirs: float, kind: str) -> str:
    if ours is None or theirs <= 0:
        return "n/a"
    if kind == "ops/s":
        return f"{ours / theirs:.2f}x throughput"
    return f"{ours / theirs:.2f}x {'memory' if kind == 'B/entry' else 'time'}"


def report(results: list[dict[str, Any]], settings: Settings, quick: bool) -> str:
    done = [r for r in results if "figures" in r]
    ours = next((r["figures"] for r in done if r["label"] == "pgcache.Cache"), {})
    out = []
    for fig in ("get_hit", "subscript_hit", "get_miss", "set_overwrite", "set_evict", "delete"):
        rows = []
        for r in done:
            m = r["figures"].get(fig)
            if m is None:
                continue
            ref = ours.get(fig, {}).get("net")
            rows.append(
                [
                    r["label"],
                    m["form"],
                    f"{m['raw']:.1f}",
                    f"{m['net']:.1f}",
                    "(self)" if r["label"] == "pgcache.Cache" else ratio(ref, m["net"], "ns"),
                ]
            )
        if rows:
            hdr = ["library", "call", "raw ns/op", "net ns/op", "pgcache/peer (net)"]
            out += [f"### {TITLES[fig]}", "", table(hdr, rows), ""]
    rows = []
    for r in done:
        m = r["figures"].get("rss")
        if m is not None:
            ref = ours.get("rss", {}).get("value")
            mine = r["label"] == "pgcache.Cache"
            rows.append(
                [
                    r["label"],
                    f"{m['value']:.1f}",
                    "(self)" if mine else ratio(ref, m["value"], "B/entry"),
                ]
            )
    if rows:
        title = f"{TITLES['rss']}, {settings.rss_entries:,} entries"
        hdr = ["library", "bytes/entry", "pgcache/peer"]
        out += [f"### {title}", "", table(hdr, rows), ""]
    rows = []
    for r in done:
        m = r["figures"].get("threaded")
        if m is not None:
            ref = ours.get("threaded", {}).get("value")
            mine = r["label"] == "pgcache.Cache"
            rows.append(
                [
                    r["label"] + (" (+Lock)" if m["locked"] else ""),
                    f"{m['value']:,.0f}",
                    f"{m['hit_rate']:.1f} %",
                    "(self)" if mine else ratio(ref, m["value"], "ops/s"),
                ]
            )
    if rows:
        hdr = ["library", "ops/s", "hit rate", "pgcache/peer"]
        out += [f"### {TITLES['threaded']}", "", table(hdr, rows), ""]
    return "\n".join(out)


def header(results: list[dict[str, Any]], settings: Settings, quick: bool) -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    lines = [
        f"## pgcache vs peers ({'--quick' if quick else 'full run'})",
        "",
        f"- machine: {cpu_model()}, {cores} cores ({usable} usable), {platform.system()} "
        f"{platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- per-op figures: best of {settings.repeats} loops of {settings.n:,} ops; "
        "raw = loop ns/op, net = raw - empty loop (`for k in keys: pass`); ratios use net, "
        "< 1x means pgcache is faster / smaller",
        f"- TTL-capable caches use ttl={TTL:g} s; gc off while timing; each library in its "
        "own process",
        "",
        "| library | version | note |",
        "|---|---|---|",
    ]
    for r in results:
        a = BY_LABEL[r["label"]]
        version = r.get("version", "-")
        note = f"SKIPPED: {r['skipped']}" if "skipped" in r else a.note
        lines.append(f"| {a.label} | {version} | {note} |")
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller N and R (under ~1 min)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--libs", help="comma-separated labels (default: all)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run every library N times, interleaved, and keep each figure's best "
        "(evens out a noisy, shared machine)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.worker:
        return worker_main(args.worker, settings)

    labels = args.libs.split(",") if args.libs else list(BY_LABEL)
    unknown = [x for x in labels if x not in BY_LABEL]
    if unknown:
        parser.error(f"unknown libraries {unknown}; known: {', '.join(BY_LABEL)}")
    best: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    for round_no in range(1, max(1, args.repeat) + 1):
        for label in labels:
            t0 = time.monotonic()
            result = run_worker(label, args.quick)
            took = f"skipped: {result['skipped']}" if "skipped" in result else "done"
            elapsed = time.monotonic() - t0
            print(f"[{round_no}] {label}: {took} ({elapsed:.1f} s)", file=sys.stderr, flush=True)
            best[label] = merge_best(best[label], result) if label in best else result
    results = [best[label] for label in labels]
    print(header(results, settings, args.quick))
    print(report(results, settings, args.quick))
    print(f"(total {time.monotonic() - started:.0f} s)")
    if args.json:
        facts = {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "quick": args.quick,
            "repeat": args.repeat,
            "settings": settings.__dict__,
        }
        with open(args.json, "w") as f:
            json.dump({"machine": facts, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
