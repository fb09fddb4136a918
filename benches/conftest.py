"""Settings for the benchmark run (``pytest benches --benchmark-only -p no:timeout``).

pyproject.toml sets ``timeout = 120`` for the test suite and turns warnings into errors. With
pytest-timeout disabled (``-p no:timeout``, so that no benchmark round is cut short), pytest
would fail on that ini key as unknown; declaring it here, only when the plugin is absent, keeps
the key harmless.
"""

from __future__ import annotations

from typing import Any


def pytest_addoption(parser: Any, pluginmanager: Any) -> None:
    if not pluginmanager.has_plugin("timeout"):
        parser.addini("timeout", "ignored: pytest-timeout is disabled for the benchmarks")
