"""Two OS processes sharing one Redis: what one loads is an L2 hit in the other, and what one
invalidates the other stops serving (tests.support.redis.instance_main is each process)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Instance:
    """One process running tests.support.redis.instance_main, driven line by line."""

    def __init__(self, url: str, prefix: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from tests.support.redis import instance_main; instance_main()",
             url, prefix],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def wait_ready(self) -> None:
        assert json.loads(self._line()) == {"ready": True}

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the instance exited with {self.process.wait(10)}"
        return line

    def ask(self, op: str, key: object = None, value: object = None) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, "key": key, "value": value}) + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self._line())
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        try:
            assert self.process.wait(30) == 0
        finally:
            self.process.stdout.close()


@pytest.fixture(scope="module")
def instances(redis_url: str) -> Iterator[tuple[Instance, Instance]]:
    """Two processes on one namespace, started side by side (each test uses its own keys)."""
    prefix = f"pgcache-test-{uuid.uuid4().hex[:12]}:"
    first, second = Instance(redis_url, prefix), Instance(redis_url, prefix)
    try:
        first.wait_ready()
        second.wait_ready()
        yield first, second
    finally:
        first.close()
        second.close()


def _until(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_load_in_one_process_is_an_l2_hit_in_the_other(
    instances: tuple[Instance, Instance],
) -> None:
    first, second = instances
    assert first.ask("load", -42, "plan of -42")["loads"] == 1
    answer = second.ask("load", -42, "another plan")
    assert answer["answer"] == "plan of -42"
    assert (answer["loads"], answer["l2_hits"]) == (0, 1)


def test_an_invalidation_in_one_process_is_honoured_by_the_other(
    instances: tuple[Instance, Instance],
) -> None:
    first, second = instances
    first.ask("load", 7, "old plan")
    assert second.ask("get", 7)["answer"] == "old plan"
    assert first.ask("delete", 7)["answer"] is True
    assert _until(lambda: second.ask("status", 7)["answer"] == {"l1": None})
    assert second.ask("load", 7, "new plan")["answer"] == "new plan"
