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

import ipaddress
import math
import re
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, Final, Literal, Self, get_args
from urllib.parse import urlsplit

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

from pgcache.caching.redis_url import check_redis_url, mask_redis_url
from pgcache.errors import CONFIG_ERROR_TYPE, ConfigError
from pgcache.keys import CACHE_NAMES, DEFAULT_KEY_PREFIX, check_key_prefix

Mode = Literal["development", "production", "performance", "debugging"]
MODES: Final[tuple[Mode, ...]] = get_args(Mode)

_DURATION_HINT: Final = "expected a duration like 15m, 900 or 1h30m"
_BOOL_HINT: Final = "expected a boolean: true/false, yes/no or 1/0"
_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})
_MASK: Final = "***"

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
_INTEGER_RE: Final = re.compile(r"[+-]?\d+")

# The most entries a pgcache.Cache holds (the Rust core's MAX_CAPACITY: a 32-bit index).
_CACHE_MAX_SIZE_LIMIT: Final = 4_294_966_972
_RATE_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE_LIMIT_RE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*")
_RATE_LIMIT_HINT: Final = "expected requests per second, minute or hour like 100/s or 6000/m"
_ADMIN_TOKEN_RE: Final = re.compile(r"[\x21-\x7e]{16,256}")
_ADMIN_TOKEN_HINT: Final = (
    "expected 16 to 256 printable ASCII characters without spaces, e.g. the output of "
    "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
)
_URL_PASSWORD_RE: Final = re.compile(r"(?i)([?&]password=)([^&#]*)")
_CONNINFO_PASSWORD_RE: Final = re.compile(r"(?i)(^|\s)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")


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


def parse_rate_limit(value: str) -> float:
    """Requests per second from ``RATE_LIMIT``'s form ``N/s``, ``N/m`` or ``N/h`` (``100/s``,
    ``6000/m``); ``ValueError`` for anything else or a rate of zero."""
    match = _RATE_LIMIT_RE.fullmatch(value)
    if match is None or float(match[1]) <= 0:
        raise ValueError(_RATE_LIMIT_HINT)
    return float(match[1]) / _RATE_UNITS[match[2]]


def parse_trusted_proxies(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The networks of ``TRUSTED_PROXIES``: addresses or CIDR blocks separated by commas."""
    networks = []
    for item in value.split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"{item.strip()!r} is not an IP address or network; expected addresses or "
                    "CIDR blocks separated by commas, like 10.0.0.0/8,127.0.0.1"
                ) from None
    return tuple(networks)


def _invalid(field: str, shown: str, hint: str) -> PydanticCustomError:
    """The one error for a bad variable: its name, its value, what is accepted."""
    return PydanticCustomError(
        CONFIG_ERROR_TYPE, "{message}", {"message": f"{field.upper()}={shown}: {hint}"}
    )


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
    "max_database_conns",
    "max_http_conns",
    "max_body_bytes",
    "max_client_conns",
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
        default=timedelta(seconds=5),
        description="longest feature query; the service also stops waiting for a connection"
        " and the query together after this plus its connection wait",
    )
    shutdown_timeout: timedelta = Field(
        default=timedelta(seconds=10),
        description="requests in flight get this long after SIGTERM or SIGINT, then are cancelled",
    )
    max_body_bytes: int = Field(default=65_536, description="largest request body (beyond it: 413)")
    max_client_conns: int = Field(
        default=1000,
        description="connections and requests in progress served at once (beyond it: 503)",
    )
    negative_cache_ttl: timedelta = Field(
        default=timedelta(seconds=5),
        description="an unknown query hash is answered 404 from memory for this long",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="bearer token of the operator endpoints (cache invalidation and deletion);"
        " unset: they answer 403",
    )
    rate_limit: str | None = Field(
        default=None,
        description="requests per client, like 100/s or 6000/m; unset: no rate limit",
    )
    rate_limit_burst: int | None = Field(
        default=None,
        description="requests a quiet client may make at once; unset: one second's worth",
    )
    trusted_proxies: str = Field(
        default="",
        description="addresses or networks of proxies whose X-Forwarded-For names the client",
    )

    @field_validator(*_DURATION_FIELDS, mode="before")
    @classmethod
    def _check_duration(cls, value: object, info: ValidationInfo) -> timedelta:
        field = str(info.field_name)
        try:
            if not isinstance(value, str | int | float | timedelta):
                raise ValueError
            duration = parse_duration(value)
        except ValueError:
            raise _invalid(field, repr(value), _DURATION_HINT) from None
        if duration <= timedelta(0):
            raise _invalid(field, repr(value), f"must be greater than zero; {_DURATION_HINT}")
        return duration

    @field_validator(*_POSITIVE_INT_FIELDS, *_NON_NEGATIVE_INT_FIELDS, mode="before")
    @classmethod
    def _check_count(cls, value: object, info: ValidationInfo) -> int:
        field = str(info.field_name)
        default = cls.model_fields[field].default
        minimum = 1 if field in _POSITIVE_INT_FIELDS else 0
        kind = "positive" if minimum else "non-negative"
        hint = f"expected a {kind} integer like {default}"
        if isinstance(value, str) and _INTEGER_RE.fullmatch(value.strip()):
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise _invalid(field, repr(value), hint)
        if number < minimum:
            raise _invalid(field, repr(value), hint)
        if field == "cache_max_size" and number > _CACHE_MAX_SIZE_LIMIT:
            raise _invalid(field, repr(value), f"expected at most {_CACHE_MAX_SIZE_LIMIT}")
        return number

    @field_validator("rate_limit_burst", mode="before")
    @classmethod
    def _check_burst(cls, value: object, info: ValidationInfo) -> int | None:
        hint = "expected a positive integer like 100 (unset: one second's worth)"
        if value is None:
            return None
        if isinstance(value, str) and _INTEGER_RE.fullmatch(value.strip()):
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise _invalid(str(info.field_name), repr(value), hint)
        if not 1 <= number <= 2**63 - 1:
            raise _invalid(str(info.field_name), repr(value), hint)
        return number

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _check_rate_limit(cls, value: object, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _invalid(str(info.field_name), repr(value), _RATE_LIMIT_HINT)
        try:
            parse_rate_limit(value)
        except ValueError:
            raise _invalid(str(info.field_name), repr(value), _RATE_LIMIT_HINT) from None
        return "".join(value.split())

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _check_trusted_proxies(cls, value: object, info: ValidationInfo) -> str:
        if not isinstance(value, str):
            raise _invalid(str(info.field_name), repr(value), "expected addresses or networks")
        try:
            networks = parse_trusted_proxies(value)
        except ValueError as exc:
            raise _invalid(str(info.field_name), repr(value), str(exc)) from None
        return ",".join(str(network) for network in networks)

    @field_validator("admin_token", mode="before")
    @classmethod
    def _check_admin_token(cls, value: object, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(text, str) or not _ADMIN_TOKEN_RE.fullmatch(text):
            # never show the value: it may be a real token with a typo
            raise _invalid(str(info.field_name), "***", _ADMIN_TOKEN_HINT)
        return SecretStr(text)

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
        raise _invalid(str(info.field_name), repr(value), _BOOL_HINT)

    @field_validator("retry_backoff_multiplier", mode="before")
    @classmethod
    def _check_multiplier(cls, value: object, info: ValidationInfo) -> float:
        hint = "expected a number >= 1 like 2.0"
        try:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError
            number = float(value)
        except ValueError:
            raise _invalid(str(info.field_name), repr(value), hint) from None
        if not (math.isfinite(number) and number >= 1):
            raise _invalid(str(info.field_name), repr(value), hint)
        return number

    @field_validator("ml_service_url", mode="before")
    @classmethod
    def _check_http_url(cls, value: object, info: ValidationInfo) -> str:
        hint = "expected an http:// or https:// URL like http://localhost:8081"
        if not isinstance(value, str):
            raise _invalid(str(info.field_name), repr(value), hint)
        url = value.strip()
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            _ = parts.port  # raises ValueError for a port that is not a number
        except ValueError:
            valid = False
        if not valid:
            raise _invalid(str(info.field_name), repr(value), hint)
        return url

    @field_validator("redis_url", mode="before")
    @classmethod
    def _check_redis_url(cls, value: object, info: ValidationInfo) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # as in an env file: REDIS_URL= (unset)
        try:
            check_redis_url(value)
        except (TypeError, ValueError) as exc:
            shown = repr(mask_redis_url(value)) if isinstance(value, str) else repr(value)
            raise _invalid(str(info.field_name), shown, str(exc).partition(": ")[2]) from None
        assert isinstance(value, str)
        return value.strip()

    @field_validator("redis_key_prefix", mode="before")
    @classmethod
    def _check_key_prefix(cls, value: object, info: ValidationInfo) -> str:
        try:
            return check_key_prefix(value)
        except (TypeError, ValueError):
            raise _invalid(
                str(info.field_name),
                repr(value),
                "expected at most 100 printable characters without spaces, like pgcache:",
            ) from None

    @field_validator("redis_cache_ttls", mode="before")
    @classmethod
    def _check_cache_ttls(cls, value: object, info: ValidationInfo) -> str:
        try:
            ttls = parse_cache_ttls(value)
        except ValueError as exc:
            raise _invalid(str(info.field_name), repr(value), str(exc)) from None
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
            raise _invalid(str(info.field_name), repr(value), hint)
        try:
            conninfo_to_dict(value)
        except ProgrammingError:
            # libpq's message can quote the string: never show it, the password is in there.
            raise _invalid(str(info.field_name), repr(mask_database_url(value)), hint) from None
        return value

    @model_validator(mode="after")
    def _check_idle_within_max(self) -> Self:
        if self.max_idle_database_conns > self.max_database_conns:
            raise PydanticCustomError(
                CONFIG_ERROR_TYPE,
                "{message}",
                {
                    "message": (
                        f"MAX_IDLE_DATABASE_CONNS={self.max_idle_database_conns} must not exceed"
                        f" MAX_DATABASE_CONNS={self.max_database_conns}"
                    )
                },
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

    def trusted_proxy_networks(
        self,
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
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
