"""``agents.sink.retry``: waits through an outage, logs rarely, never hides data errors."""

from __future__ import annotations

import logging

import pytest
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from agents.sink.retry import Retry


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
