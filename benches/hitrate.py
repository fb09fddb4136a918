"""Hit rates on recorded access traces: pgcache's policies beside its peers and the optimum.

Usage (from the repository root, with the project's venv)::

    python benches/hitrate.py                          # every trace, table on stdout (~10 min)
    python benches/hitrate.py --quick                  # traces cut to 200,000 accesses
    python benches/hitrate.py --json out.json --markdown table.md --plots benches/plots
    python benches/hitrate.py --traces lirs-gli,zipf-0.8-scan --libs pgcache.lru,pgcache.tinylfu
    python benches/hitrate.py --repeat 5               # randomized libraries: mean of 5 runs
    python benches/hitrate.py --export /tmp/traces     # decoded traces for the Rust simulator

Each trace is replayed as a cache would see it: look the key up; on a miss, store it. Every
library gets the same key sequence at the same capacity (``max_size``), no TTL:

* ``pgcache.lru`` and ``pgcache.tinylfu``: ``pgcache.Cache(max_size=n, policy=...)``;
* ``moka_py``: ``moka_py.Moka(n)`` (TinyLFU admission, no window);
* ``theine``: ``theine.Cache(n)`` (W-TinyLFU);
* ``cachebox.lru``: ``cachebox.LRUCache(n)``;
* ``optimum``: Belady's MIN computed offline (evict the key used farthest in the future, and do
  not store a missed key whose next use is farther still): no policy can do better.

Traces come from ``../shared/traces`` (see its README: LIRS and cache2k traces, as published
with Caffeine's simulator; a line ``*`` in a LIRS trace is a separator, skipped), plus two
synthetic ones: Zipf-distributed requests (alpha 0.8 and 1.0) over 10,000 keys with a full
scan of every key after each 50,000 requests, a model of a batch extraction over all queries in
the middle of skewed dashboard traffic. Capacities: those the traces README and issue 11 quote,
and 1/16, 1/8, 1/4 and 1/2 of each trace's distinct keys (the table shows 1/8 and 1/2 and the
quoted ones; the plots every capacity).

pgcache's ``tinylfu`` draws a sketch seed per cache, and moka-py and theine have their own
randomness, so their figures move between runs by up to a point or two on the short traces;
``--repeat N`` replays those three N times per row (interleaved) and reports each one's mean
(the JSON keeps every run), which is what the goal should be judged on. LRU and the optimum
are deterministic and replayed once.

``--plots DIR`` writes one PNG per trace (hit rate against capacity, a line per library, the
optimum dashed). ``--export DIR`` writes every trace as little-endian 64-bit keys
(``NAME.u64``), the input of the Rust simulator in ``rust/core/policy/simulate.rs``.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import importlib.metadata
import json
import lzma
import random
import struct
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT.parent / "shared" / "traces"
QUICK_ACCESSES = 200_000

#: capacities quoted in the traces README and issue 11 (kept so the figures compare)
QUOTED: dict[str, tuple[int, ...]] = {
    "lirs-gli": (500, 1000),
    "lirs-multi2": (500, 1000),
    "lirs-loop": (500, 1000),
    "lirs-sprite": (500, 1000),
    "cache2k-web07": (2000, 10000),
    "cache2k-orm-night": (2000, 10000),
}
#: fractions of a trace's distinct keys: all plotted, TABLE_FRACTIONS in the table
FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2)
TABLE_FRACTIONS = (1 / 8, 1 / 2)

ZIPF_KEYS, ZIPF_REQUESTS, ZIPF_SCAN_EVERY = 10_000, 300_000, 50_000


# --- traces --------------------------------------------------------------------------------------


def read_trace(path: Path) -> list[int]:
    """The keys of a trace file (format by suffix, see the traces README)."""
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt") as lines:
            return [int(line.split()[0]) for line in lines if line.strip() not in ("", "*")]
    with lzma.open(path) as raw:
        data = raw.read()
    count = len(data) // 4
    return list(struct.unpack(f">{count}i", data[: count * 4]))


def zipf_with_scans(alpha: float, seed: int = 7) -> list[int]:
    """Zipf(alpha) requests over ZIPF_KEYS keys, all keys scanned after every ZIPF_SCAN_EVERY."""
    rng = random.Random(seed)
    ids = list(range(ZIPF_KEYS))
    rng.shuffle(ids)  # popularity unrelated to the scan's order
    weights = [1.0 / (rank + 1) ** alpha for rank in range(ZIPF_KEYS)]
    cumulative = []
    total = 0.0
    for weight in weights:
        total += weight
        cumulative.append(total)
    keys: list[int] = []
    while len(keys) < ZIPF_REQUESTS:
        keys.extend(rng.choices(ids, cum_weights=cumulative, k=ZIPF_SCAN_EVERY))
        keys.extend(range(ZIPF_KEYS))
    return keys


def load_traces(folder: Path, wanted: set[str] | None) -> dict[str, list[int]]:
    traces: dict[str, list[int]] = {}
    for path in sorted(folder.glob("*.trace.*")):
        name = path.name.split(".")[0]
        if wanted is None or name in wanted:
            traces[name] = read_trace(path)
    for alpha in (0.8, 1.0):
        name = f"zipf-{alpha}-scan"
        if wanted is None or name in wanted:
            traces[name] = zipf_with_scans(alpha)
    return traces


def capacities(name: str, keys: list[int]) -> tuple[list[int], list[int]]:
    """(every capacity to run, those shown in the table)."""
    distinct = len(set(keys))
    table = sorted({max(1, int(distinct * f)) for f in TABLE_FRACTIONS} | set(QUOTED.get(name, ())))
    every = sorted(set(table) | {max(1, int(distinct * f)) for f in FRACTIONS})
    return every, table


# --- replay --------------------------------------------------------------------------------------


def optimum(keys: list[int], capacity: int) -> int:
    """Belady's MIN with bypass: the most hits any cache of `capacity` entries can get."""
    never = len(keys)
    next_use = [0] * len(keys)
    last: dict[int, int] = {}
    for i in range(len(keys) - 1, -1, -1):
        next_use[i] = last.get(keys[i], never)
        last[keys[i]] = i
    held: dict[int, int] = {}  # key -> its next use
    farthest: list[tuple[int, int]] = []  # (-next use, key), with stale entries
    hits = 0
    for i, key in enumerate(keys):
        upcoming = next_use[i]
        if key in held:
            hits += 1
        elif len(held) >= capacity:
            while -farthest[0][0] != held.get(farthest[0][1]):
                heapq.heappop(farthest)  # stale: that key was used (or evicted) since
            if -farthest[0][0] <= upcoming:
                continue  # the new key is needed last: do not store it
            del held[heapq.heappop(farthest)[1]]
        held[key] = upcoming
        heapq.heappush(farthest, (-upcoming, key))
        if len(farthest) > 4 * capacity + 1024:
            farthest = [(-use, k) for k, use in held.items()]
            heapq.heapify(farthest)
    return hits


def replay(get: Callable[[int], bool], put: Callable[[int], Any], keys: Iterable[int]) -> int:
    hits = 0
    for key in keys:
        if get(key):
            hits += 1
        else:
            put(key)
    return hits


@dataclass(frozen=True)
class Library:
    label: str
    dist: str | None
    #: whether its hit rate varies between runs (a random seed per cache), so that
    #: ``--repeat`` replays it more than once
    randomized: bool
    #: capacity -> (hit test, store, close)
    make: Callable[[int], tuple[Callable[[int], bool], Callable[[int], Any], Callable[[], None]]]


def _pgcache(policy: Literal["tinylfu", "lru"]) -> Callable[[int], Any]:
    """A pgcache cache driven by `get` alone (a hit or a miss, counted like any lookup)."""

    def make(capacity: int) -> Any:
        import pgcache

        cache: pgcache.Cache[int, bool] = pgcache.Cache(max_size=capacity, policy=policy)
        get = cache.get
        return (lambda k: get(k) is not None), (lambda k: cache.set(k, True)), cache.close

    return make


def _moka(capacity: int) -> Any:
    import moka_py

    cache: Any = moka_py.Moka(capacity)
    get = cache.get
    return (lambda k: get(k) is not None), (lambda k: cache.set(k, True)), lambda: None


def _theine(capacity: int) -> Any:
    import theine

    cache: Any = theine.Cache(capacity)
    get = cache.get
    return (lambda k: get(k)[1]), (lambda k: cache.set(k, True)), lambda: None


def _cachebox(capacity: int) -> Any:
    import cachebox

    cache: Any = cachebox.LRUCache(capacity)
    get = cache.get
    return (lambda k: get(k) is not None), (lambda k: cache.insert(k, True)), lambda: None


LIBRARIES = (
    Library("pgcache.lru", "pgcache", False, _pgcache("lru")),
    Library("pgcache.tinylfu", "pgcache", True, _pgcache("tinylfu")),
    Library("moka_py", "moka-py", True, _moka),
    Library("theine", "theine", True, _theine),
    Library("cachebox.lru", "cachebox", False, _cachebox),
)
OPTIMUM = "optimum"


def measure(
    name: str, keys: list[int], capacity: int, labels: list[str], repeat: int = 1
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each library's hit rate at `capacity`: the mean over `repeat` runs for the randomized
    ones (runs interleaved: every library once, then again), and every run's figure."""
    runs: dict[str, list[float]] = {}
    for round_ in range(repeat):
        for library in LIBRARIES:
            if library.label not in labels or (round_ > 0 and not library.randomized):
                continue
            get, put, close = library.make(capacity)
            try:
                runs.setdefault(library.label, []).append(replay(get, put, keys) / len(keys))
            finally:
                close()
    rates = {label: sum(figures) / len(figures) for label, figures in runs.items()}
    if OPTIMUM in labels:
        rates[OPTIMUM] = optimum(keys, capacity) / len(keys)
    return rates, runs


# --- output --------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    found = {}
    for library in LIBRARIES:
        if library.dist is not None:
            try:
                found[library.dist] = importlib.metadata.version(library.dist)
            except importlib.metadata.PackageNotFoundError:
                found[library.dist] = "not installed"
    return found


def markdown(results: dict[str, Any], labels: list[str]) -> str:
    peers = [label for label in ("moka_py", "theine", "cachebox.lru") if label in labels]
    head = ["trace @ capacity", *labels]
    if "pgcache.tinylfu" in labels:
        head += ["tinylfu - best other", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    gaps_lru, gaps_tinylfu, met = [], [], []
    for name, trace in results["traces"].items():
        for row in trace["rows"]:
            if not row["table"]:
                continue
            rates = row["rates"]
            cells = [f"{name} @ {row['capacity']:,}"]
            best = max(rate for label, rate in rates.items() if label != OPTIMUM)
            for label in labels:
                text = f"{rates[label]:.3f}" if label in rates else "-"
                cells.append(
                    f"**{text}**" if label != OPTIMUM and rates.get(label) == best else text
                )
            if "pgcache.tinylfu" in rates:
                others = [rates[p] for p in ("pgcache.lru", *peers) if p in rates]
                delta = rates["pgcache.tinylfu"] - max(others)
                ok = delta >= -0.005
                met.append(ok)
                cells += [f"{delta:+.3f}", "yes" if ok else "**no**"]
                if OPTIMUM in rates and "pgcache.lru" in rates:
                    gaps_lru.append(rates[OPTIMUM] - rates["pgcache.lru"])
                    gaps_tinylfu.append(rates[OPTIMUM] - rates["pgcache.tinylfu"])
            lines.append("| " + " | ".join(cells) + " |")
    if met:
        lines.append("")
        repeat = results.get("repeat", 1)
        each = (
            f" (tinylfu, moka-py and theine: the mean of {repeat} runs each)" if repeat > 1 else ""
        )
        lines.append(
            f"tinylfu at or above the best of LRU and the peers (within 0.005): "
            f"{sum(met)} of {len(met)} rows{each}."
        )
    if gaps_lru:
        ratio = sum(gaps_tinylfu) / sum(gaps_lru)
        lines.append(
            f"Mean distance to the optimum: LRU {sum(gaps_lru) / len(gaps_lru):.3f}, "
            f"tinylfu {sum(gaps_tinylfu) / len(gaps_tinylfu):.3f} "
            f"({ratio:.2f} of LRU's)."
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], labels: list[str], folder: Path) -> list[Path]:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, trace in results["traces"].items():
        figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=100)
        rows = trace["rows"]
        for label in labels:
            points = [(r["capacity"], r["rates"][label]) for r in rows if label in r["rates"]]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            style: dict[str, Any] = (
                {"linestyle": "--", "color": "black"} if label == OPTIMUM else {"marker": "o"}
            )
            if label == "pgcache.tinylfu":
                style["linewidth"] = 2.5
            axes.plot(xs, ys, label=label, **style)
        axes.set_xscale("log")
        capacities = sorted({max(1, int(trace["distinct"] * f)) for f in FRACTIONS})
        axes.set_xticks(capacities, [f"{c:,}" for c in capacities], fontsize="small")
        axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axes.set_xlabel("capacity (entries)")
        axes.set_ylabel("hit rate")
        axes.set_ylim(top=min(1.0, axes.get_ylim()[1]))
        axes.set_title(f"{name}: {trace['accesses']:,} accesses, {trace['distinct']:,} keys")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        path = folder / f"hitrate-{name}.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


def export(traces: dict[str, list[int]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, keys in traces.items():
        (folder / f"{name}.u64").write_bytes(struct.pack(f"<{len(keys)}q", *keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces-dir", type=Path, default=TRACES)
    parser.add_argument("--traces", help="comma-separated trace names (default: all)")
    parser.add_argument(
        "--libs",
        default=",".join([*(lib.label for lib in LIBRARIES), OPTIMUM]),
        help="comma-separated: " + ", ".join([*(lib.label for lib in LIBRARIES), OPTIMUM]),
    )
    parser.add_argument("--quick", action="store_true", help="cut every trace to 200,000 keys")
    parser.add_argument("--json", type=Path, help="write every figure as JSON")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown")
    parser.add_argument("--plots", type=Path, help="write one PNG per trace into this folder")
    parser.add_argument("--export", type=Path, help="write the traces as .u64 files and stop")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="replay the randomized libraries (tinylfu, moka-py, theine) this many times and "
        "report the mean",
    )
    args = parser.parse_args(argv)

    wanted = set(args.traces.split(",")) if args.traces else None
    traces = load_traces(args.traces_dir, wanted)
    if args.quick:
        traces = {name: keys[:QUICK_ACCESSES] for name, keys in traces.items()}
    if args.export:
        export(traces, args.export)
        print(f"wrote {len(traces)} traces to {args.export}")
        return 0
    labels = args.libs.split(",")
    results: dict[str, Any] = {
        "command": " ".join(["python benches/hitrate.py", *(argv or sys.argv[1:])]),
        "versions": versions(),
        "repeat": max(1, args.repeat),
        "traces": {},
    }
    for name, keys in traces.items():
        every, table = capacities(name, keys)
        rows = []
        for capacity in every:
            started = time.perf_counter()
            rates, runs = measure(name, keys, capacity, labels, max(1, args.repeat))
            took = time.perf_counter() - started
            shown = "  ".join(f"{label} {rate:.3f}" for label, rate in rates.items())
            print(f"{name} @ {capacity}: {shown}  ({took:.1f} s)", file=sys.stderr)
            rows.append(
                {"capacity": capacity, "table": capacity in table, "rates": rates, "runs": runs}
            )
        results["traces"][name] = {
            "accesses": len(keys),
            "distinct": len(set(keys)),
            "rows": rows,
        }
    table_text = markdown(results, labels)
    print(table_text)
    if args.markdown:
        args.markdown.write_text(table_text + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.plots:
        for path in plot(results, labels, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
