"""The ``pgcache`` command: exit codes, ``config``, ``bench`` and the end-to-end ``demo``.

The demo runs as a real subprocess (``python -m pgcache demo`` with a small workload) against
a private PostgreSQL it starts itself; the tests check its summary and that it leaves no
process and no temporary directory behind, also when stopped by a signal.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli.demo_processes import (
    alive,
    demo_environment as _environment,
    empty_tmpdir,
    processes_mentioning,
    serving_demo,
    wait_until,
)

import pgcache
from pgcache.cli import bench as bench_module, exits, main

_SMALL_DEMO = ("demo", "--requests", "120", "--queries", "15", "--runs", "3")
_COMMANDS = ("serve", "ml-service", "config", "bench", "demo")


@pytest.fixture
def demo_tmpdir() -> Iterator[Path]:
    """An empty TMPDIR for the demo; readable by the unprivileged server user when root."""
    with empty_tmpdir() as path:
        yield path


def _pgcache(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgcache", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _server_pid(output: str) -> int:
    match = re.search(r"private server, pid (\d+)", output)
    assert match is not None, output
    return int(match[1])


# --- demo ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_run() -> Iterator[tuple[subprocess.CompletedProcess[str], Path]]:
    """One small demo run (shared by the tests that read its output), in its own TMPDIR."""
    with empty_tmpdir() as tmpdir:
        yield _pgcache(*_SMALL_DEMO, cwd=tmpdir, env=_environment(tmpdir)), tmpdir


def test_demo_exits_0(demo_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, _ = demo_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_demo_summary_reports_a_hit_rate_per_cache(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    output = demo_run[0].stdout
    assert "Cache hit rates" in output
    for cache in ("features", "predictions"):
        assert re.search(rf"{cache}\s.*\d+\.\d %", output), cache
    features = re.search(r"features\s+│\s*[\d,]+\s*│\s*[\d,]+\s*│\s*(\d+\.\d) %", output)
    assert features is not None, output
    assert float(features[1]) > 50.0


def test_demo_summary_reports_latency_savings_and_the_metrics_json(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    output = demo_run[0].stdout
    assert "uncached" in output
    assert "DB queries saved" in output
    assert "ML calls saved" in output
    assert "ML retries" in output
    assert '"overall_hit_rate"' in output


def test_demo_leaves_no_server_process_behind(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, tmpdir = demo_run
    pid = _server_pid(result.stdout)
    assert not alive(pid)
    assert processes_mentioning(str(tmpdir)) == []


def test_demo_leaves_no_temporary_directory_behind(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, tmpdir = demo_run
    data_dir = re.search(r"data directory (\S+)", result.stdout)
    assert data_dir is not None, result.stdout
    assert data_dir[1].startswith(str(tmpdir))
    assert not Path(data_dir[1]).exists()
    assert list(tmpdir.iterdir()) == []


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_serve_stopped_by_a_signal_removes_everything(
    stop_signal: signal.Signals, demo_tmpdir: Path
) -> None:
    with serving_demo(_SMALL_DEMO, demo_tmpdir, _environment(demo_tmpdir)) as (process, output):
        assert "/api/v1/metrics/cache" in output, output
        pid = _server_pid(output)
        assert alive(pid)
        process.send_signal(stop_signal)
        # Generous: on a loaded machine the shutdown (pool, services, PostgreSQL) can take
        # seconds; it normally takes half of one.
        _, errors = process.communicate(timeout=90)
    assert process.returncode == 0, errors

    def everything_gone() -> bool:
        return (
            not alive(pid)
            and processes_mentioning(str(demo_tmpdir)) == []
            and list(demo_tmpdir.iterdir()) == []
        )

    wait_until(everything_gone, timeout=10)
    assert not alive(pid)
    assert processes_mentioning(str(demo_tmpdir)) == []
    assert list(demo_tmpdir.iterdir()) == []


def test_demo_with_an_unreachable_database_exits_1_with_one_clear_message(
    tmp_path: Path,
) -> None:
    env = _environment(DATABASE_URL="postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2")
    result = _pgcache(*_SMALL_DEMO, cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("pgcache demo: ")
    assert "DATABASE_URL" in result.stderr


# --- config -------------------------------------------------------------------------------------


def test_config_with_a_bad_variable_exits_2_naming_it(tmp_path: Path) -> None:
    result = _pgcache(
        "config", cwd=tmp_path, env=_environment(FEATURE_CACHE_TTL="15 minutes"), timeout=30
    )
    assert result.returncode == 2
    assert "FEATURE_CACHE_TTL" in result.stderr
    assert "15 minutes" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_config_prints_every_variable_with_the_password_masked(tmp_path: Path) -> None:
    url = "postgresql://app:s3cret@db.example/app"
    result = _pgcache("config", cwd=tmp_path, env=_environment(DATABASE_URL=url), timeout=30)
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    assert "DATABASE_URL=postgresql://app:***@db.example/app" in result.stdout
    assert "FEATURE_CACHE_TTL=15m" in result.stdout


def test_config_reads_the_env_file_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "service.env"
    env_file.write_text("CACHE_MAX_SIZE=1234\n")
    assert main(["config", "--env-file", str(env_file)]) == 0
    assert "CACHE_MAX_SIZE=1234" in capsys.readouterr().out


def test_config_with_a_missing_env_file_exits_2_with_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.env"
    result = _pgcache("config", "--env-file", str(missing), cwd=tmp_path, env=_environment())
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("pgcache config: --env-file: ")
    assert str(missing) in result.stderr
    assert result.stdout == ""


# --- help and usage -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [(), *((name,) for name in _COMMANDS)])
def test_help_exits_0_for_every_command(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--help"]) == 0
    assert "usage: pgcache" in capsys.readouterr().out


def test_help_of_the_installed_module_exits_0(tmp_path: Path) -> None:
    result = _pgcache("--help", cwd=tmp_path, env=_environment(), timeout=30)
    assert result.returncode == 0
    for name in _COMMANDS:
        assert name in result.stdout


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = _pgcache("--version", cwd=tmp_path, env=_environment(), timeout=30)
    assert result.returncode == 0
    assert result.stdout == f"pgcache {pgcache.__version__}\n"


@pytest.mark.parametrize("command", ["serve", "ml-service"])
def test_an_unknown_log_level_is_a_usage_error_listing_the_choices(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--log-level", "verbose"]) == 2
    error = capsys.readouterr().err
    assert "--log-level" in error
    assert "'verbose'" in error
    for level in ("critical", "error", "warning", "info", "debug", "trace"):
        assert level in error


@pytest.mark.parametrize("command", ["serve", "ml-service"])
def test_an_unknown_log_format_is_a_usage_error(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--log-format", "xml"]) == 2
    assert "--log-format" in capsys.readouterr().err


def test_bench_help_shows_percent_signs_once(tmp_path: Path) -> None:
    result = _pgcache("bench", "--help", cwd=tmp_path, env=_environment(), timeout=30)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "80% of them on 20% of the keys" in text
    assert "%%" not in result.stdout


def test_every_exit_code_is_listed_once_in_the_exits_docstring() -> None:
    table = exits.__doc__ or ""
    codes = [value for name, value in vars(exits).items() if name.startswith("EXIT_")]
    assert sorted(codes) == [0, 1, 2, 130]
    for code in codes:
        assert len(re.findall(rf"^{code}\s", table, re.MULTILINE)) == 1, code


def test_a_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_a_bad_option_value_is_a_usage_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


# --- bench --------------------------------------------------------------------------------------


def test_bench_with_tiny_sizes_prints_the_dashboard(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--threads", "4", "--requests", "50", "--keys", "20"]) == 0
    output = capsys.readouterr().out
    for measure in ("throughput", "latency p50", "latency p99", "evictions", "RSS growth"):
        assert measure in output
    for cache in ("features", "predictions", "fingerprints", "explain_plans", "anomalies"):
        assert re.search(rf"{cache}\s.*\d+\.\d %", output), cache


def test_bench_with_more_keys_than_room_reports_evictions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["bench", "--threads", "2", "--requests", "500", "--keys", "400", "--max-size", "10"]
    assert main(args) == 0
    evictions = re.search(r"evictions\s*│\s*([\d,]+)", capsys.readouterr().out)
    assert evictions is not None
    assert int(evictions[1].replace(",", "")) > 0


def test_bench_throughput_comes_from_the_run_not_from_the_progress_poll(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A poll far longer than the run: a throughput measured with it would show it.
    monkeypatch.setattr(bench_module, "PROGRESS_INTERVAL", 30.0)
    assert main(["bench", "--threads", "2", "--requests", "500", "--keys", "20"]) == 0
    output = capsys.readouterr().out
    lookups = re.search(r"^│ lookups\s+│\s+([\d,]+) │", output, re.MULTILINE)
    elapsed = re.search(r"^│ elapsed\s+│\s+([\d.]+) s │", output, re.MULTILINE)
    throughput = re.search(r"^│ throughput\s+│\s+([\d,]+) lookups/s │", output, re.MULTILINE)
    assert lookups is not None, output
    assert elapsed is not None, output
    assert throughput is not None, output
    assert int(lookups[1].replace(",", "")) == 1000
    assert 0 < float(elapsed[1]) < 30.0
    assert float(throughput[1].replace(",", "")) == pytest.approx(
        1000 / float(elapsed[1]), rel=0.01
    )


# --- Ctrl-C -------------------------------------------------------------------------------------


def _interrupt_once_working(
    args: tuple[str, ...], working: bytes, cwd: Path, env: dict[str, str]
) -> tuple[int, str]:
    """Run ``pgcache *args``, read its output until ``working`` shows, send SIGINT, and return
    (exit code, stderr). The output is a terminal's (rich draws its progress bars)."""
    env = {**env, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "pgcache", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        try:
            assert process.stdout is not None
            seen = b""
            while working not in seen:
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
            assert working in seen, seen[-3000:]
            process.send_signal(signal.SIGINT)
            _, errors = process.communicate(timeout=90)
        finally:
            if process.poll() is None:
                process.kill()
    return process.returncode, errors.decode()


def test_ctrl_c_in_bench_prints_one_line_and_exits_130(tmp_path: Path) -> None:
    args = ("bench", "--threads", "8", "--requests", "100000000", "--keys", "1000")
    code, errors = _interrupt_once_working(args, b"lookups", tmp_path, _environment())
    assert errors == "pgcache bench: interrupted\n"
    assert code == 130


def test_ctrl_c_in_demo_traffic_prints_one_line_and_exits_130(demo_tmpdir: Path) -> None:
    args = ("demo", "--requests", "1000000", "--queries", "15", "--runs", "3")
    code, errors = _interrupt_once_working(
        args, b"HTTP requests", demo_tmpdir, _environment(demo_tmpdir)
    )
    assert errors == "pgcache demo: interrupted\n"
    assert "Traceback" not in errors
    assert code == 130
