"""Specification of pgcache.config: Settings from the environment, durations, errors, mode files.

Every test runs in an empty temporary directory (no stray ``.env``) with none of the
pgcache variables set, whatever the calling shell exports.
"""

from __future__ import annotations

import json
import pickle
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, strategies as st
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

import pgcache
from pgcache.config import (
    MODES,
    ConfigError,
    Mode,
    Settings,
    format_duration,
    mask_database_url,
    parse_duration,
)

DEFAULTS: dict[str, Any] = {
    "cache_enabled": True,
    "cache_max_size": 10_000,
    "cache_max_bytes": 64 * 1024 * 1024,
    "cache_policy": "tinylfu",
    "feature_cache_ttl": timedelta(minutes=15),
    "prediction_cache_ttl": timedelta(minutes=5),
    "fingerprint_cache_ttl": timedelta(minutes=10),
    "explain_plan_cache_ttl": timedelta(minutes=30),
    "anomaly_cache_ttl": timedelta(minutes=5),
    "cache_cleanup_interval": timedelta(seconds=1),
    "database_url": None,
    "max_database_conns": 50,
    "max_idle_database_conns": 15,
    "database_conn_max_lifetime": timedelta(minutes=5),
    "database_conn_max_idle_time": timedelta(minutes=10),
    "ml_service_url": "http://localhost:8081",
    "ml_service_timeout": timedelta(seconds=5),
    "max_http_conns": 10,
    "max_http_conns_per_host": 5,
    "http_idle_conn_timeout": timedelta(seconds=90),
    "http_dial_timeout": timedelta(seconds=30),
    "retry_max_attempts": 3,
    "retry_backoff_multiplier": 2.0,
    "retry_initial_backoff": timedelta(milliseconds=100),
    "redis_url": None,
    "redis_key_prefix": "pgcache:",
    "redis_socket_timeout": timedelta(milliseconds=250),
    "redis_connect_timeout": timedelta(seconds=1),
    "redis_cache_ttls": "",
    "dashboard": True,
    "database_statement_timeout": timedelta(seconds=5),
    "shutdown_timeout": timedelta(seconds=10),
    "max_body_bytes": 65_536,
    "max_client_conns": 1000,
    "negative_cache_ttl": timedelta(seconds=5),
    "admin_token": None,
    "rate_limit": None,
    "rate_limit_burst": None,
    "trusted_proxies": "",
}
VARIABLES = [name.upper() for name in DEFAULTS]
DURATION_VARIABLES = [name.upper() for name, value in DEFAULTS.items() if type(value) is timedelta]
SECRET = "s3cr3t-pa55"
DURATION_HINT = "expected a duration like 15m, 900 or 1h30m"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(variable.lower(), raising=False)
    monkeypatch.chdir(tmp_path)


# --- defaults and sources ------------------------------------------------------------------------


def test_settings_has_exactly_the_contract_variables() -> None:
    assert list(Settings.model_fields) == list(DEFAULTS)


@pytest.mark.parametrize(("attribute", "default"), DEFAULTS.items())
def test_default_of_every_variable(attribute: str, default: object) -> None:
    assert getattr(Settings(), attribute) == default


@pytest.mark.parametrize(
    ("variable", "text", "expected"),
    [
        ("CACHE_ENABLED", "false", False),
        ("CACHE_MAX_SIZE", "500", 500),
        ("CACHE_MAX_BYTES", "1048576", 1_048_576),
        ("FEATURE_CACHE_TTL", "20m", timedelta(minutes=20)),
        ("PREDICTION_CACHE_TTL", "1m", timedelta(minutes=1)),
        ("FINGERPRINT_CACHE_TTL", "2m", timedelta(minutes=2)),
        ("EXPLAIN_PLAN_CACHE_TTL", "1h", timedelta(hours=1)),
        ("ANOMALY_CACHE_TTL", "45s", timedelta(seconds=45)),
        ("CACHE_CLEANUP_INTERVAL", "250ms", timedelta(milliseconds=250)),
        ("DATABASE_URL", "postgresql://app@db:5433/app", "postgresql://app@db:5433/app"),
        ("MAX_DATABASE_CONNS", "80", 80),
        ("MAX_IDLE_DATABASE_CONNS", "4", 4),
        ("DATABASE_CONN_MAX_LIFETIME", "1h", timedelta(hours=1)),
        ("DATABASE_CONN_MAX_IDLE_TIME", "2m", timedelta(minutes=2)),
        ("ML_SERVICE_URL", "https://ml.internal:9000", "https://ml.internal:9000"),
        ("ML_SERVICE_TIMEOUT", "2.5s", timedelta(seconds=2.5)),
        ("MAX_HTTP_CONNS", "20", 20),
        ("MAX_HTTP_CONNS_PER_HOST", "8", 8),
        ("HTTP_IDLE_CONN_TIMEOUT", "2m", timedelta(minutes=2)),
        ("HTTP_DIAL_TIMEOUT", "3s", timedelta(seconds=3)),
        ("RETRY_MAX_ATTEMPTS", "0", 0),
        ("RETRY_BACKOFF_MULTIPLIER", "1.5", 1.5),
        ("RETRY_INITIAL_BACKOFF", "20ms", timedelta(milliseconds=20)),
    ],
)
def test_every_variable_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, expected: object
) -> None:
    monkeypatch.setenv(variable, text)
    assert getattr(Settings(), variable.lower()) == expected


def test_environment_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("Cache_Max_Size", "123")
    assert Settings().cache_max_size == 123


def test_empty_environment_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURE_CACHE_TTL", "")
    monkeypatch.setenv("DATABASE_URL", "")
    settings = Settings()
    assert settings.feature_cache_ttl == timedelta(minutes=15)
    assert settings.database_url is None


def test_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CACHE_MAX_SIZE=777\nFEATURE_CACHE_TTL=2m\n")
    settings = Settings()
    assert (settings.cache_max_size, settings.feature_cache_ttl) == (777, timedelta(minutes=2))


def test_dotenv_file_may_hold_variables_of_other_tools(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LOG_LEVEL=debug\nCACHE_MAX_SIZE=777\n")
    assert Settings().cache_max_size == 777


def test_environment_variable_wins_over_dotenv_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("CACHE_MAX_SIZE=777\n")
    monkeypatch.setenv("CACHE_MAX_SIZE", "888")
    assert Settings().cache_max_size == 888


def test_keyword_argument_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_MAX_SIZE", "888")
    assert Settings(cache_max_size=5).cache_max_size == 5


def test_keyword_arguments_take_python_values() -> None:
    settings = Settings(
        feature_cache_ttl=timedelta(seconds=42),
        prediction_cache_ttl=7.5,  # type: ignore[arg-type]  # seconds, converted by the validator
    )
    assert settings.feature_cache_ttl == timedelta(seconds=42)
    assert settings.prediction_cache_ttl == timedelta(seconds=7.5)


def test_load_returns_the_same_settings_as_the_constructor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANOMALY_CACHE_TTL", "1m")
    assert Settings.load(cache_max_size=9) == Settings(cache_max_size=9)


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100ms", timedelta(milliseconds=100)),
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2h45m30.5s", timedelta(hours=2, minutes=45, seconds=30.5)),
        ("1m0s", timedelta(minutes=1)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        (".5s", timedelta(milliseconds=500)),
        ("250us", timedelta(microseconds=250)),
        ("250\u00b5s", timedelta(microseconds=250)),  # micro sign
        ("250\u03bcs", timedelta(microseconds=250)),  # Greek mu
        ("5000ns", timedelta(microseconds=5)),
        ("1500ns", timedelta(microseconds=2)),  # rounded to timedelta's microsecond
        ("+5s", timedelta(seconds=5)),
        ("-5s", timedelta(seconds=-5)),
        ("900", timedelta(minutes=15)),
        ("0.5", timedelta(milliseconds=500)),
        ("  15m  ", timedelta(minutes=15)),
    ],
)
def test_parse_duration_reads_go_style_strings_and_seconds(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (900, timedelta(minutes=15)),
        (0.1, timedelta(milliseconds=100)),
        (timedelta(minutes=3), timedelta(minutes=3)),
    ],
)
def test_parse_duration_takes_numbers_of_seconds_and_timedeltas(
    value: float | timedelta, expected: timedelta
) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "text",
    ["100ms", "90s", "15m", "1h30m", "1.5h", "250us", "250\u00b5s", "900", "0.5", "1h0m0.25s"],
)
def test_every_duration_format_is_accepted_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("FEATURE_CACHE_TTL", text)
    assert Settings().feature_cache_ttl == parse_duration(text)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "15 minutes",
        "m",
        "ms",
        "15M",
        "1d",
        "5 s",
        "1h-1m",
        "1..5s",
        "1e3",
        "nan",
        float("nan"),
        float("inf"),
        True,
        None,
        [1],
    ],
)
def test_parse_duration_rejects_what_is_not_a_duration(value: Any) -> None:
    with pytest.raises(ValueError, match=DURATION_HINT):
        parse_duration(value)


def test_parse_duration_rejects_a_duration_too_large_for_timedelta() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_duration("99999999999h")


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(milliseconds=100), "100ms"),
        (timedelta(microseconds=250), "250us"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(minutes=15), "15m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(hours=26), "26h"),
        (timedelta(seconds=-5), "-5s"),
    ],
)
def test_format_duration_writes_the_shortest_go_style_text(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


@given(st.timedeltas(min_value=timedelta(days=-10_000), max_value=timedelta(days=10_000)))
def test_format_duration_reads_back_as_the_same_duration(duration: timedelta) -> None:
    assert parse_duration(format_duration(duration)) == duration


# --- bad values: one error naming the variable, the value and what is accepted ------------------

BAD_VALUES: list[tuple[str, str, str]] = [
    *((variable, "15 minutes", DURATION_HINT) for variable in DURATION_VARIABLES),
    *(
        (variable, "0s", f"must be greater than zero; {DURATION_HINT}")
        for variable in DURATION_VARIABLES
    ),
    ("FEATURE_CACHE_TTL", "-5m", f"must be greater than zero; {DURATION_HINT}"),
    ("FEATURE_CACHE_TTL", "0", f"must be greater than zero; {DURATION_HINT}"),
    ("CACHE_ENABLED", "maybe", "expected a boolean: true/false, yes/no or 1/0"),
    ("CACHE_ENABLED", "2", "expected a boolean: true/false, yes/no or 1/0"),
    ("CACHE_MAX_SIZE", "ten", "expected a positive integer like 10000"),
    ("CACHE_MAX_SIZE", "0", "expected a positive integer like 10000"),
    ("CACHE_MAX_SIZE", "-1", "expected a positive integer like 10000"),
    ("CACHE_MAX_SIZE", "1.5", "expected a positive integer like 10000"),
    ("CACHE_MAX_BYTES", "64MiB", "expected a positive integer like 67108864"),
    ("CACHE_MAX_BYTES", "0", "expected a positive integer like 67108864"),
    ("MAX_DATABASE_CONNS", "0", "expected a positive integer like 50"),
    ("MAX_IDLE_DATABASE_CONNS", "-1", "expected a non-negative integer like 15"),
    ("MAX_HTTP_CONNS", "0", "expected a positive integer like 10"),
    ("MAX_HTTP_CONNS_PER_HOST", "few", "expected a non-negative integer like 5"),
    ("RETRY_MAX_ATTEMPTS", "-1", "expected a non-negative integer like 3"),
    ("RETRY_BACKOFF_MULTIPLIER", "0.5", "expected a number >= 1 like 2.0"),
    ("RETRY_BACKOFF_MULTIPLIER", "fast", "expected a number >= 1 like 2.0"),
    ("RETRY_BACKOFF_MULTIPLIER", "nan", "expected a number >= 1 like 2.0"),
    (
        "ML_SERVICE_URL",
        "localhost:8081",
        "expected an http:// or https:// URL like http://localhost:8081",
    ),
    (
        "ML_SERVICE_URL",
        "http://ml:port",
        "expected an http:// or https:// URL like http://localhost:8081",
    ),
]


@pytest.mark.parametrize(("variable", "value", "hint"), BAD_VALUES)
def test_bad_value_stops_load_with_one_error_naming_variable_and_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, hint: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert str(caught.value) == f"{variable}={value!r}: {hint}"


@pytest.mark.parametrize(("variable", "value", "hint"), BAD_VALUES)
def test_bad_value_makes_the_constructor_raise_a_validation_error_with_the_same_text(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, hint: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert f"{variable}={value!r}: {hint}" in str(caught.value)


def test_issue_example_message_for_a_bad_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURE_CACHE_TTL", "15 minutes")
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert str(caught.value) == (
        "FEATURE_CACHE_TTL='15 minutes': expected a duration like 15m, 900 or 1h30m"
    )


def test_idle_connections_above_the_maximum_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_DATABASE_CONNS", "10")
    monkeypatch.setenv("MAX_IDLE_DATABASE_CONNS", "11")
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert str(caught.value) == "MAX_IDLE_DATABASE_CONNS=11 must not exceed MAX_DATABASE_CONNS=10"


def test_idle_connections_equal_to_the_maximum_are_accepted() -> None:
    settings = Settings(max_database_conns=10, max_idle_database_conns=10)
    assert settings.max_idle_database_conns == 10


def test_several_bad_values_give_one_error_with_a_line_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEATURE_CACHE_TTL", "soon")
    monkeypatch.setenv("CACHE_MAX_SIZE", "big")
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert sorted(caught.value.problems) == [
        "CACHE_MAX_SIZE='big': expected a positive integer like 10000",
        f"FEATURE_CACHE_TTL='soon': {DURATION_HINT}",
    ]
    assert str(caught.value) == "\n".join(caught.value.problems)


def test_bad_database_url_is_reported_with_its_password_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db/app?nosuchoption=1")
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    message = str(caught.value)
    assert message.startswith("DATABASE_URL='postgresql://app:***@db/app?nosuchoption=1': expected")
    assert SECRET not in message


def test_validation_error_never_shows_the_database_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db/app?nosuchoption=1")
    monkeypatch.setenv("CACHE_MAX_SIZE", "0")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("cache_max_size", True),
        ("cache_max_size", 2.5),
        ("feature_cache_ttl", True),
        ("feature_cache_ttl", -1),
        ("cache_enabled", "on-ish"),
        ("database_url", 5432),
    ],
)
def test_bad_keyword_argument_is_an_error_naming_its_variable(attribute: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(**{attribute: value})
    assert str(caught.value).startswith(f"{attribute.upper()}={value!r}: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("1", True),
        ("false", False),
        ("No", False),
        ("0", False),
    ],
)
def test_booleans_accept_true_false_yes_no_one_zero(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: bool
) -> None:
    monkeypatch.setenv("CACHE_ENABLED", text)
    assert Settings().cache_enabled is expected


def test_config_error_is_a_value_error_and_a_pgcache_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, pgcache.PgCacheError)


def test_config_error_survives_pickling() -> None:
    error = ConfigError(["CACHE_MAX_SIZE='0': expected a positive integer like 10000"])
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.problems, str(copy)) == (ConfigError, error.problems, str(error))


# --- mode files ----------------------------------------------------------------------------------

MODE_VALUES: dict[str, dict[str, Any]] = {
    "development": {
        "cache_max_size": 1_000,
        "feature_cache_ttl": timedelta(minutes=1),
        "prediction_cache_ttl": timedelta(seconds=30),
        "fingerprint_cache_ttl": timedelta(minutes=1),
        "explain_plan_cache_ttl": timedelta(minutes=2),
        "anomaly_cache_ttl": timedelta(seconds=30),
        "max_database_conns": 10,
        "max_idle_database_conns": 2,
        "ml_service_timeout": timedelta(seconds=10),
        "retry_max_attempts": 1,
    },
    "production": {name: value for name, value in DEFAULTS.items() if name != "database_url"},
    "performance": {
        "cache_max_size": 100_000,
        "feature_cache_ttl": timedelta(hours=1),
        "prediction_cache_ttl": timedelta(minutes=30),
        "fingerprint_cache_ttl": timedelta(hours=1),
        "explain_plan_cache_ttl": timedelta(hours=2),
        "anomaly_cache_ttl": timedelta(minutes=30),
        "cache_cleanup_interval": timedelta(seconds=5),
        "max_database_conns": 100,
        "max_idle_database_conns": 50,
        "max_http_conns": 100,
        "max_http_conns_per_host": 50,
    },
    "debugging": {
        "cache_enabled": True,
        "cache_max_size": 100,
        "feature_cache_ttl": timedelta(seconds=10),
        "prediction_cache_ttl": timedelta(seconds=5),
        "anomaly_cache_ttl": timedelta(seconds=5),
        "cache_cleanup_interval": timedelta(milliseconds=500),
        "max_database_conns": 5,
        "ml_service_timeout": timedelta(seconds=60),
        "retry_max_attempts": 0,
    },
}


def _mode_file_lines(mode: str) -> list[str]:
    path = Path(pgcache.__file__).parent / "env" / f"{mode}.env.example"
    return path.read_text(encoding="utf-8").splitlines()


def _stated_values(mode: str) -> dict[str, str]:
    lines = [line for line in _mode_file_lines(mode) if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_modes_are_the_four_the_original_documents() -> None:
    assert MODES == ("development", "production", "performance", "debugging")


@pytest.mark.parametrize("mode", MODES)
def test_mode_file_loads_with_the_values_it_is_meant_to_have(mode: Mode) -> None:
    settings = Settings.for_mode(mode)
    assert {name: getattr(settings, name) for name in MODE_VALUES[mode]} == MODE_VALUES[mode]


@pytest.mark.parametrize("mode", MODES)
def test_mode_file_gives_every_value_it_states(mode: Mode) -> None:
    settings = Settings.for_mode(mode)
    stated_values = _stated_values(mode).items()
    # An empty variable counts as unset, in a file as in the environment.
    stated = Settings.load(**{name.lower(): text for name, text in stated_values if text})
    assert settings == stated


@pytest.mark.parametrize("mode", MODES)
def test_mode_file_sets_every_variable_once(mode: str) -> None:
    lines = [line for line in _mode_file_lines(mode) if line and not line.startswith("#")]
    assert sorted(line.split("=", 1)[0] for line in lines) == sorted(VARIABLES)


@pytest.mark.parametrize("mode", MODES)
def test_mode_file_documents_every_variable_with_a_comment_above_it(mode: str) -> None:
    lines = _mode_file_lines(mode)
    undocumented = [
        line
        for previous, line in zip(["", *lines], lines, strict=False)
        if line and not line.startswith("#") and not previous.startswith("# ")
    ]
    assert undocumented == []


def test_modes_scale_from_debugging_to_performance() -> None:
    ordered = [Settings.for_mode(mode) for mode in ("debugging", "development", "production")]
    ordered.append(Settings.for_mode("performance"))
    sizes = [settings.cache_max_size for settings in ordered]
    ttls = [settings.feature_cache_ttl for settings in ordered]
    connections = [settings.max_database_conns for settings in ordered]
    assert sizes == sorted(set(sizes))
    assert ttls == sorted(set(ttls))
    assert connections == sorted(set(connections))


def test_environment_variable_wins_over_mode_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_MAX_SIZE", "4242")
    assert Settings.for_mode("production").cache_max_size == 4242


def test_keyword_argument_wins_over_mode_file() -> None:
    assert Settings.for_mode("development", retry_max_attempts=7).retry_max_attempts == 7


def test_mode_file_replaces_the_working_directory_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CACHE_MAX_SIZE=777\n")
    assert Settings.for_mode("production").cache_max_size == 10_000


def test_unknown_mode_is_an_error_listing_the_modes() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.for_mode("staging")  # type: ignore[arg-type]
    assert str(caught.value) == (
        "mode='staging': expected one of development, production, performance, debugging"
    )


def test_from_env_file_reads_the_given_file(tmp_path: Path) -> None:
    env_file = tmp_path / "service.env"
    env_file.write_text("# a comment\nPREDICTION_CACHE_TTL=42s\n")
    assert Settings.from_env_file(env_file).prediction_cache_ttl == timedelta(seconds=42)


def test_from_env_file_with_a_missing_file_says_which(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    with pytest.raises(FileNotFoundError) as caught:
        Settings.from_env_file(missing)
    assert str(caught.value) == f"env file {str(missing)!r} does not exist"


def test_from_env_file_with_a_bad_value_raises_config_error(tmp_path: Path) -> None:
    env_file = tmp_path / "service.env"
    env_file.write_text("ANOMALY_CACHE_TTL=5 minutes\n")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env_file(env_file)
    assert str(caught.value) == f"ANOMALY_CACHE_TTL='5 minutes': {DURATION_HINT}"


# --- printing, with the database password masked -------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:secret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgres://app:secret@db/app", "postgres://app:***@db/app"),
        ("postgresql://app:p@ss/w:rd@db/app", "postgresql://app:***@ss/w:rd@db/app"),
        ("postgresql://app:p%40ss@db/app", "postgresql://app:***@db/app"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("postgresql://db/app?password=secret&x=1", "postgresql://db/app?password=***&x=1"),
        ("host=db user=app password=secret dbname=app", "host=db user=app password=*** dbname=app"),
        ("host=db password = 'se cret' dbname=app", "host=db password = *** dbname=app"),
        ("password=secret host=db", "password=*** host=db"),
        ("host=db dbname=app", "host=db dbname=app"),
    ],
)
def test_mask_database_url_hides_the_password(url: str, masked: str) -> None:
    assert mask_database_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{SECRET}@db:5432/app",
        f"host=db user=app password={SECRET} dbname=app",
    ],
)
def test_printing_settings_never_shows_the_password(url: str) -> None:
    settings = Settings(database_url=url)
    printed = [
        str(settings),
        repr(settings),
        settings.model_dump_json(),
        json.dumps(settings.describe()),
    ]
    assert [SECRET in text for text in printed] == [False] * 4
    assert all("***" in text for text in printed)


def test_database_url_attribute_keeps_the_password_for_connecting() -> None:
    url = f"postgresql://app:{SECRET}@db:5432/app"
    assert Settings(database_url=url).database_url == url


def test_describe_lists_every_variable_as_written_in_an_env_file() -> None:
    assert Settings(database_url="postgresql://app:pw@db/app").describe() == {
        "CACHE_ENABLED": "true",
        "CACHE_MAX_SIZE": "10000",
        "CACHE_MAX_BYTES": "67108864",
        "CACHE_POLICY": "tinylfu",
        "FEATURE_CACHE_TTL": "15m",
        "PREDICTION_CACHE_TTL": "5m",
        "FINGERPRINT_CACHE_TTL": "10m",
        "EXPLAIN_PLAN_CACHE_TTL": "30m",
        "ANOMALY_CACHE_TTL": "5m",
        "CACHE_CLEANUP_INTERVAL": "1s",
        "DATABASE_URL": "postgresql://app:***@db/app",
        "MAX_DATABASE_CONNS": "50",
        "MAX_IDLE_DATABASE_CONNS": "15",
        "DATABASE_CONN_MAX_LIFETIME": "5m",
        "DATABASE_CONN_MAX_IDLE_TIME": "10m",
        "ML_SERVICE_URL": "http://localhost:8081",
        "ML_SERVICE_TIMEOUT": "5s",
        "MAX_HTTP_CONNS": "10",
        "MAX_HTTP_CONNS_PER_HOST": "5",
        "HTTP_IDLE_CONN_TIMEOUT": "1m30s",
        "HTTP_DIAL_TIMEOUT": "30s",
        "RETRY_MAX_ATTEMPTS": "3",
        "RETRY_BACKOFF_MULTIPLIER": "2.0",
        "RETRY_INITIAL_BACKOFF": "100ms",
        "REDIS_URL": None,
        "REDIS_KEY_PREFIX": "pgcache:",
        "REDIS_SOCKET_TIMEOUT": "250ms",
        "REDIS_CONNECT_TIMEOUT": "1s",
        "REDIS_CACHE_TTLS": "",
        "DASHBOARD": "true",
        "DATABASE_STATEMENT_TIMEOUT": "5s",
        "SHUTDOWN_TIMEOUT": "10s",
        "MAX_BODY_BYTES": "65536",
        "MAX_CLIENT_CONNS": "1000",
        "NEGATIVE_CACHE_TTL": "5s",
        "ADMIN_TOKEN": None,
        "RATE_LIMIT": None,
        "RATE_LIMIT_BURST": None,
        "TRUSTED_PROXIES": "",
    }


def test_str_is_an_env_file_that_loads_back_to_the_same_settings(tmp_path: Path) -> None:
    settings = Settings.for_mode("debugging", database_url=None)
    env_file = tmp_path / "printed.env"
    env_file.write_text(str(settings))
    assert Settings.from_env_file(env_file) == settings


def test_top_level_package_exports_settings_and_parse_duration() -> None:
    assert pgcache.Settings is Settings
    assert pgcache.parse_duration is parse_duration
    assert pgcache.ConfigError is ConfigError


def test_the_original_name_of_the_fingerprints_ttl_is_still_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUERY_RESULTS_CACHE_TTL", "7m")
    assert Settings().fingerprint_cache_ttl == timedelta(minutes=7)


def test_the_fingerprints_ttl_is_read_under_its_own_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINGERPRINT_CACHE_TTL", "8m")
    assert Settings().fingerprint_cache_ttl == timedelta(minutes=8)


@pytest.mark.parametrize(
    "url",
    [
        "host=db application_name=https://x password=secret",
        "host=db sslrootcert=file:///etc/ssl/root.crt password=secret",
        "postgresql://app@db/app?%70assword=secret",
        "postgresql://app@db/app?sslmode=disable&password=secret",
        "postgresql://app:secret@db/app?application_name=x",
        "host=db password='secret'",
    ],
)
def test_every_spelling_libpq_reads_as_a_password_is_masked(url: str) -> None:
    masked = mask_database_url(url)
    assert "secret" not in masked
    assert conninfo_to_dict(masked)["password"] == "***"


def test_masking_keeps_every_other_parameter() -> None:
    url = "host=db application_name=https://x password=secret dbname=app"
    parameters = conninfo_to_dict(mask_database_url(url))
    assert parameters == {
        "host": "db",
        "application_name": "https://x",
        "password": "***",
        "dbname": "app",
    }
