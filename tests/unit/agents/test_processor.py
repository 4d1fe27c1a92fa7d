"""Unit tests of the processing agent with Faust's ``agent.test_context()`` (no broker): the
enriched fields of a hand-checked sequence, the DLQ path, and replays after a crash.

The agent's Kafka output is replaced by a recorder (``agents.processor.output``); the tables
use Faust's in-memory store (the ``recorder`` fixture, tests/unit/conftest.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st

from agents import enrich, processor
from app import contract
from app.main import app
from app.settings import settings
from tables import txn_ids, user_tables
from tables.records import UserState
from tests.unit.agent_harness import TS_EPOCH, Recorder, encoded, put_all, txn


async def test_enriched_fields_of_a_hand_checked_sequence(recorder: Recorder) -> None:
    amounts = [10.0, 12.0, 11.0, 9.0, 13.0, 11.0, 50.0]
    txns = [txn("alice", a) for a in amounts]
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, [encoded(t) for t in txns], expect=len(txns) + 1)
    enriched = recorder.values(processor.ENRICHED)
    assert [e["txn_id"] for e in enriched] == [t["txn_id"] for t in txns]
    # counts, means, stds (sample) worked out by hand
    assert [e["user_txn_count"] for e in enriched] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["user_running_mean"] for e in enriched][:6] == [10.0, 11.0, 11.0, 10.5, 11.0, 11.0]
    assert math.isclose(enriched[6]["user_running_mean"], 116 / 7, rel_tol=1e-15)
    assert enriched[0]["user_running_std"] == 0.0
    assert math.isclose(enriched[1]["user_running_std"], math.sqrt(2))
    assert math.isclose(enriched[4]["user_running_std"], math.sqrt(2.5))  # 10,12,11,9,13
    # z is null until 5 earlier amounts; then (x - mean_prev) / std_prev
    assert [e["z_score"] for e in enriched[:5]] == [None] * 5
    assert enriched[5]["z_score"] == 0.0  # 11 vs mean 11
    assert math.isclose(enriched[6]["z_score"], (50 - 11) / math.sqrt(2.0))  # history var 2
    assert [e["is_anomaly"] for e in enriched] == [False] * 6 + [True]
    assert [e["user_daily_spend"] for e in enriched] == [10, 22, 33, 42, 55, 66, 116]
    assert all(e["processed_at"].endswith("+00:00") for e in enriched)
    assert {k: enriched[0][k] for k in txns[0]} == txns[0]  # every transaction field kept
    assert list(enriched[0]) == [*contract.FIELDS, *contract.ENRICHED_FIELDS]
    [anomaly] = recorder.values(processor.ANOMALIES)
    assert list(anomaly) == list(contract.ANOMALY_FIELDS)
    assert anomaly["txn_id"] == txns[6]["txn_id"]
    assert anomaly["n_prev"] == 6 and anomaly["mean_prev"] == 11.0
    assert math.isclose(anomaly["std_prev"], math.sqrt(2.0))
    assert anomaly["z_score"] == enriched[6]["z_score"]
    user = UserState.decode(user_tables.user_state.data["alice"])
    assert user.stats.count == 7 and user.offset == 6 and user.last_z == anomaly["z_score"]
    # the changelog messages carry exactly what the store holds, on the source partition
    [change] = [c for c in recorder.changes if c.key == b"alice"]
    assert UserState.decode(change.value) == user and change.partition == 0
    assert change.topic == user_tables.user_state.changelog_topic.get_topic_name()


async def test_bad_message_goes_to_the_dlq_and_the_next_is_processed(recorder: Recorder
                                                                     ) -> None:
    good = txn("bob", 20.0)
    bad_id = {**txn("bob", 30.0), "txn_id": "F" * 64}
    items = [(b"bob", b"{not json"), (b"bob", orjson.dumps(bad_id)),
             (b"carol", orjson.dumps(good)),  # key is not the user_id
             (b"bob", b""),  # empty (a tombstone has no value at all)
             encoded(good)]
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, items, partition=3)
    dlq = [m for m in recorder.messages if m.topic == processor.DLQ]
    assert [m.value for m in dlq] == [items[0][1], items[1][1], items[2][1], b""]
    reasons = [dict(m.headers)["dlq.reason"].decode() for m in dlq]
    assert "not valid JSON" in reasons[0]
    assert "txn_id must be 64 lowercase hex" in reasons[1]
    assert "user_id" in reasons[2]
    headers = dict(dlq[1].headers)
    assert headers["dlq.partition"] == b"3" and headers["dlq.offset"] == b"1"
    assert set(headers) == {"dlq.reason", "dlq.topic", "dlq.partition", "dlq.offset",
                            "dlq.failed_at", "dlq.original_size", "dlq.original_sha256"}
    assert set(headers) == set(contract.DLQ_HEADERS)
    assert headers["dlq.original_size"] == str(len(items[1][1])).encode()
    assert headers["dlq.original_sha256"] == hashlib.sha256(items[1][1]).hexdigest().encode()
    [enriched] = recorder.values(processor.ENRICHED)
    assert enriched["txn_id"] == good["txn_id"] and enriched["user_txn_count"] == 1
    assert "not valid JSON" in dict(dlq[3].headers)["dlq.reason"].decode()
    assert processor.counters.dlq == 4 and processor.counters.processed == 1
    assert processor.counters.dlq_kinds == {"not_json": 2, "bad_txn_id": 1,
                                            "key_not_user_id": 1}


async def test_a_dead_letter_is_cut_to_fit(recorder: Recorder) -> None:
    """The value is cut to DLQ_MAX_PAYLOAD_BYTES (and a key, which no valid message has that
    long, to DLQ_MAX_KEY_BYTES); the headers keep the whole original's size and SHA-256."""
    huge = b"[" + b"7," * 60_000 + b"7]"  # valid JSON, not an object: 120,003 bytes
    long_key = b"k" * 5_000
    items = [(long_key, huge), (b"bob", b"{}" + b" " * 10)]
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, items, partition=1)
    big, small = [m for m in recorder.messages if m.topic == processor.DLQ]
    limit = settings.dlq_max_payload_bytes
    assert limit == 65_536 and big.value == huge[:limit] and small.value == items[1][1]
    assert big.key == long_key[:contract.DLQ_MAX_KEY_BYTES] and small.key == b"bob"
    for dead, (_, original) in zip((big, small), items, strict=True):
        headers = dict(dead.headers)
        assert headers[contract.DLQ_ORIGINAL_SIZE] == str(len(original)).encode()
        assert headers[contract.DLQ_ORIGINAL_SHA256] == hashlib.sha256(original).hexdigest(
            ).encode()
    assert processor.counters.dlq_kinds == {"not_object": 1, "missing_field": 1}
    config = contract.dlq_topic_config(limit)
    assert int(config["max.message.bytes"]) == 1024 * 1024 + 64 * 1024  # > limit + 64 KiB
    assert config.items() >= contract.TOPIC_CONFIG.items()


async def test_a_redelivered_message_is_not_applied_twice(recorder: Recorder) -> None:
    """Offsets at or below a value's offset are already in it (a replay after a crash)."""
    txns = [txn("dave", a, merchant=f"m{a}") for a in (5.0, 7.0, 9.0)]
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, [encoded(t) for t in txns])
        before = UserState.decode(user_tables.user_state.data["dave"])
        agent.sent_offset = 1  # the broker hands out offsets 1 and 2 again, then 3
        await put_all(agent, recorder, [encoded(t) for t in [*txns[1:], txn("dave", 11.0)]],
                      expect=4)
    after = UserState.decode(user_tables.user_state.data["dave"])
    assert before.stats.count == 3 and after.stats.count == 4
    assert after.stats.mean == 8.0
    enriched = recorder.values(processor.ENRICHED)
    assert [e["user_txn_count"] for e in enriched] == [1, 2, 3, 4]
    assert enriched[-1]["user_daily_spend"] == 32.0
    assert processor.counters.replayed == 2


async def test_days_are_utc_event_time_days(recorder: Recorder) -> None:
    late = txn("erin", 4.0, ts="2026-11-24T23:30:00-02:00")  # 2026-11-25T01:30Z
    early = txn("erin", 6.0, ts="2026-11-25T00:30:00+02:00")  # 2026-11-24T22:30Z
    third = txn("erin", 1.5, ts="2026-11-25T23:59:59+00:00")
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, [encoded(t) for t in (late, early, third)])
    assert [e["user_daily_spend"] for e in recorder.values(processor.ENRICHED)] == [
        4.0, 6.0, 5.5]


async def test_an_unexpected_error_parks_the_users_messages(recorder: Recorder,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """Crash-only: an error that is not the data's (here a bug in the rule; a failed RocksDB
    read alike) parks nothing in the DLQ, where valid transactions would stay for good. The
    process exits without acking the batch, publishing or writing anything of it, so the
    restarted worker reads it again from the committed offsets."""
    real_update = enrich.update  # the rule the processor applies (agents/enrich.py)

    def failing_update(state: Any, amount: float) -> Any:
        if amount == 66.6:
            raise ZeroDivisionError("boom")
        return real_update(state, amount)

    exits: list[int] = []
    acked: list[Any] = []

    def exit_(code: int) -> None:  # os._exit does not return: neither does this
        exits.append(code)
        raise asyncio.CancelledError

    monkeypatch.setattr(enrich, "update", failing_update)
    monkeypatch.setattr(processor.os, "_exit", exit_)
    monkeypatch.setattr(processor, "_ack_when_durable",
                        lambda durable, messages, consumer: acked.extend(messages))
    first, bad, good = txn("frank", 5.0), txn("frank", 66.6), txn("gina", 1.0)
    async with processor.process.test_context() as agent:
        for key, value in [(b"frank", b"{not json"), *(encoded(t) for t in (first, bad, good))]:
            await agent.put(value=value, key=key, partition=0, timestamp=TS_EPOCH, wait=False)
        for _ in range(100):
            if exits:
                break
            await asyncio.sleep(0.02)
    assert exits == [70]
    assert recorder.messages == [] and recorder.changes == []  # not even the invalid one
    assert acked == []
    assert processor.counters.errors == 1


async def test_a_batch_that_cannot_be_made_durable_ends_the_process(
        recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing may be acked (and so committed) if publishing fails: the worker exits."""
    exits: list[int] = []

    async def broken_publish(messages: list[Any]) -> list[Any]:
        raise OSError("broker gone")

    monkeypatch.setattr(recorder, "publish", broken_publish)
    monkeypatch.setattr(processor.os, "_exit", exits.append)
    async with processor.process.test_context() as agent:
        await agent.put(value=orjson.dumps(txn("hana", 2.0)), key=b"hana", partition=0,
                        timestamp=TS_EPOCH, wait=False)
        for _ in range(100):
            if exits:
                break
            await asyncio.sleep(0.02)
    assert exits == [70]


async def test_outputs_that_cannot_be_declared_end_the_process(
        recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure to declare or configure the output topics at start is not about one message:
    the worker exits (Faust's supervisor would restart an agent that then processes nothing)."""
    exits: list[int] = []

    async def broken() -> None:
        raise ValueError("Unrecognized configs: {'retention.ms'}")

    def exit_(code: int) -> None:  # os._exit does not return: neither does this
        exits.append(code)
        raise asyncio.CancelledError

    monkeypatch.setattr(processor, "declare_outputs", broken)
    monkeypatch.setattr(processor.os, "_exit", exit_)
    async with processor.process.test_context():
        for _ in range(100):
            if exits:
                break
            await asyncio.sleep(0.02)
    assert exits == [70]


async def test_user_cache_is_dropped_on_a_new_consumer_generation(recorder: Recorder) -> None:
    """The worker caches user states; after a rebalance (new generation) it reads the store
    again, which Faust's recovery may have changed."""
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, [encoded(txn("ivan", 3.0))])
        assert user_tables.get_user("ivan", 0).stats.count == 1
        user_tables.user_state.data["ivan"] = UserState(offset=41).encode()  # e.g. a recovery
        processor._on_generation(app.consumer_generation_id)  # same generation: cached
        assert user_tables.get_user("ivan", 0).stats.count == 1
        processor._on_generation(-7)  # a rebalance
        assert user_tables.get_user("ivan", 0).offset == 41
        assert user_tables.get_user("ivan").offset == 41  # the views read the store


async def test_faust_sees_the_partitions_being_processed(recorder: Recorder) -> None:
    """The batches bypass Faust's stream, whose per-event hook feeds Faust's stall check; the
    agent records each partition's last batch there itself (else Faust logs "Stream has not
    started processing" errors every few seconds)."""
    started = time.monotonic()
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, [encoded(txn("jo", 2.0))], partition=3)
    seen = {tp: at for tp, at in app.monitor.stream_inbound_time.items() if at >= started}
    assert [tp.partition for tp in seen] == [3]


async def test_a_replayed_txn_id_changes_nothing(recorder: Recorder) -> None:
    """The same transaction at a later offset (an upstream re-send, a producer replaying a
    range), in the same batch or a later one, is counted, not folded or emitted again."""
    first, second = txn("kim", 10.0), txn("kim", 30.0)
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, [encoded(first), encoded(first), encoded(second)],
                      expect=2)
        stats = UserState.decode(user_tables.user_state.data["kim"])
        await put_all(agent, recorder, [encoded(second), encoded(first), encoded(txn("kim", 5.0))],
                      expect=3)
    enriched = recorder.values(processor.ENRICHED)
    assert [e["amount"] for e in enriched] == [10.0, 30.0, 5.0]
    assert [e["user_txn_count"] for e in enriched] == [1, 2, 3]
    assert enriched[-1]["user_daily_spend"] == 45.0
    assert stats.stats.count == 2 and stats.offset == 2
    assert processor.counters.duplicates == 3 and processor.counters.processed == 3
    assert processor.counters.dlq == 0
    # each folded transaction's id is in the txn-ids changelog with the offset that folded it,
    # one record per batch and partition; recovery writes the same entries back
    records = [c for c in recorder.changes
               if c.topic == txn_ids.txn_ids.changelog_topic.get_topic_name()]
    assert [r.key for r in records] == [b"0-2", b"5-5"]
    stored = dict(txn_ids.txn_ids.data.items())
    txn_ids.txn_ids.data.clear()
    txn_ids.txn_ids.apply_changelog_batch(
        [SimpleNamespace(message=SimpleNamespace(tp=TP(r.topic, r.partition), offset=i,
                                                 partition=r.partition, value=r.value))
         for i, r in enumerate(records)])
    assert dict(txn_ids.txn_ids.data.items()) == stored and len(stored) == 3
    ids = {k[4:].hex(): int.from_bytes(v, "big") for k, v in stored.items()}
    assert ids[first["txn_id"]] == 0 and ids[second["txn_id"]] == 2


async def test_a_redelivered_duplicate_is_counted_once(recorder: Recorder) -> None:
    """A rebalance or a crash hands out a batch of duplicates again: the user's value
    remembers the last offset it handled, so the redelivery is a replay, not new duplicates."""
    first = txn("nia", 10.0)
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, [encoded(first), encoded(first), encoded(first)],
                      expect=1)
        assert UserState.decode(user_tables.user_state.data["nia"]).offset == 2
        assert (processor.counters.duplicates, processor.counters.replayed) == (2, 0)
        agent.sent_offset = 1  # the broker hands out offsets 1 and 2 again, then 3
        await put_all(agent, recorder, [encoded(first), encoded(first), encoded(txn("nia", 4.0))],
                      expect=2)
    assert (processor.counters.duplicates, processor.counters.replayed) == (2, 2)
    assert [e["amount"] for e in recorder.values(processor.ENRICHED)] == [10.0, 4.0]
    ids = {k[4:].hex(): int.from_bytes(v, "big") for k, v in txn_ids.txn_ids.data.items()}
    assert ids[first["txn_id"]] == 0  # the message that folded it, not a redelivered copy


async def test_a_redelivery_is_not_a_duplicate(recorder: Recorder) -> None:
    """After a crash the same message comes again at the same offset: the offset guard decides,
    so a message whose id was recorded but whose statistics were lost is still folded."""
    t = txn("lou", 8.0)
    async with processor.process.test_context() as agent:
        txn_ids.put_folded({txn_ids.key_of(t["txn_id"], TS_EPOCH): 0}, 0)  # id without stats
        await put_all(agent, recorder, [encoded(t)])
    [enriched] = recorder.values(processor.ENRICHED)
    assert enriched["user_txn_count"] == 1
    assert processor.counters.duplicates == 0 and processor.counters.processed == 1


async def test_ids_older_than_the_horizon_are_forgotten(recorder: Recorder) -> None:
    """Stream time (the newest event of the partition) minus DEDUPE_HORIZON_DAYS: older ids
    are deleted, younger ones stay. The horizon is longer than the late-event grace, so an
    old id that comes again after that is refused as late, never folded twice."""
    horizon = settings.dedupe_horizon_days
    assert horizon > settings.late_event_grace_days
    old = txn("max", 3.0, ts="2026-11-01T12:00:00+00:00")
    inside = txn("max", 4.0, ts=f"2026-11-{1 + horizon:02d}T12:00:00+00:00")
    later = txn("max", 5.0, ts=f"2026-11-{2 + horizon:02d}T12:00:00+00:00")
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, [encoded(old), encoded(inside)])
        await put_all(agent, recorder, [encoded(later)], expect=3)
        await put_all(agent, recorder, [encoded(old), encoded(inside)], expect=4)
    enriched = recorder.values(processor.ENRICHED)
    assert [e["amount"] for e in enriched] == [3.0, 4.0, 5.0]
    assert processor.counters.duplicates == 1
    assert processor.counters.dlq_kinds == {"late_event": 1}
    keys = {k[4:].hex() for k in txn_ids.txn_ids.data.keys()}
    assert old["txn_id"] not in keys
    assert inside["txn_id"] in keys and later["txn_id"] in keys


@given(days=st.lists(st.integers(-800_000, 3_000_000), min_size=2, max_size=20))
def test_txn_id_keys_sort_by_day(days: list[int]) -> None:
    ids = [txn_ids.key_of("ab" * 32, d * 86_400.0 + 5) for d in days]
    assert sorted(ids) == [ids[i] for i in sorted(range(len(days)), key=lambda i: days[i])]
    assert all(len(k) == 36 for k in ids)
