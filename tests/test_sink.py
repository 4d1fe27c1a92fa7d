"""Unit tests of the sink's pure parts: documents from messages, rollup arithmetic, the batch
(ack only after the write), the retry loop, and the time-series decision."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from app import sink_docs as docs
from app.mongo import Retry, time_series_supported
from app.sink_batch import Batch
from tests.test_sink_data import enriched_stream

ENRICHED, ANOMALIES = enriched_stream(400)


# --- documents --------------------------------------------------------------------------------
def test_transaction_doc_has_id_dates_and_buckets() -> None:
    value = dict(ENRICHED[7], timestamp="2026-11-25T13:59:58.123456+02:00")
    doc = docs.transaction_doc(value)
    assert doc["_id"] == value["txn_id"] == doc["txn_id"]
    assert doc["timestamp"] == datetime(2026, 11, 25, 11, 59, 58, 123000, tzinfo=UTC)
    assert doc["day"] == "2026-11-25"
    assert doc["minute"] == datetime(2026, 11, 25, 11, 59, tzinfo=UTC)
    assert isinstance(doc["processed_at"], datetime)
    for field in ("amount", "user_txn_count", "user_running_mean", "z_score", "is_anomaly",
                  "user_daily_spend", "location"):
        assert doc[field] == value[field]


def test_anomaly_doc() -> None:
    doc = docs.anomaly_doc(ANOMALIES[0])
    assert doc["_id"] == ANOMALIES[0]["txn_id"]
    assert isinstance(doc["detected_at"], datetime) and doc["z_score"] > 3


@pytest.mark.parametrize("raw, reason", [
    (b"not json", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
])
def test_parse_json_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(docs.PoisonMessage, match=reason):
        docs.parse_json(raw)


@pytest.mark.parametrize("change, reason", [
    ({"txn_id": None}, "txn_id"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"timestamp": "2026-11-25T10:00:00"}, "UTC offset"),
    ({"processed_at": 17}, "processed_at"),
])
def test_transaction_doc_rejects(change: dict[str, object], reason: str) -> None:
    with pytest.raises(docs.PoisonMessage, match=reason):
        docs.transaction_doc({**ENRICHED[0], **change})


def test_dlq_doc_uses_the_original_coordinates() -> None:
    headers = {"dlq.reason": b"not valid JSON", "dlq.topic": b"p-transactions",
               "dlq.partition": b"3", "dlq.offset": b"41",
               "dlq.failed_at": b"2026-11-25T10:00:00+00:00"}
    doc = docs.dlq_doc(b"\xffbad", headers, "p-transactions_dlq", 0, 9, 1.0)
    assert doc["_id"] == "p-transactions:3:41"
    assert (doc["topic"], doc["partition"], doc["offset"]) == ("p-transactions", 3, 41)
    assert doc["reason"] == "not valid JSON"
    assert doc["failed_at"] == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert doc["original"] == "\ufffdbad"


def test_dlq_doc_without_headers_uses_its_own_coordinates() -> None:
    doc = docs.dlq_doc(b"x", {}, "p-transactions_dlq", 2, 5, 1_700_000_000.0)
    assert doc["_id"] == "p-transactions_dlq:2:5" and doc["reason"] == "unknown"
    assert doc["failed_at"] == datetime.fromtimestamp(1_700_000_000, UTC)


def test_dead_letter_doc() -> None:
    doc = docs.dead_letter_doc(b'{"a": 1}', "rejected", "p-anomalies", 1, 2)
    assert doc["_id"] == "p-anomalies:1:2" and doc["stage"] == "sink"
    assert doc["reason"] == "sink: rejected" and doc["original"] == '{"a": 1}'


# --- rollups ----------------------------------------------------------------------------------
amounts = st.lists(st.tuples(st.decimals(min_value="0.01", max_value="1000000", places=2),
                             st.booleans()), max_size=60)


@given(amounts, st.randoms())
def test_rollup_is_exact_and_order_free(items: list, rnd: object) -> None:
    value = None
    for amount, anomaly in items:
        value = docs.add_to_rollup(value, float(amount), anomaly)
    shuffled = list(items)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    other = None
    for amount, anomaly in shuffled:
        other = docs.add_to_rollup(other, float(amount), anomaly)
    expected_cents = sum(int(a * 100) for a, _ in items)
    if items:
        assert value == other
        assert value["count"] == len(items) and value["cents"] == expected_cents
        assert value["anomalies"] == sum(1 for _, a in items if a)
        _, _, numbers = docs.merchant_minute_doc("m", "books_media",
                                                 datetime(2026, 1, 1, tzinfo=UTC), value)
        assert docs.sum_rollups([numbers]) == value


def test_rollup_docs() -> None:
    minute = datetime(2026, 11, 25, 23, 14, tzinfo=UTC)
    value = {"count": 3, "cents": 1005, "anomalies": 1}
    _id, labels, numbers = docs.merchant_minute_doc("m-1", "grocery", minute, value)
    assert _id == "m-1|2026-11-25T23:14:00Z"
    assert labels == {"merchant_id": "m-1", "merchant_category": "grocery", "minute": minute}
    assert numbers == {"count": 3, "revenue": 10.05, "anomalies": 1}
    assert docs.volume_minute_doc(minute, value)[0] == "2026-11-25T23:14:00Z"
    assert docs.minute_of(datetime(2026, 1, 1, 5, 6, 7, 8, tzinfo=UTC)) == \
        datetime(2026, 1, 1, 5, 6, tzinfo=UTC)


# --- the time-series decision -----------------------------------------------------------------
def test_time_series_only_on_real_mongodb_5_and_later() -> None:
    assert time_series_supported({"version": "7.0.2", "versionArray": [7, 0, 2, 0]})
    assert time_series_supported({"versionArray": [5, 0, 0, 0]})
    assert not time_series_supported({"versionArray": [4, 4, 0, 0]})
    ferret = {"version": "7.0.42", "versionArray": [7, 0, 42, 0], "ferretdbVersion": "x"}
    assert not time_series_supported(ferret)


# --- the batch --------------------------------------------------------------------------------
class Log:
    def __init__(self) -> None:
        self.written: list[list[int]] = []
        self.acked: list[int] = []
        self.fail = 0

    async def write(self, items: list[int]) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("database broken")
        self.written.append(items)

    async def ack(self, events: list[int]) -> None:
        assert sum(map(len, self.written)) >= len(self.acked) + sum(1 for e in events if e >= 0)
        self.acked.extend(events)


async def test_batch_flushes_at_size_and_acks_after_the_write() -> None:
    log = Log()
    batch: Batch[int] = Batch("t", log.write, log.ack, max_size=3, max_seconds=60)
    for i in range(7):
        await batch.add(i, i)
    assert log.written == [[0, 1, 2], [3, 4, 5]] and log.acked == [0, 1, 2, 3, 4, 5]
    assert len(batch) == 1 and not batch.due()
    await batch.flush()
    assert log.acked == list(range(7)) and batch.flushed == 7


async def test_batch_time_bound_and_events_without_items() -> None:
    log = Log()
    batch: Batch[int] = Batch("t", log.write, log.ack, max_size=100, max_seconds=0.05)
    await batch.add(None, -1)  # nothing to write, acked with the batch
    await batch.add(5, 5)
    await batch.flush_if_due()
    assert log.acked == []
    await asyncio.sleep(0.06)
    await batch.flush_if_due()
    assert log.written == [[5]] and log.acked == [-1, 5]


async def test_a_failed_write_acks_nothing() -> None:
    log = Log()
    log.fail = 1
    batch: Batch[int] = Batch("t", log.write, log.ack, max_size=2, max_seconds=60)
    await batch.add(1, 1)
    with pytest.raises(RuntimeError):
        await batch.add(2, 2)
    assert log.acked == []


# --- the retry loop ---------------------------------------------------------------------------
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


def test_messages_round_trip_through_json() -> None:
    raw = orjson.dumps(ENRICHED[3])
    assert docs.transaction_doc(docs.parse_json(raw))["_id"] == ENRICHED[3]["txn_id"]
