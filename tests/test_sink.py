"""Unit tests of the sink's pure parts: documents from messages, rollup arithmetic, the batch
(ack only after the write), the retry loop, and the time-series decision."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from app import sink_docs as docs
from app.mongo import Retry, time_series_supported
from app.sink_batch import Batch
from tables.rollups import CACHE_MINUTES, Countable, RollupState, countable
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


# --- the rollup state: replays never count twice ----------------------------------------------
MINUTES = [datetime(2026, 11, 25, 23, m, tzinfo=UTC) for m in range(3)]
streams = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["m-a", "m-b", "m-c"]),
                             st.integers(0, 2), st.integers(1, 10_000), st.booleans()),
                   max_size=80)


def _items(stream: list) -> list[Countable]:
    """Countables of a stream: (partition, merchant, minute, cents, anomaly), offsets in order
    per partition."""
    next_offset = [0, 0, 0]
    items = []
    for partition, merchant, minute, cents, anomaly in stream:
        items.append(Countable(merchant, "grocery", MINUTES[minute], cents, int(anomaly),
                               partition, next_offset[partition]))
        next_offset[partition] += 1
    return items


def _written(state: RollupState, items: list[Countable],
             store: dict[tuple[str, str], dict[str, list[int]]]) -> None:
    """One flush as agents/rollups.py does it, with ``store`` as the database."""
    for key, labels in state.missing(items).items():
        state.load(key, labels, store.get(key))
    changed = state.apply(items)
    for key, (row, parts) in changed.items():
        store.setdefault(key, {}).update({p: list(row.parts[p]) for p in parts})
    state.commit(changed)


@given(streams, st.lists(st.integers(0, 80), max_size=6), st.randoms())
def test_rollup_rows_are_exact_under_redelivery_and_restarts(stream: list, cuts: list,
                                                              rnd: object) -> None:
    items = _items(stream)
    expected: dict[tuple[str, str], list[int]] = {}
    for item in items:
        for key in ((docs.MERCHANT_MINUTE, f"{item.merchant_id}|{docs.minute_id(item.minute)}"),
                    (docs.VOLUME_MINUTE, docs.minute_id(item.minute))):
            row = expected.setdefault(key, [0, 0, 0])
            row[0] += 1
            row[1] += item.cents
            row[2] += item.anomaly
    store: dict[tuple[str, str], dict[str, list[int]]] = {}
    state = RollupState()
    done = 0
    for cut in sorted(cuts):
        # a flush up to ``cut``, then a crash: the process restarts with an empty cache and
        # reads again from an earlier point (what was written stays written)
        _written(state, items[:cut], store)
        done = max(done, cut)
        state = RollupState() if rnd.random() < 0.5 else state  # type: ignore[attr-defined]
    _written(state, items[rnd.randint(0, done):], store)  # type: ignore[attr-defined]
    got = {key: [sum(p[i] for p in parts.values()) for i in range(3)]
           for key, parts in store.items()}
    assert {k: v for k, v in got.items() if v[0]} == expected
    for key, row in state.rows.items():
        assert row.totals() == dict(zip(("count", "cents", "anomalies"), got[key], strict=True))


def test_countable_needs_a_merchant_and_a_number() -> None:
    doc = docs.transaction_doc(dict(ENRICHED[0]))
    item = countable(doc, 3, 17)
    assert item is not None and (item.partition, item.offset) == (3, 17)
    assert item.cents == round(ENRICHED[0]["amount"] * 100) and item.minute == doc["minute"]
    assert countable({**doc, "amount": "12"}, 0, 0) is None
    assert countable({**doc, "merchant_id": None}, 0, 0) is None


def test_rows_far_behind_leave_the_cache() -> None:
    state = RollupState()
    late = Countable("m", "grocery", MINUTES[0], 100, 0, 0, 0)
    now = Countable("m", "grocery", MINUTES[0] + timedelta(minutes=CACHE_MINUTES + 1), 100, 0, 0,
                    1)
    for item in (late, now):
        for key, labels in state.missing([item]).items():
            state.load(key, labels, None)
        state.commit(state.apply([item]))
    assert len(state.rows) == 2  # the late rows left; the new merchant and volume rows stay
    assert state.missing([late])


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


async def test_a_rebalance_forgets_the_cached_rows_and_the_revoked_items() -> None:
    from faust.types import TP

    from agents import rollups
    from app.topics import enriched_raw

    topic = enriched_raw.get_topic_name()
    mine = Countable("m", "grocery", MINUTES[0], 100, 0, 1, 5)
    theirs = Countable("m", "grocery", MINUTES[0], 100, 0, 2, 5)
    rollups.STATE.load((docs.VOLUME_MINUTE, "x"), {"minute": MINUTES[0]}, None)
    rollups.hold([mine, theirs])
    try:
        await rollups.forget_rows(None, {TP(topic, 2), TP("other", 1)})
        assert rollups._items == [mine] and not rollups.STATE.rows
    finally:
        rollups._items.clear()


async def test_batch_add_many_flushes_every_max_size_events() -> None:
    written: list[list[int]] = []
    acked: list[list[int]] = []

    async def write(items: list[int]) -> None:
        written.append(items)

    async def ack(events: list[int]) -> None:
        acked.append(list(events))

    batch: Batch[int] = Batch("t", write, ack, max_size=4, max_seconds=60)
    await batch.add_many([1, 2, 3], [1, 2, 3])
    await batch.add_many(list(range(4, 12)), list(range(4, 12)))
    assert written == [[1, 2, 3, 4], [5, 6, 7, 8]] and acked == written
    assert batch.items == [9, 10, 11] and len(batch) == 3


async def test_a_failed_rollup_write_keeps_everything_held(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from agents import rollups

    acked: list[object] = []

    async def ack(events: list[object]) -> None:
        acked.extend(events)

    async def fails(items: list[Countable], exclusive: bool) -> None:
        raise RuntimeError("no")

    item = Countable("m", "grocery", MINUTES[0], 100, 0, 1, 5)
    monkeypatch.setattr(rollups, "write_rollups", fails)
    rollups.hold([item])
    await rollups.hold_events(ack, ["e1"])
    try:
        with pytest.raises(RuntimeError):
            await rollups.flush()
        assert rollups._items == [item] and rollups._held[0] == 1 and not acked
    finally:
        rollups._items.clear()
        rollups._events.clear()
        rollups._held[0] = 0


def test_rollup_writes_back_off_when_they_get_slow() -> None:
    from agents.rollups import FLUSH_SECONDS, WRITE_SHARE, pause_after

    assert pause_after(0.0) == pause_after(0.5) == FLUSH_SECONDS
    for took in (2.0, 5.0, 30.0):
        pause = pause_after(took)
        assert pause >= FLUSH_SECONDS
        assert took / (took + pause) <= WRITE_SHARE + 1e-9
