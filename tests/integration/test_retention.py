"""Retention on the real FerretDB: documents stored through the sink's own writer
(``MongoSink`` with a ``MongoStore``, which lists them for the prune) are pruned at a fixed
"now": exactly the expired ones go, with their bookkeeping; a second prune deletes nothing; every
query the prune sends selects by ``_id`` equality, and what it reads and deletes follows what
expired, not the size of the collections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
import pytest
from pymongo import monitoring

from agents.sink import aggregates as agg
from agents.sink import documents as docs
from agents.sink import retention as ret
from agents.sink.documents import Entry
from agents.sink.manifests import Manifests
from agents.sink.mongo import MongoStore, connect
from agents.sink.prune import Pruner
from agents.sink.writer import MongoSink
from app.contract import DLQ_FAILED_AT, DLQ_REASON
from app.settings import settings
from tests.sink_data import enriched_stream

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
DAYS = {docs.TRANSACTIONS: 30, docs.ANOMALIES: 90, docs.DLQ: 30, ret.AGGREGATE_KEYS: 400}
#: The first hour that is kept and the last one that expires, for transactions and the dlq.
KEPT_HOUR = ret.hour_start(ret.cutoff_hour(NOW, 30))
GONE_HOUR = KEPT_HOUR - timedelta(hours=1)


@pytest.fixture
async def store(mongo_db: pymongo.database.Database) -> AsyncIterator[MongoStore]:
    client = connect(settings.mongo_url)
    yield MongoStore(client[mongo_db.name])
    client.close()


class Commands(monitoring.CommandListener):
    """Every command a client sent: its name and the selection of each statement."""

    def __init__(self) -> None:
        self.filters: list[tuple[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        cmd = event.command
        if event.command_name == "find":
            self.filters.append(("find", cmd.get("filter")))
        elif event.command_name in ("delete", "update"):
            key = "deletes" if event.command_name == "delete" else "updates"
            self.filters += [(event.command_name, s["q"]) for s in cmd.get(key, [])]
        elif event.command_name not in ("endSessions", "ping", "hello", "isMaster"):
            self.filters.append((event.command_name, None))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None: ...

    def failed(self, event: monitoring.CommandFailedEvent) -> None: ...


@pytest.fixture
def pruner(mongo_db: pymongo.database.Database) -> Iterator[tuple[Pruner, Commands]]:
    listener = Commands()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        settings.mongo_url, event_listeners=[listener], tz_aware=True)
    yield Pruner(client[mongo_db.name], DAYS), listener
    client.close()


async def store_all(store: MongoStore, collection: str, entries: Sequence[Entry]) -> None:
    """Through the sink's writer: insert, list for the retention, then ack."""
    acked: list[Any] = []

    async def ack(events: Sequence[Any]) -> None:
        acked.extend(events)

    writer = MongoSink(store, collection, ack, max_size=500, max_seconds=60)
    await writer.add(list(entries), list(range(len(entries))))
    await writer.flush()
    assert len(acked) == len(entries)


def txn_entries(start: datetime, n: int, seed: int, partition: int = 0,
                ) -> tuple[list[Entry], list[Entry]]:
    values, anomalies = enriched_stream(n, seed=seed, start=start)
    return ([Entry(docs.transaction_doc(v), b"{}", "enriched", partition, i)
             for i, v in enumerate(values)],
            [Entry(docs.anomaly_doc(v), b"{}", "anomalies", partition, i)
             for i, v in enumerate(anomalies)])


def dlq_entry(failed_at: datetime, offset: int) -> Entry:
    headers = {DLQ_FAILED_AT: failed_at.isoformat().encode(), DLQ_REASON: b"test"}
    return Entry(docs.dlq_doc(b"{}", headers, "dlq", 0, offset, None), b"{}", "dlq", 0, offset)


def ids(db: pymongo.database.Database, collection: str) -> set[str]:
    return {d["_id"] for d in db[collection].find({}, {"_id": 1})}


def only_by_id(filters: list[tuple[str, Any]]) -> None:
    """Every statement selects one ``_id`` (an equality, FerretDB's only pushed-down query),
    possibly with more conditions on that one document."""
    for command, selection in filters:
        assert command in ("find", "delete", "update"), command
        assert isinstance(selection, dict) and isinstance(selection.get("_id"), str), \
            (command, selection)


async def test_prune_deletes_exactly_the_expired(
        store: MongoStore, mongo_db: pymongo.database.Database,
        pruner: tuple[Pruner, Commands]) -> None:
    # Transactions 40 days old across an hour boundary, 2 days old, and at the cutoff's edge;
    # anomalies 100 and 40 days old; dead letters either side of their 30 days.
    old_t, _ = txn_entries((NOW - timedelta(days=40)).replace(minute=59, second=55), 300, 1)
    _, new_a = txn_entries(NOW - timedelta(days=40), 600, 2, partition=1)
    edge_t, _ = txn_entries(GONE_HOUR + timedelta(minutes=59, seconds=50), 400, 3, partition=2)
    _, old_a = txn_entries(NOW - timedelta(days=100), 600, 4)
    recent_t, _ = txn_entries(NOW - timedelta(days=2), 200, 5, partition=3)
    poison = Entry(None, b"nope", "enriched", 3, 999, "not JSON")  # a dead letter made now
    await store_all(store, docs.TRANSACTIONS, old_t + edge_t + recent_t + [poison])
    await store_all(store, docs.ANOMALIES, old_a + new_a)
    old_d = [dlq_entry(NOW - timedelta(days=31, minutes=m), m) for m in range(5)]
    new_d = [dlq_entry(NOW - timedelta(days=29, minutes=m), 100 + m) for m in range(5)]
    await store_all(store, docs.DLQ, old_d + new_d)
    # Aggregates of a day 401 days back (expired) and of 2 days back (kept), by their ids; the
    # calendar knows those hours from the transactions of those times.
    old_day, new_day = NOW - timedelta(days=401), NOW - timedelta(days=2)
    very_old_t, _ = txn_entries(old_day.replace(hour=5), 50, 6, partition=4)
    await store_all(store, docs.TRANSACTIONS, very_old_t)
    for when in (old_day.replace(hour=5), new_day):
        for c in (agg.MERCHANT_HOURS, agg.VOLUME_HOURS, agg.CURRENCY_HOURS):
            mongo_db[c].insert_one({"_id": agg.hour_id(when)})
        for c in (agg.MERCHANT_DAYS, agg.CURRENCY_DAYS):
            mongo_db[c].insert_one({"_id": agg.day_id(when)})
        mongo_db[docs.VOLUME_MINUTE].insert_one({"_id": docs.minute_id(when.replace(minute=7))})

    def doc_ids(entries: list[Entry]) -> set[str]:
        return {e.doc["_id"] for e in entries if e.doc is not None}

    def expired(entries: list[Entry]) -> set[str]:
        return {e.doc["_id"] for e in entries if e.doc is not None
                and e.doc["timestamp"] < KEPT_HOUR}

    gone_t = doc_ids(old_t) | doc_ids(very_old_t) | expired(edge_t)
    assert expired(edge_t) and expired(edge_t) != doc_ids(edge_t)  # both sides of the cutoff
    before = {c: ids(mongo_db, c) for c in (docs.TRANSACTIONS, docs.ANOMALIES, docs.DLQ)}
    assert "enriched:3:999" in before[docs.DLQ]

    prune, commands = pruner
    reports = {r.collection: r for r in prune.run(NOW)}
    assert ids(mongo_db, docs.TRANSACTIONS) == before[docs.TRANSACTIONS] - gone_t
    assert reports[docs.TRANSACTIONS].deleted == {docs.TRANSACTIONS: len(gone_t)}
    assert ids(mongo_db, docs.ANOMALIES) == doc_ids(new_a)
    assert ids(mongo_db, docs.DLQ) == before[docs.DLQ] - doc_ids(old_d)
    assert "enriched:3:999" in ids(mongo_db, docs.DLQ)
    for c in (agg.MERCHANT_HOURS, agg.VOLUME_HOURS, agg.CURRENCY_HOURS):
        assert ids(mongo_db, c) == {agg.hour_id(new_day)}
    for c in (agg.MERCHANT_DAYS, agg.CURRENCY_DAYS):
        assert ids(mongo_db, c) == {agg.day_id(new_day)}
    assert ids(mongo_db, docs.VOLUME_MINUTE) == {docs.minute_id(new_day.replace(minute=7))}
    # The bookkeeping of the expired hours is gone; what is left lists only kept documents.
    books = list(mongo_db[ret.COLLECTION].find())
    listed = {i for b in books if b["_id"].startswith("m|") for i in b["ids"]}
    assert listed == ids(mongo_db, docs.TRANSACTIONS) | ids(mongo_db, docs.ANOMALIES) | \
        ids(mongo_db, docs.DLQ)
    for b in books:
        if b["_id"].startswith(("m|", "h|")):
            assert ret.hour_start(b["_id"].split("|")[2]) >= KEPT_HOUR - timedelta(days=60)
    calendars = {b["_id"]: b["hours"] for b in books if b["_id"].startswith("c|")}
    assert min(calendars["c|transactions"]) == ret.hour_of(KEPT_HOUR)
    assert min(calendars["c|aggregates"]) > ret.hour_of(old_day)
    assert mongo_db[ret.COLLECTION].find_one({"_id": ret.STATE_ID})["collections"][
        docs.TRANSACTIONS]["deleted"] == {docs.TRANSACTIONS: len(gone_t)}
    only_by_id(commands.filters)

    # Again: nothing left to delete, and only the four calendars read.
    commands.filters.clear()
    again = prune.run(NOW)
    assert all(n == 0 for r in again for n in r.deleted.values())
    assert [c for c, _ in commands.filters] == ["find"] * 4 + ["update"]


async def test_a_replayed_batch_lists_the_same_manifest(
        store: MongoStore, mongo_db: pymongo.database.Database) -> None:
    entries, _ = txn_entries(NOW - timedelta(days=3), 100, 7)
    await store_all(store, docs.TRANSACTIONS, entries)
    first = list(mongo_db[ret.COLLECTION].find({}))
    await store_all(store, docs.TRANSACTIONS, entries)  # a redelivery: all duplicates
    assert list(mongo_db[ret.COLLECTION].find({})) == first
    # the same first offset, cut longer this time: the manifest gets the extra ids
    more, _ = txn_entries(NOW - timedelta(days=3), 150, 7)
    await store_all(store, docs.TRANSACTIONS, more)
    manifests = [b for b in mongo_db[ret.COLLECTION].find({}) if b["_id"].startswith("m|")]
    assert sorted(i for m in manifests for i in m["ids"]) == \
        sorted(e.doc["_id"] for e in more if e.doc is not None)


async def test_cost_follows_the_expired_not_the_collection(
        store: MongoStore, mongo_db: pymongo.database.Database,
        pruner: tuple[Pruner, Commands]) -> None:
    """20,000 kept transactions (2 days old) and 600 expired ones (40 days): the prune reads
    the calendars, the expired hours' directories and manifests, and deletes the expired ids,
    each by ``_id``; nothing it sends depends on the kept documents."""
    kept, _ = txn_entries(NOW - timedelta(days=2), 20_000, 8, partition=0)
    gone, _ = txn_entries(NOW - timedelta(days=40), 600, 9, partition=1)
    await store_all(store, docs.TRANSACTIONS, kept)
    await store_all(store, docs.TRANSACTIONS, gone)
    expired_hours = {ret.hour_of(e.doc["timestamp"]) for e in gone if e.doc is not None}
    manifests = [m for m in mongo_db[ret.COLLECTION].find({"collection": docs.TRANSACTIONS})
                 if m["hour"] in expired_hours]
    prune, commands = pruner
    reports = {r.collection: r for r in prune.run(NOW)}
    assert reports[docs.TRANSACTIONS].deleted[docs.TRANSACTIONS] == 600
    assert mongo_db[docs.TRANSACTIONS].count_documents({}) == 20_000
    only_by_id(commands.filters)
    counts = prune.counts
    # reads: 4 calendars + the directories of each expired hour (one per hour, as an earlier
    # version wrote, and one per minute) + each manifest + the directories re-read
    slots = len(ret.directory_ids(docs.TRANSACTIONS, "2026-01-01T00"))
    assert counts.reads == 4 + 2 * slots * len(expired_hours) + len(manifests)
    # ids deleted: the expired transactions and their manifests, nothing else
    assert counts.delete_ids == 600 + len(manifests)
    assert len(commands.filters) < 700 + (2 * slots + 10) * len(expired_hours)


async def test_an_hour_listed_again_meanwhile_stays_on_the_calendar(
        store: MongoStore, mongo_db: pymongo.database.Database,
        pruner: tuple[Pruner, Commands]) -> None:
    """A sink lists a late event in an hour while the prune retires that hour (after it read
    the hour's directory): the hour goes back on the calendar, and the next prune deletes the
    late document."""
    first, _ = txn_entries(NOW - timedelta(days=40), 50, 10)
    late, _ = txn_entries(NOW - timedelta(days=40) + timedelta(seconds=1), 10, 11, partition=5)
    await store_all(store, docs.TRANSACTIONS, first)
    assert {ret.hour_of(e.doc["timestamp"]) for e in first + late if e.doc} == \
        {ret.hour_of(NOW - timedelta(days=40))}
    prune, _ = pruner
    retire = prune._retire
    raced: list[str] = []

    def racing(collection: str, hour: str, done: dict[str, list[str]]) -> None:
        if collection == docs.TRANSACTIONS and not raced:  # the sink's write, meanwhile
            raced.append(hour)
            mongo_db[docs.TRANSACTIONS].insert_many([e.doc for e in late if e.doc])
            Manifests(mongo_db)._write(ret.list_batch(docs.TRANSACTIONS, late, [], NOW), NOW)
        retire(collection, hour, done)

    prune._retire = racing  # type: ignore[method-assign]
    prune.run(NOW)
    assert ids(mongo_db, docs.TRANSACTIONS) == {e.doc["_id"] for e in late if e.doc}
    assert raced[0] in mongo_db[ret.COLLECTION].find_one({"_id": "c|transactions"})["hours"]
    prune._retire = retire  # type: ignore[method-assign]
    prune.run(NOW)
    assert ids(mongo_db, docs.TRANSACTIONS) == set()
    for directory in ret.directory_ids(docs.TRANSACTIONS, raced[0]):
        assert mongo_db[ret.COLLECTION].find_one({"_id": directory}) is None


async def test_an_earlier_versions_hourly_directory_is_still_pruned(
        store: MongoStore, mongo_db: pymongo.database.Database,
        pruner: tuple[Pruner, Commands]) -> None:
    """Directories were one per hour before they were one per minute of writing: an expired
    hour listed that way is pruned the same, its directory deleted."""
    gone, _ = txn_entries(NOW - timedelta(days=40), 30, 12)
    await store_all(store, docs.TRANSACTIONS, gone)
    hour = ret.hour_of(NOW - timedelta(days=40))
    books = mongo_db[ret.COLLECTION]
    slotted = [d for d in books.find({"_id": {"$regex": "^h\\|transactions\\|"}})]
    assert slotted and all(d["_id"].count("|") == 3 for d in slotted)
    names = [n for d in slotted for n in d["manifests"]]
    books.delete_many({"_id": {"$in": [d["_id"] for d in slotted]}})
    books.insert_one({"_id": ret.directory_id(docs.TRANSACTIONS, hour), "manifests": names})
    prune, _ = pruner
    reports = {r.collection: r for r in prune.run(NOW)}
    assert reports[docs.TRANSACTIONS].deleted[docs.TRANSACTIONS] == 30
    assert ids(mongo_db, docs.TRANSACTIONS) == set()
    assert books.find_one({"_id": ret.directory_id(docs.TRANSACTIONS, hour)}) is None
