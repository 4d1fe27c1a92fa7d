"""``agents.sink.retry``: waits through an outage, logs rarely, never hides data errors; its
writer threads never hold up the end of the process."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from agents.sink.retry import Retry, WriterThread


async def test_retry_waits_through_an_outage_and_logs_rarely(
        caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def call() -> str:
        calls.append(1)
        if len(calls) < 8:
            raise (AutoReconnect if len(calls) % 2 else ServerSelectionTimeoutError)("down")
        return "written"

    retry = Retry("test docs", min_seconds=0.001, max_seconds=0.004, log_every=60)
    with caplog.at_level(logging.WARNING, logger="app.sink"):
        assert await retry.run(call, holding=5) == "written"
    assert len(calls) == 8 and retry.failures == 7
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # the first failure, then "back": not one line per attempt
    assert "holding 5 documents" in messages[0] and "is back" in messages[1]


async def test_retry_does_not_hide_data_errors() -> None:
    def call() -> None:
        raise ValueError("bad document")

    with pytest.raises(ValueError):
        await Retry("x", min_seconds=0.001).run(call)


async def test_the_writer_thread_runs_calls_in_order_and_never_holds_up_an_exit() -> None:
    writer = WriterThread("test-writer")
    seen: list[tuple[int, str]] = []

    def call(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * 2

    loop = asyncio.get_running_loop()
    results = await asyncio.gather(*(loop.run_in_executor(writer, call, n) for n in range(5)))
    assert results == [0, 2, 4, 6, 8] and [n for n, _ in seen] == list(range(5))
    assert {name for _, name in seen} == {"test-writer"}
    assert writer._thread is not None and writer._thread.daemon
    with pytest.raises(ZeroDivisionError):
        await loop.run_in_executor(writer, lambda: 1 / 0)
    assert await loop.run_in_executor(writer, call, 6) == 12  # still running after an error
