"""What bench and demo share: percentiles, memory, progress bars, hot keys."""

from __future__ import annotations

import os
import random
import resource
from collections.abc import Callable, Sequence
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

HOT_SHARE: Final = 0.8
HOT_KEYS: Final = 0.2
# --- shared: percentiles, memory, progress --------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def rss_bytes() -> int:
    """The resident set size of this process now (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mib(size: int) -> str:
    return f"{size / 2**20:+.1f} MiB"


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def hot_key_picker(keys: Sequence[Any], rng: random.Random) -> Callable[[], Any]:
    """80 % of the picks among the first 20 % of ``keys``, the rest among the others."""
    hot = max(1, round(len(keys) * HOT_KEYS))

    def pick() -> Any:
        if hot == len(keys) or rng.random() < HOT_SHARE:
            return keys[rng.randrange(hot)]
        return keys[rng.randrange(hot, len(keys))]

    return pick
