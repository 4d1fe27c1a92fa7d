"""``agents.sink.retention`` (hours, cutoffs, ids, what a batch lists) and the sink's side of it
(``manifests.py``, the writer's order: insert, list, then ack), without a database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from agents.sink import aggregates as agg
from agents.sink import documents as docs
from agents.sink import retention as ret
from agents.sink.documents import Entry
from agents.sink.manifests import Manifests
from agents.sink.mongo import InsertResult
from agents.sink.writer import MongoSink

T = datetime(2026, 3, 1, 0, 30, tzinfo=UTC)


def test_hours_are_utc_text_that_sorts_in_time_order() -> None:
    assert ret.hour_of(datetime(2026, 11, 30, 14, 59, 59, 999000, tzinfo=UTC)) == \
        "2026-11-30T14"
    plus_two = datetime(2026, 11, 30, 16, 5, tzinfo=UTC).astimezone(
        timezone(timedelta(hours=2)))
    assert ret.hour_of(plus_two) == "2026-11-30T16"
    assert ret.hour_start("2026-11-30T14") == datetime(2026, 11, 30, 14, tzinfo=UTC)
    assert ret.day_of("2026-11-30T14") == "2026-11-30"
    hours = [ret.hour_of(T + timedelta(hours=h)) for h in range(-50, 50, 7)]
    assert sorted(hours) == hours
    minutes = ret.minutes_of("2026-11-30T14")
    assert len(minutes) == 60 and minutes[0] == ret.hour_start("2026-11-30T14")
    assert minutes[-1] == datetime(2026, 11, 30, 14, 59, tzinfo=UTC)


def test_an_hour_expires_once_it_ended_the_retention_before_now() -> None:
    # now = 2026-03-01 00:30: 30 days back is 2026-01-30 00:30 (2026 is no leap year)
    assert ret.cutoff_hour(T, 30) == "2026-01-30T00"
    hours = ["2026-01-29T22", "2026-01-29T23", "2026-01-30T00", "2026-01-30T01"]
    assert ret.expired_hours(hours + hours[:1], T, 30) == ["2026-01-29T22", "2026-01-29T23"]
    # exactly on the hour: the hour that ended then has expired, the one starting has not
    on_hour = T.replace(minute=0)
    assert ret.expired_hours(hours, on_hour, 30) == ["2026-01-29T22", "2026-01-29T23"]
    assert ret.expired_hours(hours, on_hour - timedelta(microseconds=1), 30) == \
        ["2026-01-29T22"]
    assert ret.expired_hours([], T, 30) == []


def test_a_day_expires_whole() -> None:
    assert ret.cutoff_day(T, 400) == "2025-01-25"
    hours = ["2025-01-23T05", "2025-01-24T00", "2025-01-24T23", "2025-01-25T00"]
    assert ret.expired_days(hours, T, 400) == {
        "2025-01-23": ["2025-01-23T05"], "2025-01-24": ["2025-01-24T00", "2025-01-24T23"]}


def test_ids() -> None:
    assert ret.manifest_id("transactions", "2026-11-30T14", 3, 1200) == \
        "m|transactions|2026-11-30T14|3|1200"
    assert ret.directory_id("dlq", "2026-11-30T14") == "h|dlq|2026-11-30T14"
    assert ret.directory_id("dlq", "2026-11-30T14", "07") == "h|dlq|2026-11-30T14|07"
    assert ret.directory_ids("dlq", "2026-11-30T14")[:2] == ["h|dlq|2026-11-30T14",
                                                             "h|dlq|2026-11-30T14|00"]
    assert len(ret.directory_ids("dlq", "2026-11-30T14")) == 61
    assert ret.slot_of(datetime(2026, 11, 30, 14, 7, 59, tzinfo=UTC)) == "07"
    assert ret.calendar_id("anomalies") == "c|anomalies"


def test_aggregate_ids_are_the_aggregates_own() -> None:
    when = datetime(2026, 11, 30, 14, 7, tzinfo=UTC)
    hour = ret.hour_of(when)
    by_name = {a.collection: ret.aggregate_ids(a, hour) for a in ret.AGGREGATES}
    for name in (agg.MERCHANT_HOURS, agg.VOLUME_HOURS, agg.CURRENCY_HOURS):
        assert by_name[name] == [agg.hour_id(when)]
    for name in (agg.MERCHANT_DAYS, agg.CURRENCY_DAYS):
        assert by_name[name] == [agg.day_id(when)]
    minutes = by_name[docs.VOLUME_MINUTE]
    assert len(minutes) == 60 and docs.minute_id(when) in minutes
    assert set(by_name) == {*agg.COLLECTIONS, docs.VOLUME_MINUTE}  # users' days: users_by_day
    groups = by_name[agg.USERS_BY_DAY]
    assert len(set(groups)) == agg.USER_GROUPS
    assert agg.users_by_day_id(agg.day_id(when), agg.user_group("u1")) in groups


def txn(_id: str, when: datetime) -> dict[str, Any]:
    return {"_id": _id, "timestamp": when, "merchant_id": "m1", "currency": "EUR"}


def test_a_batch_is_listed_per_hour_and_partition_from_its_first_offset() -> None:
    h1, h2 = datetime(2026, 11, 30, 13, 59, tzinfo=UTC), datetime(2026, 11, 30, 14, 1, tzinfo=UTC)
    entries = [Entry(txn("a", h1), b"", "t", 0, 10), Entry(txn("b", h2), b"", "t", 0, 11),
               Entry(txn("c", h1), b"", "t", 1, 5), Entry(None, b"x", "t", 1, 6, "bad"),
               Entry(txn("d", h2), b"", "t", 1, 7)]
    refused = [entries[4]]  # its insert failed: a dead letter too
    now = datetime(2026, 12, 1, 9, 15, tzinfo=UTC)
    listed = ret.list_batch(docs.TRANSACTIONS, entries, refused, now)
    assert listed.manifests == {
        ("transactions", "2026-11-30T13", "m|transactions|2026-11-30T13|0|10"): ["a"],
        ("transactions", "2026-11-30T14", "m|transactions|2026-11-30T14|0|10"): ["b"],
        ("transactions", "2026-11-30T13", "m|transactions|2026-11-30T13|1|5"): ["c"],
        ("dlq", "2026-12-01T09", "m|dlq|2026-12-01T09|1|6"): ["t:1:6", "t:1:7"],
    }
    assert listed.aggregate_hours == {"2026-11-30T13", "2026-11-30T14"}
    # the same batch again lists the same; anomalies have no aggregates
    assert ret.list_batch(docs.TRANSACTIONS, entries, refused, now) == listed
    assert ret.list_batch(docs.ANOMALIES, entries[:1], [], now).aggregate_hours == set()


def test_a_large_batch_is_listed_in_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ret, "MAX_IDS", 2)
    batch = [Entry(txn(f"x{i}", T), b"", "t", 0, 7 + i) for i in range(5)]
    listed = ret.list_batch(docs.TRANSACTIONS, batch, [], T)
    name = "m|transactions|2026-03-01T00|0|7"
    assert listed.manifests == {
        ("transactions", "2026-03-01T00", name): ["x0", "x1"],
        ("transactions", "2026-03-01T00", f"{name}+1"): ["x2", "x3"],
        ("transactions", "2026-03-01T00", f"{name}+2"): ["x4"]}


def test_dead_letters_count_from_when_they_were_refused() -> None:
    failed = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
    doc = {"_id": "transactions:2:9", "failed_at": failed, "timestamp": "not used"}
    listed = ret.list_batch(docs.DLQ, [Entry(doc, b"", "dlq", 0, 4)], [], T)
    assert listed.manifests == {("dlq", "2026-05-01T03", "m|dlq|2026-05-01T03|0|4"):
                                ["transactions:2:9"]}


class FakeDb:
    """Records the bookkeeping writes of :class:`Manifests`."""

    def __init__(self) -> None:
        self.inserted: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []

    def __getitem__(self, name: str) -> FakeDb:
        assert name == ret.COLLECTION
        return self

    def insert_many(self, documents: list[dict[str, Any]], ordered: bool) -> None:
        self.inserted += documents

    def command(self, name: str, collection: str, **kwargs: Any) -> dict[str, Any]:
        assert (name, collection) == ("update", ret.COLLECTION)
        self.updates += kwargs["updates"]
        return {"ok": 1}


@pytest.mark.asyncio
async def test_calendars_are_written_once_per_recent_hour() -> None:
    db = FakeDb()
    manifests = Manifests(db)  # type: ignore[arg-type]
    now = datetime(2026, 11, 30, 14, 30, tzinfo=UTC)
    batch = [Entry(txn(f"x{i}", now), b"", "t", 0, i) for i in range(3)]
    await manifests.record(docs.TRANSACTIONS, batch, InsertResult(inserted=3), now)
    assert [d["_id"] for d in db.inserted] == ["m|transactions|2026-11-30T14|0|0"]
    assert [u["q"]["_id"] for u in db.updates] == [
        "h|transactions|2026-11-30T14|30", "c|aggregates", "c|transactions"]
    db.updates.clear()
    later = [Entry(txn(f"y{i}", now), b"", "t", 0, 3 + i) for i in range(2)]
    await manifests.record(docs.TRANSACTIONS, later, InsertResult(inserted=2), now)
    assert [u["q"]["_id"] for u in db.updates] == ["h|transactions|2026-11-30T14|30"]
    # a late event more than MIN_RECENT old: its calendar is written with every batch
    db.updates.clear()
    old = now - timedelta(days=2)
    for offset in (10, 11):
        await manifests.record(docs.TRANSACTIONS, [Entry(txn(f"z{offset}", old), b"", "t", 0,
                                                         offset)], InsertResult(), now)
    assert [u["q"]["_id"] for u in db.updates].count("c|transactions") == 2
    # nothing stored (all poison): only the dead letters' listing
    db.updates.clear()
    await manifests.record(docs.TRANSACTIONS, [Entry(None, b"", "t", 0, 20, "bad")],
                           InsertResult(), now)
    assert [u["q"]["_id"] for u in db.updates] == ["h|dlq|2026-11-30T14|30", "c|dlq"]


class Store:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def insert(self, collection: str, batch: list[Entry]) -> InsertResult:
        self.log.append("insert")
        return InsertResult(inserted=len(batch))

    async def record_batch(self, *args: Any) -> None:
        return None


class Lister:
    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log, self.fail = log, fail

    async def record(self, collection: str, entries: list[Entry], result: InsertResult,
                     now: datetime | None = None) -> None:
        if self.fail:
            raise RuntimeError("retention write refused")
        self.log.append(f"list {len(entries)}")


@pytest.mark.asyncio
async def test_the_listing_is_part_of_the_write_before_the_acks() -> None:
    log: list[str] = []

    async def ack(events: Sequence[Any]) -> None:
        log.append(f"ack {len(events)}")

    writer = MongoSink(Store(log), "t", ack, max_size=2, max_seconds=60, lister=Lister(log))
    await writer.add([Entry({"_id": "1"}, b"", "t", 0, 1), Entry({"_id": "2"}, b"", "t", 0, 2)],
                     [1, 2])
    assert log == ["insert", "list 2", "ack 2"]
    failing = MongoSink(Store(log), "t", ack, max_size=5, max_seconds=60,
                        lister=Lister(log, fail=True))
    await failing.add([Entry({"_id": "3"}, b"", "t", 0, 3)], [3])
    with pytest.raises(RuntimeError):
        await failing.flush()
    assert log[-1] == "insert" and len(failing) == 1  # not acked, still held
