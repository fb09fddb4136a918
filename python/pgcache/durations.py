"""Durations as the original service wrote them: Go-style strings (``100ms``, ``90s``, ``15m``,
``1h30m``, ``1.5h``) or plain numbers of seconds (``900``, ``0.5``), read into ``timedelta``
(:func:`parse_duration`) and written back in the shortest form (:func:`format_duration`).
Standard library only; :mod:`pgcache.config` re-exports both."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Final

DURATION_HINT: Final = "expected a duration like 15m, 900 or 1h30m"
_DURATION_HINT: Final = DURATION_HINT

# Go's time.ParseDuration units, in nanoseconds; "µ" (micro sign) and "μ" (Greek mu) both occur.
_UNIT_NS: Final[dict[str, int]] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_NUMBER: Final = r"(?:\d+(?:\.\d*)?|\.\d+)"
_SECONDS_RE: Final = re.compile(rf"[+-]?{_NUMBER}")
_UNIT_ALTERNATION: Final = "|".join(sorted(map(re.escape, _UNIT_NS), key=len, reverse=True))
_GO_DURATION_RE: Final = re.compile(rf"([+-]?)((?:{_NUMBER}(?:{_UNIT_ALTERNATION}))+)")
_GO_PART_RE: Final = re.compile(rf"({_NUMBER})({_UNIT_ALTERNATION})")


def parse_duration(value: str | float | timedelta) -> timedelta:
    """A ``timedelta`` from a Go-style duration string, a number of seconds, or a ``timedelta``.

    Accepted: ``"100ms"``, ``"90s"``, ``"15m"``, ``"1h30m"``, ``"1.5h"``, ``"250us"``
    (or ``µs``), ``"10ns"``, ``"900"``, ``"0.5"``, ``900``, ``0.5``, ``timedelta(...)``.
    The result is rounded to the nearest microsecond (``timedelta``'s resolution).
    Raises ``ValueError`` for anything else, including NaN and infinities.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r}: {_DURATION_HINT}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r}: {_DURATION_HINT}")
    if isinstance(value, int | float):
        nanoseconds = Decimal(repr(value)) * _UNIT_NS["s"]
    else:
        nanoseconds = _parse_duration_text(value.strip())
    microseconds = (nanoseconds / 1_000).to_integral_value(rounding=ROUND_HALF_EVEN)
    try:
        return timedelta(microseconds=int(microseconds))
    except OverflowError:
        raise ValueError(f"{value!r}: duration too large ({_DURATION_HINT})") from None


def _parse_duration_text(text: str) -> Decimal:
    """Nanoseconds of a Go-style duration or a plain number of seconds."""
    try:
        if _SECONDS_RE.fullmatch(text):
            return Decimal(text) * _UNIT_NS["s"]
        match = _GO_DURATION_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r}: {_DURATION_HINT}")
        total = sum(
            (Decimal(number) * _UNIT_NS[unit] for number, unit in _GO_PART_RE.findall(match[2])),
            Decimal(0),
        )
    except InvalidOperation:
        raise ValueError(f"{text!r}: {_DURATION_HINT}") from None
    return -total if match[1] == "-" else total


def format_duration(value: timedelta) -> str:
    """The shortest Go-style string for ``value``, which :func:`parse_duration` reads back.

    ``timedelta(minutes=90)`` -> ``"1h30m"``, ``timedelta(milliseconds=100)`` -> ``"100ms"``,
    ``timedelta(seconds=1.5)`` -> ``"1.5s"``, ``timedelta(0)`` -> ``"0s"``.
    """
    microseconds = value // timedelta(microseconds=1)
    if microseconds == 0:
        return "0s"
    sign = "-" if microseconds < 0 else ""
    microseconds = abs(microseconds)
    if microseconds < 1_000_000:
        if microseconds % 1_000 == 0:
            return f"{sign}{microseconds // 1_000}ms"
        return f"{sign}{microseconds}us"
    hours, rest = divmod(microseconds, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, fraction = divmod(rest, 1_000_000)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if fraction:
        parts.append(f"{seconds}.{fraction:06d}".rstrip("0") + "s")
    elif seconds:
        parts.append(f"{seconds}s")
    return sign + "".join(parts)
