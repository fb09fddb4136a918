"""``pgcache demo --instances 2`` as a real subprocess, and the demo's operator token.

The demo starts a private PostgreSQL and a private ``redis-server`` itself (the test run's
``REDIS_URL``, ``DATABASE_URL`` and ``ADMIN_TOKEN`` are taken out of its environment), two
``pgcache serve`` processes and the reference ML service. The tests read its summary and check
that the figures come from the instances' counters (they agree with PostgreSQL's own count of
feature queries), that the second instance's cold requests were L2 hits, that an invalidation
sent to instance 1 was honoured by instance 2, and that nothing it started outlives it, also
when ``--serve`` is stopped by a signal. Nothing here asserts on a time.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.cli.demo_processes import (
    alive,
    demo_environment,
    empty_tmpdir,
    processes_mentioning,
    serving_demo,
    wait_until,
)

pytestmark = pytest.mark.slow

_TWO_INSTANCES = (
    "demo", "--instances", "2", "--requests", "160", "--queries", "15", "--runs", "3",
)  # fmt: skip
_SMALL_DEMO = ("demo", "--requests", "60", "--queries", "15", "--runs", "3")
# Generous: on a loaded machine two service processes, PostgreSQL and Redis take a while.
_RUN_TIMEOUT = 600
_TOKEN_LINE = re.compile(r"Operator token \(ADMIN_TOKEN, random for this run\): (\S+)")
_INSTANCE = re.compile(r"(\d+): (http://127\.0\.0\.1:\d+) \(pid (\d+)\)")


def _row(output: str, label: str) -> list[int]:
    """The figures of the summary row ``label``, one per instance."""
    match = re.search(rf"│ {re.escape(label)}\s*│([^\n]*)│\s*$", output, re.MULTILINE)
    assert match is not None, f"no row {label!r} in:\n{output}"
    return [int(cell.strip().replace(",", "")) for cell in match[1].split("│")]


def _value(output: str, label: str) -> int:
    (value,) = _row(output, label)
    return value


def _pids(output: str) -> list[int]:
    """The processes the demo said it started: PostgreSQL, redis-server, both instances."""
    pids = [int(m[1]) for m in re.finditer(r"private server, pid (\d+)", output)]
    assert len(pids) == 2, output
    instances = [int(m[3]) for m in _INSTANCE.finditer(output)]
    assert len(instances) == 2, output
    return pids + instances


def _everything_gone(pids: list[int], tmpdir: Path) -> bool:
    return (
        not any(alive(pid) for pid in pids)
        and processes_mentioning(str(tmpdir)) == []
        and list(tmpdir.iterdir()) == []
    )


@pytest.fixture(scope="module")
def two_instances() -> Iterator[tuple[subprocess.CompletedProcess[str], Path]]:
    """One run of ``pgcache demo --instances 2`` (shared by the tests reading its output)."""
    with empty_tmpdir() as tmpdir:
        result = subprocess.run(
            [sys.executable, "-m", "pgcache", *_TWO_INSTANCES],
            cwd=tmpdir,
            env=demo_environment(tmpdir),
            capture_output=True,
            text=True,
            timeout=_RUN_TIMEOUT,
            check=False,
        )
        yield result, tmpdir


@pytest.mark.timeout(_RUN_TIMEOUT + 60)
def test_two_instances_exit_0(two_instances: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, _ = two_instances
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(_RUN_TIMEOUT + 60)
def test_second_instance_cold_requests_are_l2_hits(
    two_instances: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    output = two_instances[0].stdout
    first, second = _row(output, "features: L2 hits (Redis)")
    assert first == 0
    assert second > 0
    assert _row(output, "predictions: L2 hits (Redis)")[1] > 0


@pytest.mark.timeout(_RUN_TIMEOUT + 60)
def test_second_instance_reads_the_database_less_and_calls_the_ml_service_less(
    two_instances: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    output = two_instances[0].stdout
    first, second = _row(output, "features: DB reads (loads)")
    assert second < first
    ml_first, ml_second = _row(output, "ML calls (pgcache_ml_calls)")
    assert ml_second < ml_first


@pytest.mark.timeout(_RUN_TIMEOUT + 60)
def test_summary_figures_agree_with_the_counters_and_with_postgresql(
    two_instances: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    output = two_instances[0].stdout
    loads = _row(output, "features: DB reads (loads)")
    assert _value(output, "DB reads by all instances (their loads)") == sum(loads)
    # PostgreSQL's own count of the feature query: a figure the instances did not produce.
    assert _value(output, "DB reads counted by PostgreSQL (pg_stat_statements)") == sum(loads)
    assert (
        _value(output, "DB reads saved (feature L2 hits)")
        == (_row(output, "features: L2 hits (Redis)")[1])
    )
    assert _row(output, "ML calls (pgcache_ml_calls)") == _row(output, "predictions: loads")
    # Every feature lookup of an instance was an L1 hit, an L2 hit or a load.
    answered = _row(output, "HTTP requests answered")
    assert answered == [80, 80]
    lookups = [
        sum(counts)
        for counts in zip(
            _row(output, "features: L1 hits"),
            _row(output, "features: L2 hits (Redis)"),
            loads,
            strict=True,
        )
    ]
    assert lookups == answered


@pytest.mark.timeout(_RUN_TIMEOUT + 60)
def test_an_invalidation_sent_to_one_instance_is_honoured_by_the_other(
    two_instances: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    output = two_instances[0].stdout
    match = re.search(
        r"honoured by instance 2: (\d+) of (\d+);.*p50 [\d.]+ ms, max [\d.]+ ms; "
        r"\d+ answers with the old value after the POST returned "
        r"\((\d+) invalidation messages applied\)",
        output,
    )
    assert match is not None, output
    honoured, samples, applied = map(int, match.groups())
    assert honoured == samples > 0
    assert applied >= samples


@pytest.mark.timeout(_RUN_TIMEOUT + 60)
def test_two_instances_leave_no_process_and_no_directory_behind(
    two_instances: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, tmpdir = two_instances
    pids = _pids(result.stdout)
    redis_directory = re.search(r"Redis: private server, pid \d+, directory (\S+),", result.stdout)
    assert redis_directory is not None, result.stdout
    assert redis_directory[1].startswith(str(tmpdir))
    assert wait_until(lambda: _everything_gone(pids, tmpdir), timeout=30)


def test_an_unreachable_redis_url_exits_1_with_one_line_naming_it() -> None:
    with empty_tmpdir() as tmpdir:
        env = demo_environment(tmpdir, REDIS_URL="redis://:secret@127.0.0.1:1/0")
        result = subprocess.run(
            [sys.executable, "-m", "pgcache", *_TWO_INSTANCES],
            cwd=tmpdir, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stderr.startswith("pgcache demo: REDIS_URL redis://")
        assert result.stderr.count("\n") == 1
        assert "secret" not in result.stdout + result.stderr
        assert "PostgreSQL" not in result.stdout  # nothing was started
        assert list(tmpdir.iterdir()) == []


def test_more_instances_than_the_demo_starts_is_a_usage_error_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pgcache.cli import main

    assert main(["demo", "--instances", "9"]) == 2
    assert "--instances: expected a number of instances from 1 to 8, got '9'" in (
        capsys.readouterr().err
    )


# --- the operator token, and --serve stopped by a signal -----------------------------------------


def _invalidate(url: str, token: str | None) -> int:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = httpx.post(
        f"{url}/api/v1/cache/invalidate", json={"cache": "features"}, headers=headers, timeout=30
    )
    return response.status_code


@pytest.mark.timeout(_RUN_TIMEOUT + 60)
def test_demo_serve_prints_a_random_operator_token_that_the_service_accepts() -> None:
    with (
        empty_tmpdir() as tmpdir,
        serving_demo(_SMALL_DEMO, tmpdir, demo_environment(tmpdir)) as (_, output),
    ):
        token = _TOKEN_LINE.search(output)
        assert token is not None, output
        assert len(token[1]) >= 32  # secrets.token_urlsafe(32): 43 characters
        dashboard = re.search(r"Dashboard \(live, in a browser\): (\S+)/dashboard\n", output)
        assert dashboard is not None, output
        assert output.index("Dashboard") < output.index("Operator token")
        url = dashboard[1]
        assert _invalidate(url, token[1]) == 200
        assert _invalidate(url, None) == 401
        assert _invalidate(url, token[1] + "x") == 403
        assert f"-H 'Authorization: Bearer {token[1]}'" in output  # the curl to paste


@pytest.mark.timeout(_RUN_TIMEOUT + 60)
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_two_instances_serve_with_the_configured_token_and_stop_cleanly_on_a_signal(
    stop_signal: signal.Signals,
) -> None:
    configured = "demo-test-token-0123456789abcdef"
    with empty_tmpdir() as tmpdir:
        env = demo_environment(tmpdir, ADMIN_TOKEN=configured)
        with serving_demo(_TWO_INSTANCES, tmpdir, env) as (process, output):
            assert "Operator token: ADMIN_TOKEN from the environment" in output, output
            assert configured not in output
            assert _TOKEN_LINE.search(output) is None
            pids = _pids(output)
            urls = [m[2] for m in _INSTANCE.finditer(output)]
            for url in urls:
                assert _invalidate(url, configured) == 200
                assert _invalidate(url, "another-token-0123456789abcdef") == 403
            process.send_signal(stop_signal)
            _, errors = process.communicate(timeout=120)
            assert process.returncode == 0, errors
        assert wait_until(lambda: _everything_gone(pids, tmpdir), timeout=30)
