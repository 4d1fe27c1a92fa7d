"""The processing agent's money and time rules with ``agent.test_context()`` (no broker): the
reporting currency, event-time day windows kept by stream time, late and future events, and
the Kafka timestamp check."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import orjson

from agents import processor
from app import rates
from app.contract import cents
from app.settings import settings
from tables import user_tables, windows
from tables.records import UserState
from tables.welford import from_values, z_score
from tests.unit.agent_harness import Recorder, encoded, put_all, txn


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def reasons(recorder: Recorder) -> list[str]:
    return [dict(m.headers)["dlq.reason"].decode() for m in recorder.messages
            if m.topic == processor.DLQ]


async def test_amounts_are_converted_to_the_reporting_currency(recorder: Recorder) -> None:
    """Statistics, z and the day's spend are on amount_reporting; the original amount and
    currency are kept."""
    amounts = [1000.0, 1200.0, 1100.0, 900.0, 1300.0, 1100.0, 5000.0]
    txns = [txn("yen", a, currency="JPY") for a in amounts]
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, [encoded(t) for t in txns], expect=len(txns) + 1)
    enriched = recorder.values(processor.ENRICHED)
    converted = [rates.to_reporting(a, "JPY") for a in amounts]
    assert converted[0] != amounts[0]  # JPY is not the reporting currency
    assert [e["amount_reporting"] for e in enriched] == converted
    assert [e["amount"] for e in enriched] == amounts
    assert {e["currency"] for e in enriched} == {"JPY"}
    assert {e["reporting_currency"] for e in enriched} == {settings.reporting_currency}
    assert math.isclose(enriched[-1]["user_running_mean"], sum(converted) / 7, rel_tol=1e-12)
    expected_z = z_score(from_values(converted[:6]), converted[6], settings.anomaly_min_history)
    assert expected_z is not None
    assert math.isclose(enriched[-1]["z_score"], expected_z, rel_tol=1e-9)
    day_total = sum(rates.reporting_cents(cents(a), "JPY") for a in amounts) / 100
    assert enriched[-1]["user_daily_spend"] == round(day_total, 2)
    [anomaly] = recorder.values(processor.ANOMALIES)
    assert anomaly["amount_reporting"] == converted[-1] and anomaly["amount"] == 5000.0
    assert anomaly["reporting_currency"] == settings.reporting_currency


async def test_late_future_and_mistimed_events_are_dead_letters(recorder: Recorder) -> None:
    """Each lands in the DLQ with its reason and changes nothing else."""
    now = datetime.now(UTC).timestamp()
    grace = settings.late_event_grace_days
    first = txn("ola", 10.0, ts=iso(now - 3600))
    late = txn("ola", 20.0, ts=iso(now - 3600 - 40 * 86_400))
    ahead = txn("ola", 30.0, ts=iso(now + 86_400))
    year_9999 = txn("ola", 40.0, ts="9999-12-31T23:59:59+00:00")
    in_grace = txn("ola", 50.0, ts=iso(now - 3600 - (grace - 1) * 86_400))
    slightly_ahead = txn("ola", 60.0, ts=iso(now + 60))
    mistimed = txn("ola", 70.0, ts=iso(now - 7200))
    items = [encoded(t) for t in (first, late, ahead, year_9999, in_grace, slightly_ahead)]
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, items)
        await agent.put(value=orjson.dumps(mistimed), key=b"ola", partition=0,
                        timestamp=now - 7198.5, wait=False)  # 1.5 s off
        await put_all(agent, recorder, [], expect=len(items) + 1)
    enriched = recorder.values(processor.ENRICHED)
    assert [e["amount"] for e in enriched] == [10.0, 50.0, 60.0]
    assert [e["user_txn_count"] for e in enriched] == [1, 2, 3]
    why = reasons(recorder)
    prefixes = ("late event:", "future event:", "future event:", "Kafka timestamp ")
    assert len(why) == 4 and all(r.startswith(p) for r, p in zip(why, prefixes, strict=True))
    assert f"LATE_EVENT_GRACE_DAYS={grace}" in why[0]
    assert processor.counters.dlq_kinds == {"late_event": 1, "future_event": 2,
                                            "kafka_timestamp": 1}
    user = user_tables.get_user("ola", 0)
    assert user.stats.count == 3 and user.offset == 5


async def test_stream_time_survives_a_restart_and_drops_old_days(recorder: Recorder) -> None:
    """The stream time is in the table (after the batch's users, in the same changelog
    partition), so a restarted worker judges lateness the same; a user's value keeps only the
    days a not-late event can still fall in."""
    grace = settings.late_event_grace_days
    start = datetime(2026, 11, 1, 12, tzinfo=UTC).timestamp()
    spread = [txn("pia", 1.0 + d, ts=iso(start + d * 86_400)) for d in range(12)]
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, [encoded(t) for t in spread])
    changelog = [c for c in recorder.changes if c.topic != processor.ENRICHED]
    keys = [c.key for c in changelog if c.partition == 0]
    assert keys.index(user_tables.stream_time_key(0)) > keys.index(b"pia")
    newest = start + 11 * 86_400
    user = UserState.decode(user_tables.user_state.data["pia"])
    oldest = windows.oldest_kept_day(newest, grace)
    assert [d[0] for d in user.days] == list(range(oldest, windows.day_of(newest) + 1))
    assert len(user.days) == grace + 1

    # A restart: every cache gone; the store recovered from the changelog records.
    user_tables.user_state.data.clear()
    user_tables.forget_users()
    for change in recorder.changes:
        if change.topic == user_tables.user_state.changelog_topic.get_topic_name():
            key = "pia" if change.key == b"pia" else change.key
            user_tables.user_state.data[key] = change.value
    assert user_tables.get_stream_time(0) == newest
    recorder.messages.clear()
    too_late = txn("pia", 5.0, ts=iso(newest - (grace + 1) * 86_400))
    just_in = txn("pia", 6.0, ts=iso(newest - (grace - 1) * 86_400))
    async with processor.process.test_context() as agent:
        agent.sent_offset = 12
        await put_all(agent, recorder, [encoded(too_late), encoded(just_in)])
    assert [r.split(":")[0] for r in reasons(recorder)] == ["late event"]
    [enriched] = recorder.values(processor.ENRICHED)
    assert enriched["amount"] == 6.0 and enriched["user_txn_count"] == 13
    assert enriched["user_daily_spend"] == 6.0 + 1.0 + (windows.day_of(newest) - grace + 1
                                                        - windows.day_of(start))


async def test_a_replayed_old_message_is_not_judged_late(recorder: Recorder) -> None:
    """A message the user's value already holds was judged when it was folded: after a crash
    it is a replay, not a late event, however far the stream time has moved."""
    start = datetime(2026, 11, 1, 12, tzinfo=UTC).timestamp()
    old = txn("quin", 2.0, ts=iso(start))
    other = txn("rae", 3.0, ts=iso(start + 20 * 86_400))
    async with processor.process.test_context() as agent:
        await put_all(agent, recorder, [encoded(old), encoded(other)])
        agent.sent_offset = 0  # the same two messages again, as after a crash, then a new one
        new = txn("quin", 4.0, ts=iso(start + 20 * 86_400))
        await put_all(agent, recorder, [encoded(old), encoded(other), encoded(new)], expect=3)
    assert reasons(recorder) == []
    assert processor.counters.replayed == 2 and processor.counters.processed == 3


def test_the_rules_read_the_settings() -> None:
    assert settings.late_event_grace_days == 7
    assert settings.future_event_tolerance_seconds == 300
    assert timedelta(days=settings.dedupe_horizon_days) > timedelta(
        days=settings.late_event_grace_days)
