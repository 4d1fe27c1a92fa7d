"""``agents.sink.crash``: an unexpected error in a sink agent or task ends the process at once
(no ack after it), a stop is cancelled normally, and a stop has a deadline."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from agents.sink import crash
from agents.sink.documents import Entry
from agents.sink.mongo import InsertResult
from agents.sink.writer import MongoSink


class Exited(BaseException):
    """Stands in for the end of the process (``os._exit``)."""


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited(code)

    monkeypatch.setattr(crash.os, "_exit", fake_exit)
    return codes


async def test_an_unexpected_error_exits_with_70_and_logs_it(
        exits: list[int], caplog: pytest.LogCaptureFixture) -> None:
    @crash.crash_only
    async def agent(stream: Any) -> None:
        raise KeyError("a bug")

    with caplog.at_level(logging.CRITICAL, logger="app.sink"), pytest.raises(Exited):
        await agent(None)
    assert exits == [crash.EXIT_CODE] == [70]
    (record,) = caplog.records
    assert "KeyError" in record.getMessage() and "agent" in record.getMessage()
    assert record.exc_info is not None


async def test_a_cancellation_and_a_normal_end_pass_through(exits: list[int]) -> None:
    @crash.crash_only
    async def task(value: int) -> int:
        if value < 0:
            raise asyncio.CancelledError
        return value * 2

    assert await task(21) == 42
    with pytest.raises(asyncio.CancelledError):
        await task(-1)
    assert exits == []
    assert task.__name__ == "task"  # Faust names agents after the function


async def test_a_failed_write_in_an_agent_exits_before_any_ack(exits: list[int]) -> None:
    """The agent's batch write fails for a reason that is not an outage: the process exits,
    nothing of the batch is acked, and the batch still holds it (until the process ends)."""
    acked: list[Any] = []

    class Store:
        async def insert(self, collection: str, batch: list[Entry]) -> InsertResult:
            raise RuntimeError("the database refused the command")

        async def record_batch(self, *args: Any) -> None:
            raise AssertionError("not reached")

    async def ack(events: Sequence[Any]) -> None:
        acked.extend(events)

    writer = MongoSink(Store(), "t", ack, max_size=2, max_seconds=60)  # type: ignore[arg-type]

    @crash.crash_only
    async def store_agent(stream: list[int]) -> None:
        for offset in stream:
            await writer.add([Entry({"_id": str(offset)}, b"{}", "t", 0, offset)], [offset])

    with pytest.raises(Exited):
        await store_agent([1, 2, 3])
    assert exits == [70] and acked == [] and writer.batch.events == [1, 2]


def test_a_stop_has_a_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    codes: list[int] = []
    done = threading.Event()

    def fake_exit(code: int) -> None:
        codes.append(code)
        done.set()

    monkeypatch.setattr(crash.os, "_exit", fake_exit)
    timer = crash.arm_stop_deadline(0.05)
    assert timer.daemon  # never holds up the end of the process itself
    assert done.wait(5) and codes == [0]
