"""AsyncSingleFlight and ThreadSingleFlight: one running load per key, shared by concurrent
callers (asyncio tasks, threads)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pgcache.caching.singleflight import AsyncSingleFlight, ThreadSingleFlight


class _Counter:
    """A coroutine factory that counts its calls and waits on a gate before returning."""

    def __init__(self, result: str = "value", error: Exception | None = None) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.result = result
        self.error = error

    async def __call__(self) -> str:
        self.calls += 1
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.result


async def _settle() -> None:
    """Let every ready task run up to its next await."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_fifty_concurrent_callers_share_one_call_and_its_result() -> None:
    flight: AsyncSingleFlight[str, str] = AsyncSingleFlight()
    load = _Counter("shared")
    callers = [asyncio.create_task(flight.run("k", load)) for _ in range(50)]
    await _settle()
    load.gate.set()
    results = await asyncio.gather(*callers)
    assert load.calls == 1
    assert results == ["shared"] * 50


async def test_different_keys_run_separately() -> None:
    flight: AsyncSingleFlight[int, str] = AsyncSingleFlight()
    load = _Counter()
    callers = [asyncio.create_task(flight.run(key, load)) for key in (1, 2, 3)]
    await _settle()
    assert len(flight) == 3
    load.gate.set()
    await asyncio.gather(*callers)
    assert load.calls == 3


async def test_every_concurrent_caller_gets_the_one_exception() -> None:
    flight: AsyncSingleFlight[str, str] = AsyncSingleFlight()
    error = ValueError("extraction failed")
    load = _Counter(error=error)
    callers = [asyncio.create_task(flight.run("k", load)) for _ in range(10)]
    await _settle()
    load.gate.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert load.calls == 1
    assert all(outcome is error for outcome in outcomes)


async def test_an_error_is_not_remembered() -> None:
    flight: AsyncSingleFlight[str, str] = AsyncSingleFlight()
    failing = _Counter(error=ValueError("boom"))
    failing.gate.set()
    with pytest.raises(ValueError, match="boom"):
        await flight.run("k", failing)
    working = _Counter("recovered")
    working.gate.set()
    assert await flight.run("k", working) == "recovered"
    assert working.calls == 1


async def test_a_finished_flight_is_forgotten_so_the_next_call_runs_again() -> None:
    flight: AsyncSingleFlight[str, str] = AsyncSingleFlight()
    load = _Counter()
    load.gate.set()
    await flight.run("k", load)
    await flight.run("k", load)
    assert load.calls == 2
    assert len(flight) == 0


async def test_a_synchronous_error_of_the_factory_reaches_the_caller() -> None:
    flight: AsyncSingleFlight[str, str] = AsyncSingleFlight()

    def factory() -> asyncio.Future[str]:
        raise KeyError("no coroutine")

    with pytest.raises(KeyError, match="no coroutine"):
        await flight.run("k", factory)
    assert len(flight) == 0


async def test_cancelling_one_caller_does_not_cancel_the_work_for_the_others() -> None:
    flight: AsyncSingleFlight[str, str] = AsyncSingleFlight()
    load = _Counter("survived")
    cancelled = asyncio.create_task(flight.run("k", load))
    waiting = asyncio.create_task(flight.run("k", load))
    await _settle()
    cancelled.cancel()
    await _settle()
    load.gate.set()
    assert await waiting == "survived"
    assert cancelled.cancelled()
    assert load.calls == 1


async def test_cancelling_every_caller_cancels_the_shared_work() -> None:
    flight: AsyncSingleFlight[str, str] = AsyncSingleFlight()
    started = asyncio.Event()
    work_cancelled = asyncio.Event()

    async def slow() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            work_cancelled.set()
            raise
        return "never"

    caller = asyncio.create_task(flight.run("k", slow))
    await started.wait()
    caller.cancel()
    await asyncio.wait_for(work_cancelled.wait(), timeout=10)
    assert caller.cancelled()
    assert len(flight) == 0


async def test_a_call_after_every_caller_was_cancelled_starts_new_work() -> None:
    flight: AsyncSingleFlight[str, str] = AsyncSingleFlight()
    first = _Counter("first")
    caller = asyncio.create_task(flight.run("k", first))
    await _settle()
    caller.cancel()
    await asyncio.gather(caller, return_exceptions=True)
    second = _Counter("second")
    second.gate.set()
    assert await flight.run("k", second) == "second"
    assert (first.calls, second.calls) == (1, 1)


async def test_an_unhashable_key_raises_type_error_before_calling_the_factory() -> None:
    flight: AsyncSingleFlight[object, str] = AsyncSingleFlight()
    load = _Counter()
    with pytest.raises(TypeError, match="unhashable"):
        await flight.run(["not", "hashable"], load)
    assert load.calls == 0


def test_one_instance_serves_two_event_loops_in_two_threads() -> None:
    flight: AsyncSingleFlight[str, str] = AsyncSingleFlight()
    both_started = threading.Barrier(2, timeout=10)
    results: list[str] = []

    async def load() -> str:
        # Both loops are inside a flight for "k" at the same time; neither may join the other.
        await asyncio.to_thread(both_started.wait)
        return threading.current_thread().name

    def run_loop() -> None:
        results.append(asyncio.run(flight.run("k", load)))

    threads = [threading.Thread(target=run_loop, name=f"loop-{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == ["loop-0", "loop-1"]


# --- ThreadSingleFlight ----------------------------------------------------------------------


def test_a_load_asking_for_its_own_key_raises_runtime_error() -> None:
    flight = ThreadSingleFlight()
    with pytest.raises(RuntimeError, match="asked for the same key again"):
        flight.run("k", lambda: flight.run("k", lambda: "inner"))


def test_a_thread_load_error_propagates_and_is_not_remembered() -> None:
    flight = ThreadSingleFlight()

    def failing() -> str:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        flight.run("k", failing)
    assert flight.run("k", lambda: "recovered") == "recovered"
