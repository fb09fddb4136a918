"""Optional dependencies: one ImportError naming the extra to install when one is missing.

``pip install pgcache`` installs no third-party package and gives the cache, the decorator
and the manager. Each subpackage that needs more calls :func:`require` first, so that a
missing dependency is reported once, by the extra that brings it, instead of as a bare
``ModuleNotFoundError`` from deep inside an import.
"""

from __future__ import annotations

import importlib.util
from typing import Final

EXTRAS: Final[dict[str, tuple[str, ...]]] = {
    "config": ("pydantic", "pydantic_settings", "psycopg"),
    "postgres": ("pydantic", "psycopg", "psycopg_pool"),
    "ml": ("pydantic", "httpx", "stamina"),
    "metrics": ("pydantic", "prometheus_client"),
    "redis": ("redis", "orjson"),
    "service": (
        "pydantic",
        "pydantic_settings",
        "psycopg",
        "psycopg_pool",
        "httpx",
        "stamina",
        "prometheus_client",
        "redis",
        "orjson",
        "starlette",
        "uvicorn",
        "rich",
    ),
}
"""The modules each extra of ``pyproject.toml`` installs, ``all`` aside (tests/test_extras.py keeps
the two in step)."""


def require(extra: str, part: str) -> None:
    """Raise ``ImportError`` naming ``pgcache[extra]`` if any module of ``extra`` is missing."""
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"{part} needs the optional dependencies of pgcache[{extra}] "
            f"(missing: {', '.join(missing)}); install them with: pip install 'pgcache[{extra}]'",
            name=missing[0],
        )
