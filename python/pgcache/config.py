"""Configuration of a pgcache service from environment variables: :class:`Settings`.

Every variable has the original design's default, so a deployment that sets
nothing behaves as before. Durations accept Go-style strings (``100ms``,
``90s``, ``15m``, ``1h30m``, ``1.5h``) and plain numbers of seconds (``900``,
``0.5``), since the original's own documentation uses both. A bad value stops
start-up with one error naming the variable, the value and what is accepted.

Four example files (development, production, performance testing, debugging)
ship inside the package; :meth:`Settings.for_mode` loads one.

This module only reads and checks configuration: it builds no cache, pool or
client (see :mod:`pgcache.caching.manager` and :mod:`pgcache.postgres.pools` for that), and it
never prints the password of ``DATABASE_URL`` or ``REDIS_URL``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import timedelta
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, Final, Literal, Self, TypeVar, get_args
from urllib.parse import urlsplit

from pgcache._extras import require
from pgcache._validate import MAX_CAPACITY

require("config", "pgcache.config")

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pgcache.access import Network, check_access_setting, parse_rate_limit, parse_trusted_proxies
from pgcache.caching.budget import DEFAULT_MAX_BYTES
from pgcache.caching.redis_url import check_redis_url, mask_redis_url
from pgcache.durations import (
    DURATION_HINT,
    format_duration as format_duration,
    parse_duration as parse_duration,
)
from pgcache.errors import CONFIG_ERROR_TYPE, ConfigError
from pgcache.keys import CACHE_NAMES, DEFAULT_KEY_PREFIX, check_key_prefix

Mode = Literal["development", "production", "performance", "debugging"]
MODES: Final[tuple[Mode, ...]] = get_args(Mode)

_DURATION_HINT: Final = DURATION_HINT
_BOOL_HINT: Final = "expected a boolean: true/false, yes/no or 1/0"
_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})
_MASK: Final = "***"

_INTEGER_RE: Final = re.compile(r"[+-]?\d+")

_URL_PASSWORD_RE: Final = re.compile(r"(?i)([?&]password=)([^&#]*)")
_CONNINFO_PASSWORD_RE: Final = re.compile(r"(?i)(^|\s)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")


def mask_database_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, in URL and in ``key=value`` conninfo form.

    ``postgresql://app:secret@db/app`` -> ``postgresql://app:***@db/app``;
    ``host=db password=secret`` -> ``host=db password=***``; a ``password`` query
    parameter of a URL is masked too. The result is checked with libpq's own parser
    (``psycopg.conninfo.conninfo_to_dict``): when a spelling keeps the password from the
    pattern above (a conninfo with ``://`` in a value, a percent-encoded parameter name), the
    connection string is given in ``key=value`` form, every parameter kept, the password
    masked.
    """
    masked = _mask_by_pattern(url)
    try:
        parameters = conninfo_to_dict(url)
    except ProgrammingError:
        return masked  # not a connection string libpq accepts: nothing it would read as one
    if "password" not in parameters:
        return masked
    try:
        if conninfo_to_dict(masked).get("password") == _MASK:
            return masked
    except ProgrammingError:
        pass
    parameters["password"] = _MASK
    return make_conninfo(**{k: str(v) for k, v in parameters.items()})


def _mask_by_pattern(url: str) -> str:
    if "://" in url:
        scheme, _, rest = url.partition("://")
        # The authority ends at the first "/", "?" or "#"; its userinfo ends at its last "@".
        end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, tail = rest[:end], rest[end:]
        userinfo, at, hostinfo = authority.rpartition("@")
        if at and ":" in userinfo:
            user = userinfo.partition(":")[0]
            authority = f"{user}:{_MASK}@{hostinfo}"
        tail = _URL_PASSWORD_RE.sub(lambda m: m[1] + _MASK, tail)
        return f"{scheme}://{authority}{tail}"
    return _CONNINFO_PASSWORD_RE.sub(lambda m: m[1] + m[2] + _MASK, url)


_CACHE_TTLS_HINT: Final = (
    "expected cache=duration pairs separated by commas, like features=1h,anomalies=10m"
    f" (caches: {', '.join(CACHE_NAMES)})"
)


def parse_cache_ttls(value: object) -> dict[str, timedelta]:
    """``{cache: TTL}`` from ``"features=1h,anomalies=10m"`` (or such a mapping); ``ValueError``
    for an unknown cache, a bad or non-positive duration, or anything else."""
    if isinstance(value, str):
        pairs = [part.partition("=") for part in value.split(",") if part.strip()]
        if any(not equals for _, equals, _ in pairs):
            raise ValueError(_CACHE_TTLS_HINT)
        items: list[tuple[object, object]] = [(k.strip(), d.strip()) for k, _, d in pairs]
    elif isinstance(value, dict):
        items = list(value.items())
    else:
        raise ValueError(_CACHE_TTLS_HINT)
    ttls: dict[str, timedelta] = {}
    for name, duration in items:
        if name not in CACHE_NAMES or not isinstance(duration, str | int | float | timedelta):
            raise ValueError(_CACHE_TTLS_HINT)
        ttl = parse_duration(duration)
        if ttl <= timedelta(0):
            raise ValueError(f"durations must be positive; {_CACHE_TTLS_HINT}")
        ttls[str(name)] = ttl
    return ttls


_T = TypeVar("_T")


def _config_error(message: str) -> PydanticCustomError:
    """A bad configuration, said in one line that :class:`ConfigError` keeps as it is."""
    return PydanticCustomError(CONFIG_ERROR_TYPE, "{message}", {"message": message})


def _invalid(info: ValidationInfo, shown: str, hint: str) -> PydanticCustomError:
    """The one error for a bad variable: its name, its value, what is accepted."""
    return _config_error(f"{str(info.field_name).upper()}={shown}: {hint}")


def _checked(
    info: ValidationInfo,
    value: object,
    check: Callable[[Any], _T],
    hint: str | None = None,
    *,
    shown: str | None = None,
) -> _T:
    """``check(value)``, its ``TypeError`` or ``ValueError`` turned into :func:`_invalid`'s
    error: ``hint``, else the check's own message; the value as ``shown`` (default: its repr)."""
    try:
        return check(value)
    except (TypeError, ValueError) as exc:
        raise _invalid(info, repr(value) if shown is None else shown, hint or str(exc)) from None


def _positive_duration(value: object) -> timedelta:
    if not isinstance(value, str | int | float | timedelta):
        raise TypeError(_DURATION_HINT)
    try:
        duration = parse_duration(value)
    except ValueError:
        raise ValueError(_DURATION_HINT) from None
    if duration <= timedelta(0):
        raise ValueError(f"must be greater than zero; {_DURATION_HINT}")
    return duration


def _integer(value: object) -> int:
    """An int, or the text of one (not a bool, not a float)."""
    if isinstance(value, str) and _INTEGER_RE.fullmatch(value.strip()):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"{value!r}: not an integer")


def _multiplier(value: object) -> float:
    """A finite number >= 1, or the text of one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError(f"{value!r}: not a number")
    number = float(value)
    if not (math.isfinite(number) and number >= 1):
        raise ValueError(f"{value!r}: below 1 or not finite")
    return number


def _http_url(value: object) -> str:
    """An http:// or https:// URL with a host (and a numeric port, if any), stripped."""
    if not isinstance(value, str):
        raise TypeError(f"{value!r}: not a str")
    url = value.strip()
    parts = urlsplit(url)
    _ = parts.port  # raises ValueError for a port that is not a number
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r}: not an http(s) URL with a host")
    return url


_DURATION_FIELDS: Final = (
    "feature_cache_ttl",
    "prediction_cache_ttl",
    "fingerprint_cache_ttl",
    "explain_plan_cache_ttl",
    "anomaly_cache_ttl",
    "cache_cleanup_interval",
    "database_conn_max_lifetime",
    "database_conn_max_idle_time",
    "ml_service_timeout",
    "http_idle_conn_timeout",
    "http_dial_timeout",
    "retry_initial_backoff",
    "redis_socket_timeout",
    "redis_connect_timeout",
    "database_statement_timeout",
    "shutdown_timeout",
    "negative_cache_ttl",
)
_POSITIVE_INT_FIELDS: Final = (
    "cache_max_size",
    "cache_max_bytes",
    "max_database_conns",
    "max_http_conns",
    "max_body_bytes",
    "max_client_conns",
    "rate_limit_burst",
)
_NON_NEGATIVE_INT_FIELDS: Final = (
    "max_idle_database_conns",
    "max_http_conns_per_host",
    "retry_max_attempts",
)


class Settings(BaseSettings):
    """Every setting of a pgcache service, read from the environment and an optional ``.env``.

    Environment variables are the upper-case attribute names (``FEATURE_CACHE_TTL``
    for ``feature_cache_ttl``), matched case-insensitively; they win over the
    ``.env`` file, which wins over the defaults. Empty variables count as unset.
    Keyword arguments win over everything (``Settings(cache_max_size=100)``).

    ``Settings()`` raises pydantic's ``ValidationError`` for bad values (its text
    holds the same one-line messages); :meth:`load`, :meth:`from_env_file` and
    :meth:`for_mode` raise :class:`ConfigError` with just those lines.
    ``str(settings)`` is the configuration in ``.env`` form with the database
    password masked; ``repr``, :meth:`describe` and ``model_dump_json`` mask it too.
    The ``database_url`` attribute (and the Python-mode ``model_dump()``) keep it, for
    connecting.
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        env_ignore_empty=True,
        # A .env file is often shared with other tools; their variables are not ours to reject.
        extra="ignore",
        validate_default=True,
        # pydantic would otherwise print DATABASE_URL (password included) in its error text.
        hide_input_in_errors=True,
    )

    cache_enabled: bool = Field(
        default=True, description="false: caches store nothing, lookups miss"
    )
    cache_max_size: int = Field(default=10_000, description="maximum entries per cache")
    cache_max_bytes: int = Field(
        default=DEFAULT_MAX_BYTES,
        description="bytes of values per cache (their JSON size); beyond it the oldest-stored go",
    )
    cache_policy: Literal["tinylfu", "lru"] = Field(
        default="tinylfu",
        description="eviction policy of every cache: tinylfu (adaptive W-TinyLFU) or lru",
    )
    feature_cache_ttl: timedelta = Field(
        default=timedelta(minutes=15), description="features cache TTL"
    )
    prediction_cache_ttl: timedelta = Field(
        default=timedelta(minutes=5), description="predictions cache TTL"
    )
    fingerprint_cache_ttl: timedelta = Field(
        default=timedelta(minutes=10),
        # QUERY_RESULTS_CACHE_TTL: the original service's name for the same setting.
        validation_alias=AliasChoices("fingerprint_cache_ttl", "query_results_cache_ttl"),
        description="fingerprints cache TTL (also read from QUERY_RESULTS_CACHE_TTL)",
    )
    explain_plan_cache_ttl: timedelta = Field(
        default=timedelta(minutes=30), description="explain plans cache TTL"
    )
    anomaly_cache_ttl: timedelta = Field(
        default=timedelta(minutes=5), description="anomalies cache TTL"
    )
    cache_cleanup_interval: timedelta = Field(
        default=timedelta(seconds=1), description="background expiry interval"
    )
    database_url: str | None = Field(default=None, description="PostgreSQL conninfo or URL")
    max_database_conns: int = Field(default=50, description="pool max size")
    max_idle_database_conns: int = Field(
        default=15, description="connections kept open (pool min size)"
    )
    database_conn_max_lifetime: timedelta = Field(
        default=timedelta(minutes=5), description="a connection is replaced after this long"
    )
    database_conn_max_idle_time: timedelta = Field(
        default=timedelta(minutes=10), description="an idle connection above the minimum is closed"
    )
    ml_service_url: str = Field(default="http://localhost:8081", description="ML service base URL")
    ml_service_timeout: timedelta = Field(
        default=timedelta(seconds=5), description="per-request timeout"
    )
    max_http_conns: int = Field(default=10, description="HTTP connections to the ML service")
    max_http_conns_per_host: int = Field(default=5, description="idle keep-alive connections")
    http_idle_conn_timeout: timedelta = Field(
        default=timedelta(seconds=90), description="idle keep-alive expiry"
    )
    http_dial_timeout: timedelta = Field(
        default=timedelta(seconds=30), description="connect timeout"
    )
    retry_max_attempts: int = Field(default=3, description="retries after the first try")
    retry_backoff_multiplier: float = Field(default=2.0, description="backoff growth per retry")
    retry_initial_backoff: timedelta = Field(
        default=timedelta(milliseconds=100), description="wait before the first retry"
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for the shared second tier (redis://, rediss://, unix://, "
        "redis+cluster:// for a cluster); unset: each process caches alone",
    )
    redis_key_prefix: str = Field(
        default=DEFAULT_KEY_PREFIX, description="namespace prefix of every key in Redis"
    )
    redis_socket_timeout: timedelta = Field(
        default=timedelta(milliseconds=250), description="longest wait for one Redis reply"
    )
    redis_connect_timeout: timedelta = Field(
        default=timedelta(seconds=1), description="longest wait for a Redis connection"
    )
    redis_cache_ttls: str = Field(
        default="",
        description="how long entries live in Redis, per cache, e.g. features=1h,anomalies=10m"
        " (a cache not named: its own TTL)",
    )
    dashboard: bool = Field(
        default=True,
        description="false: no /dashboard page and no /api/v1/metrics/stream (both answer 404)",
    )

    database_statement_timeout: timedelta = Field(
        default=timedelta(seconds=5), description="longest feature query (then 504)"
    )
    shutdown_timeout: timedelta = Field(
        default=timedelta(seconds=10), description="time requests get to finish after a signal"
    )
    max_body_bytes: int = Field(default=65_536, description="largest request body (then 413)")
    max_client_conns: int = Field(default=1000, description="connections served at once (503)")
    negative_cache_ttl: timedelta = Field(
        default=timedelta(seconds=5), description="an unknown query hash is remembered this long"
    )
    admin_token: SecretStr | None = Field(default=None, description="operator bearer token")
    rate_limit: str | None = Field(
        default=None, description="per client: 100/s, 6000/m; unset: off"
    )
    rate_limit_burst: int | None = Field(default=None, description="default: one second's worth")
    trusted_proxies: str = Field(default="", description="proxies whose X-Forwarded-For counts")

    @field_validator(*_DURATION_FIELDS, mode="before")
    @classmethod
    def _check_duration(cls, value: object, info: ValidationInfo) -> timedelta:
        return _checked(info, value, _positive_duration)

    @field_validator(*_POSITIVE_INT_FIELDS, *_NON_NEGATIVE_INT_FIELDS, mode="before")
    @classmethod
    def _check_count(cls, value: object, info: ValidationInfo) -> int | None:
        field = str(info.field_name)
        if value is None and field == "rate_limit_burst":
            return None
        minimum = 1 if field in _POSITIVE_INT_FIELDS else 0
        kind = "positive" if minimum else "non-negative"
        hint = f"expected a {kind} integer like {cls.model_fields[field].default}"
        number = _checked(info, value, _integer, hint)
        if number < minimum:
            raise _invalid(info, repr(value), hint)
        if field == "cache_max_size" and number > MAX_CAPACITY:
            raise _invalid(info, repr(value), f"expected at most {MAX_CAPACITY}")
        return number

    @field_validator("rate_limit", "trusted_proxies", "admin_token", mode="before")
    @classmethod
    def _check_access(cls, value: object, info: ValidationInfo) -> str | SecretStr | None:
        field = str(info.field_name)
        if value is None:
            return None
        secret = field == "admin_token"
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        # A token is never shown: it may be a real one with a typo.
        shown = _MASK if secret else None
        checked = _checked(info, text, lambda v: check_access_setting(field, v), shown=shown)
        return SecretStr(checked) if secret else checked

    @field_validator("cache_enabled", "dashboard", mode="before")
    @classmethod
    def _check_bool(cls, value: object, info: ValidationInfo) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, str | int) else None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise _invalid(info, repr(value), _BOOL_HINT)

    @field_validator("retry_backoff_multiplier", mode="before")
    @classmethod
    def _check_multiplier(cls, value: object, info: ValidationInfo) -> float:
        return _checked(info, value, _multiplier, "expected a number >= 1 like 2.0")

    @field_validator("ml_service_url", mode="before")
    @classmethod
    def _check_http_url(cls, value: object, info: ValidationInfo) -> str:
        hint = "expected an http:// or https:// URL like http://localhost:8081"
        return _checked(info, value, _http_url, hint)

    @field_validator("redis_url", mode="before")
    @classmethod
    def _check_redis_url(cls, value: object, info: ValidationInfo) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # as in an env file: REDIS_URL= (unset)
        try:
            check_redis_url(value)
        except (TypeError, ValueError) as exc:
            shown = repr(mask_redis_url(value)) if isinstance(value, str) else repr(value)
            raise _invalid(info, shown, str(exc).partition(": ")[2]) from None
        assert isinstance(value, str)
        return value.strip()

    @field_validator("redis_key_prefix", mode="before")
    @classmethod
    def _check_key_prefix(cls, value: object, info: ValidationInfo) -> str:
        hint = "expected at most 100 printable characters without spaces, like pgcache:"
        return _checked(info, value, check_key_prefix, hint)

    @field_validator("redis_cache_ttls", mode="before")
    @classmethod
    def _check_cache_ttls(cls, value: object, info: ValidationInfo) -> str:
        ttls = _checked(info, value, parse_cache_ttls)
        return ",".join(f"{name}={format_duration(ttl)}" for name, ttl in ttls.items())

    @field_validator("database_url", mode="before")
    @classmethod
    def _check_database_url(cls, value: object, info: ValidationInfo) -> str | None:
        hint = (
            "expected a PostgreSQL URL like postgresql://user:password@localhost:5432/dbname"
            " or a conninfo like 'host=localhost dbname=app'"
        )
        if value is None:
            return None
        if not isinstance(value, str):
            raise _invalid(info, repr(value), hint)
        try:
            conninfo_to_dict(value)
        except ProgrammingError:
            # libpq's message can quote the string: never show it, the password is in there.
            raise _invalid(info, repr(mask_database_url(value)), hint) from None
        return value

    @model_validator(mode="after")
    def _check_idle_within_max(self) -> Self:
        if self.max_idle_database_conns > self.max_database_conns:
            raise _config_error(
                f"MAX_IDLE_DATABASE_CONNS={self.max_idle_database_conns} must not exceed"
                f" MAX_DATABASE_CONNS={self.max_database_conns}"
            )
        return self

    @field_serializer("database_url", when_used="json")
    def _mask_database_url_in_json(self, value: str | None) -> str | None:
        return None if value is None else mask_database_url(value)

    @field_serializer("redis_url", when_used="json")
    def _mask_redis_url_in_json(self, value: str | None) -> str | None:
        return None if value is None else mask_redis_url(value)

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """``Settings(**overrides)``, raising :class:`ConfigError` (one line per bad variable)."""
        try:
            return cls(**overrides)
        except ValidationError as error:
            raise ConfigError.from_validation_error(error) from None

    @classmethod
    def from_env_file(cls, path: str | Path, **overrides: Any) -> Self:
        """Settings from the ``.env``-format file ``path`` (environment variables still win).

        Raises ``FileNotFoundError`` if ``path`` does not exist, :class:`ConfigError`
        for a bad value.
        """
        env_file = Path(path)
        if not env_file.is_file():
            raise FileNotFoundError(f"env file {str(env_file)!r} does not exist")
        return cls.load(_env_file=env_file, **overrides)

    @classmethod
    def for_mode(cls, mode: Mode, **overrides: Any) -> Self:
        """Settings from the example file shipped for ``mode`` (environment variables still win).

        ``mode`` is one of ``development`` (small caches, short TTLs), ``production``
        (the defaults), ``performance`` (large caches, long TTLs, many connections)
        or ``debugging`` (tiny caches with TTLs of seconds, no retries). The working
        directory's ``.env`` is not read: the mode file takes its place.
        """
        if mode not in MODES:
            raise ConfigError([f"mode={mode!r}: expected one of {', '.join(MODES)}"])
        with as_file(files("pgcache") / "env" / f"{mode}.env.example") as path:
            return cls.from_env_file(path, **overrides)

    def rate_limit_per_second(self) -> float | None:
        """``RATE_LIMIT`` in requests per second (``None``: no rate limit)."""
        return None if self.rate_limit is None else parse_rate_limit(self.rate_limit)

    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        """``TRUSTED_PROXIES`` as networks (a single address is a /32 or /128 network)."""
        return parse_trusted_proxies(self.trusted_proxies)

    def redis_ttls(self) -> dict[str, timedelta]:
        """``REDIS_CACHE_TTLS`` as ``{cache name: TTL in Redis}`` (only the caches it names)."""
        return parse_cache_ttls(self.redis_cache_ttls)

    def describe(self) -> dict[str, str | None]:
        """Every variable by its environment name, as it would be written in a ``.env`` file.

        The database password is masked; ``DATABASE_URL`` is ``None`` when unset.
        """
        described: dict[str, str | None] = {}
        for field in type(self).model_fields:
            value = getattr(self, field)
            if field == "database_url":
                shown = None if value is None else mask_database_url(value)
            elif field == "redis_url":
                shown = None if value is None else mask_redis_url(value)
            elif isinstance(value, SecretStr):
                shown = _MASK
            elif value is None:
                shown = None
            elif isinstance(value, bool):
                shown = "true" if value else "false"
            elif isinstance(value, timedelta):
                shown = format_duration(value)
            else:
                shown = str(value)
            described[field.upper()] = shown
        return described

    def __str__(self) -> str:
        return "\n".join(
            f"{name}={'' if value is None else value}" for name, value in self.describe().items()
        )

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str):
                yield name, mask_database_url(value)
            elif name == "redis_url" and isinstance(value, str):
                yield name, mask_redis_url(value)
            else:
                yield name, value
