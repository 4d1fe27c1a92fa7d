"""``agents.sink.agents``: the wiring that needs no broker (the rebalance handler, the
partition check without a consumer, nothing connected on import), every message to an entry
(a dead letter when its data cannot become a document, nothing broader), keys as bytes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from faust.exceptions import KeyDecodeError
from faust.types import TP, Message

from agents.sink import agents
from agents.sink import documents as docs
from agents.sink.crash import crash_only
from agents.sink.rollups import Countable, Rollups
from app.contract import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC
from app.main import app, sink_app
from app.topics import anomalies_raw, dlq_raw, enriched_raw
from tests.sink_data import enriched_stream

ENRICHED, _ = enriched_stream(3)

MINUTE = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


async def test_a_rebalance_forgets_the_cached_rows_and_the_revoked_items(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rollups = Rollups(None)
    monkeypatch.setattr(agents, "sink", lambda: agents.Sink(None, rollups))
    topic = enriched_raw.get_topic_name()
    mine = Countable("m", "grocery", MINUTE, 100, 0, 1, 5, "EUR", 93, "USD")
    theirs = Countable("m", "grocery", MINUTE, 100, 0, 2, 5, "EUR", 93, "USD")
    rollups.state.load(("volume_hours", "x"), {"minutes.00.p1": MINUTE}, None)
    rollups.items.extend([mine, theirs])
    await agents.forget_rows(None, {TP(topic, 2), TP("other", 1)})
    assert rollups.items == [mine] and not rollups.state.parts


def test_without_a_consumer_the_rows_count_as_shared() -> None:
    assert agents.Exclusive()() is False


def test_the_sink_is_declared_on_the_sink_app_only() -> None:
    names = {agent.name for agent in sink_app.agents.values()}
    assert {"store_transactions", "store_anomalies", "store_dlq"} <= \
        {name.rsplit(".", 1)[-1] for name in names}
    assert not any("agents.sink" in name for name in app.agents)
    assert agents.sink.cache_info().currsize == 0  # nothing made (connected) on import


def message(value: bytes | None, key: bytes | None = b"user-1", offset: int = 7,
            headers: Any = None, timestamp: float = 1_795_600_800.0) -> Message:
    return Message("p-transactions_enriched", 2, offset, timestamp, 0, headers, key, value,
                   None)


def transaction(m: Message, raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    return docs.transaction(raw)


def test_a_valid_message_becomes_its_document() -> None:
    raw = orjson.dumps(ENRICHED[0])
    entry = agents._entry(message(raw), transaction)
    assert entry.doc is not None and entry.doc["_id"] == ENRICHED[0]["txn_id"]
    assert entry.doc["txn"].encode() == raw  # the compact document, and the counted fields
    assert entry.fields is not None and entry.fields["merchant_id"] == ENRICHED[0]["merchant_id"]
    assert (entry.topic, entry.partition, entry.offset, entry.error) == \
        ("p-transactions_enriched", 2, 7, "")


@pytest.mark.parametrize("value, reason", [
    # no date in UTC: once an OverflowError that crashed store_transactions and lost it
    (orjson.dumps({**ENRICHED[0], "timestamp": "9999-12-31T23:59:59-01:00"}), "out of range"),
    (orjson.dumps({**ENRICHED[0], "timestamp": "0001-01-01T00:00:00+01:00"}), "out of range"),
    (b"\xff\xfe not UTF-8", "not valid JSON"),
    (None, "not valid JSON"),  # a tombstone
    (b"[1, 2]", "expected a JSON object"),
    # from a worker that does not convert amounts: no revenue figure could count it
    (orjson.dumps({k: v for k, v in ENRICHED[0].items() if k != "amount_reporting"}),
     "amount_reporting is missing"),
])
def test_a_message_whose_data_cannot_become_a_document_is_a_dead_letter(
        value: bytes | None, reason: str) -> None:
    entry = agents._entry(message(value), transaction)
    assert entry.doc is None and reason in entry.error
    assert entry.raw == (value or b"")
    dead = entry.dead_letter(entry.error)
    assert dead["_id"] == "p-transactions_enriched:2:7" and dead["stage"] == "sink"
    assert (dead["topic"], dead["partition"], dead["offset"]) == ("p-transactions_enriched", 2, 7)


@pytest.mark.parametrize("error", [OverflowError("date value out of range"),
                                   ValueError("year 10000 is out of range"),
                                   UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid")])
def test_every_data_error_of_a_conversion_is_a_dead_letter(error: Exception) -> None:
    def convert(m: Message, raw: bytes) -> dict[str, Any]:
        raise error

    entry = agents._entry(message(b"{}"), convert)
    assert entry.doc is None and entry.error.startswith(type(error).__name__)


@pytest.mark.parametrize("error", [KeyError("txn_id"), TypeError("a bug"),
                                   RuntimeError("no database")])
def test_any_other_error_is_not_a_dead_letter(error: Exception) -> None:
    """A bug is not the message's fault: it ends the process (crash-only), never hides as a
    dead letter."""
    def convert(m: Message, raw: bytes) -> dict[str, Any]:
        raise error

    with pytest.raises(type(error)):
        agents._entry(message(b"{}"), convert)


def test_a_worker_dead_letter_with_odd_headers_and_timestamp() -> None:
    headers = [(DLQ_REASON, b"not valid JSON"), (DLQ_TOPIC, b"p-transactions"),
               (DLQ_PARTITION, b"3"), (DLQ_OFFSET, b"41"), ("x-null", None)]
    m = message(b"\xff raw", key=b"\xff\xfe", headers=headers, timestamp=2.0**62)
    entry = agents._entry(m, agents._dlq_doc)
    assert entry.doc is not None and entry.doc["_id"] == "p-transactions:3:41"
    assert entry.doc["reason"] == "not valid JSON" and entry.doc["original"] == "\ufffd raw"


@pytest.mark.parametrize("topic", [enriched_raw, anomalies_raw, dlq_raw])
async def test_the_sink_reads_keys_as_bytes(topic: Any) -> None:
    """A key that is not UTF-8 once crashed store_dlq (a KeyDecodeError, the message acked
    and lost): the sink's topics read keys as bytes, and decode none."""
    assert topic.key_type is bytes and topic.value_type is bytes
    event = await topic.decode(message(b"x", key=b"\xff\xfeuser-\xc3"), propagate=True)
    assert event.key == b"\xff\xfeuser-\xc3" and event.value == b"x"
    as_text = sink_app.topic("p-any", key_type=str, key_serializer="raw")
    with pytest.raises(KeyDecodeError):  # what reading it as text did
        await as_text.decode(message(b"x", key=b"\xff\xfe"), propagate=True)


def test_every_agent_task_and_handler_is_crash_only() -> None:
    async def noop() -> None:
        pass

    wrapper = crash_only(noop).__code__  # every crash_only function runs this code
    for fn in (agents.store_transactions.fun, agents.store_anomalies.fun, agents.store_dlq.fun,
               agents.flush_due_batches, agents.flush_rollups, agents.prepare_mongo,
               agents.serve_metrics, agents.watch, agents.forget_rows):
        assert fn.__code__ is wrapper and fn.__module__ == "agents.sink.agents", fn
