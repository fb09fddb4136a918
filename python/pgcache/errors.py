"""Every exception pgcache raises on its own, in one tree.

::

    Exception
    └── PgCacheError                         base of everything below (pgcache._core)
        ├── CacheClosedError                 a Cache used after close() (pgcache._core)
        ├── ConfigError (+ ValueError)       bad configuration: one line per bad variable
        ├── DatabaseNotConfiguredError (+ ValueError)   no DATABASE_URL
        ├── PostgresUnavailableError (+ RuntimeError)   no usable PostgreSQL server binaries
        ├── QueryNotFoundError (+ LookupError)          no pg_stat_statements row for a queryid
        ├── PgStatStatementsUnavailableError            the extension is missing or unusable
        └── MLServiceError                   a call to the ML service failed
            ├── MLServiceResponseError       it answered something that is not an answer
            └── MLServiceUnavailable         unreachable, or failing transiently after retries
                └── CircuitOpenError         the circuit breaker refused the call

Bad arguments raise the built-in ``TypeError`` / ``ValueError`` naming the argument; a
missing optional dependency raises ``ImportError`` naming the extra to install.
This module imports no third-party package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from pgcache._core import CacheClosedError, PgCacheError

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "CONFIG_ERROR_TYPE",
    "CacheClosedError",
    "CircuitOpenError",
    "ConfigError",
    "DatabaseNotConfiguredError",
    "MLServiceError",
    "MLServiceResponseError",
    "MLServiceUnavailable",
    "PgCacheError",
    "PgStatStatementsUnavailableError",
    "PostgresUnavailableError",
    "QueryNotFoundError",
]

CONFIG_ERROR_TYPE: Final = "pgcache_config"
"""The pydantic error type of pgcache's own configuration checks (their messages name the
variable already)."""


class ConfigError(PgCacheError, ValueError):
    """The configuration cannot be used; the message has one line per bad variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems: list[str] = list(problems)

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[str]]]:
        return type(self), (self.problems,)

    @classmethod
    def from_validation_error(cls, error: ValidationError) -> ConfigError:
        """One line per problem: ours already name the variable; pydantic's get its name added."""
        problems = []
        for item in error.errors(include_url=False, include_input=False):
            if item["type"] == CONFIG_ERROR_TYPE or not item["loc"]:
                problems.append(item["msg"])
            else:
                problems.append(f"{str(item['loc'][0]).upper()}: {item['msg']}")
        return cls(problems)


class DatabaseNotConfiguredError(PgCacheError, ValueError):
    """No database URL was given (``DATABASE_URL`` is not set)."""


class PostgresUnavailableError(PgCacheError, RuntimeError):
    """The PostgreSQL server binaries (or pg_stat_statements) are not usable here."""


class QueryNotFoundError(PgCacheError, LookupError):
    """No ``pg_stat_statements`` entry has this ``queryid``."""

    def __init__(self, query_hash: int) -> None:
        super().__init__(
            f"query_hash={query_hash}: no pg_stat_statements entry has this queryid "
            "(never run, evicted, or the statistics were reset)"
        )
        self.query_hash = query_hash

    def __reduce__(self) -> tuple[type[QueryNotFoundError], tuple[int]]:
        return type(self), (self.query_hash,)


class PgStatStatementsUnavailableError(PgCacheError):
    """The server cannot serve ``pg_stat_statements`` (extension missing, not preloaded, old)."""


class MLServiceError(PgCacheError):
    """A call to the ML service failed; ``attempts`` HTTP attempts were made.

    ``status`` and ``body`` (its first 200 characters) are set when the service answered.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        attempts: int,
        status: int | None = None,
        body: str | None = None,
    ) -> None:
        super().__init__(f"{endpoint}: {message} (after {attempts} attempt(s))")
        self.endpoint = endpoint
        self.attempts = attempts
        self.status = status
        self.body = body


class MLServiceUnavailable(MLServiceError):  # noqa: N818 -- the name the original's users know
    """The service could not be reached or kept failing transiently (after all retries)."""


class MLServiceResponseError(MLServiceError):
    """The service answered something that is not a valid answer (bad JSON, wrong schema)."""


class CircuitOpenError(MLServiceUnavailable):
    """The circuit breaker is open: the call failed fast, without any HTTP attempt."""
