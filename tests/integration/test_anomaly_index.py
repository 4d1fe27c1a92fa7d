"""The anomalies' time index on the real FerretDB: written by the sink's writer step
(``MongoSink`` with ``AnomalyIndex``: acked only after the index write, the same documents after
a redelivery), pruned by ``txn prune`` with the anomalies, and read by ``/anomalies`` with a
bounded number of ``find`` commands whatever the number of anomalies stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pymongo
import pytest

from agents.sink import anomaly_index as ai
from agents.sink import documents as docs
from agents.sink.documents import Entry
from agents.sink.mongo import MongoStore, connect
from agents.sink.prune import ANOMALY_INDEX, Pruner
from agents.sink.writer import MongoSink
from app.settings import settings
from tests.mongo_finds import Finds
from views import anomaly_pages, queries

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture
async def store(mongo_db: pymongo.database.Database) -> AsyncIterator[MongoStore]:
    client = connect(settings.mongo_url)
    yield MongoStore(client[mongo_db.name])
    client.close()


def message(i: int, ts: datetime, **fields: Any) -> dict[str, Any]:
    return {"txn_id": f"{i:064x}", "user_id": f"u{i % 5}", "amount": 900.0 + i,
            "currency": "EUR", "amount_reporting": 972.0 + i, "reporting_currency": "USD",
            "merchant_id": f"m.{i % 3}", "merchant_category": "travel",
            "timestamp": ts.isoformat(), "z_score": 4.0 + i % 7, "mean_prev": 30.0,
            "std_prev": 10.0, "n_prev": 12, "detected_at": NOW.isoformat(), **fields}


def entries(values: Sequence[dict[str, Any]], first_offset: int = 0) -> list[Entry]:
    out = []
    for n, value in enumerate(values):
        raw = orjson.dumps(value)
        out.append(Entry(docs.anomaly_doc(docs.parse_json(raw)), raw, "anomalies", 0,
                         first_offset + n))
    return out


async def store_batch(store: MongoStore, batch: list[Entry]) -> list[Any]:
    """Through the sink's writer and its index step; the events acked."""
    acked: list[Any] = []

    async def ack(events: Sequence[Any]) -> None:
        acked.extend(events)

    writer = MongoSink(store, docs.ANOMALIES, ack, max_size=10_000, max_seconds=60,
                       after_write=ai.AnomalyIndex(store))
    await writer.add(batch, [e.offset for e in batch])
    await writer.flush()
    return acked


def index(db: pymongo.database.Database) -> dict[str, list[dict[str, Any]]]:
    return {c: sorted(db[c].find({}), key=lambda d: d["_id"]) for c in (ai.MINUTES, ai.DAYS)}


def expected_index(db: pymongo.database.Database) -> dict[str, list[dict[str, Any]]]:
    """What the builders make of the stored ``anomalies``."""
    made = ai.index_documents(db.anomalies.find({}))
    return {c: sorted(made[c], key=lambda d: d["_id"]) for c in (ai.MINUTES, ai.DAYS)}


async def test_the_step_indexes_the_stored_batch_then_acks_and_redelivery_changes_nothing(
        store: MongoStore, mongo_db: pymongo.database.Database) -> None:
    values = [message(i, NOW - timedelta(minutes=i // 4, seconds=i)) for i in range(30)]
    batch = entries(values)
    assert await store_batch(store, batch) == list(range(30))
    first = index(mongo_db)
    assert first == expected_index(mongo_db) and len(first[ai.MINUTES]) >= 8
    # A redelivery (the process died before committing) and another message reusing a txn_id
    # with another time: the stored document is what stays indexed.
    again = entries([*values, message(3, NOW - timedelta(days=2))], first_offset=0)
    assert len(await store_batch(store, again)) == 31
    assert index(mongo_db) == first
    items, cursor = queries.anomalies(mongo_db, 50, now=NOW)
    assert [a["txn_id"] for a in items] == [
        d["_id"] for d in sorted(mongo_db.anomalies.find({}),
                                 key=lambda d: (d["timestamp"], d["_id"]), reverse=True)]
    assert cursor is None


async def test_prune_deletes_the_expired_index_with_the_anomalies(
        store: MongoStore, mongo_db: pymongo.database.Database) -> None:
    now = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
    old = now - timedelta(days=100)
    edge = (now - timedelta(days=90)).replace(minute=0)  # the cutoff's day: partly expired
    values = [message(i, old + timedelta(minutes=i)) for i in range(3)]
    values += [message(10, edge - timedelta(hours=2)), message(11, edge + timedelta(hours=1))]
    values += [message(20 + i, now - timedelta(minutes=i)) for i in range(3)]
    await store_batch(store, entries(values))
    prune = Pruner(mongo_db, {docs.TRANSACTIONS: 30, docs.ANOMALIES: 90, docs.DLQ: 30,
                              "aggregates": 400})
    reports = {r.collection: r for r in prune.run(now)}
    assert reports[ANOMALY_INDEX].deleted == {ai.MINUTES: 4, ai.DAYS: 1}
    assert index(mongo_db) == expected_index(mongo_db)  # what is left indexes what is left
    assert {d["_id"] for d in mongo_db[ai.DAYS].find({})} == {
        ai.day_id(edge), ai.month_id(edge), ai.day_id(now), ai.month_id(now)}
    assert mongo_db[ai.DAYS].find_one({"_id": ai.day_id(edge)})["minutes"] == {"1300": 1}
    again = {r.collection: r for r in prune.run(now)}
    assert again[ANOMALY_INDEX].deleted == {ai.MINUTES: 0, ai.DAYS: 0}


def seed(db: pymongo.database.Database, start: int, n: int, first: datetime,
         step: timedelta) -> None:
    stored = [docs.anomaly_doc(message(start + i, first - i * step)) for i in range(n)]
    db.anomalies.insert_many(stored)
    for collection, made in ai.index_documents(stored).items():
        try:
            db[collection].insert_many(made, ordered=False)
        except pymongo.errors.BulkWriteError as exc:  # a day or month already there: merged
            for error in exc.details["writeErrors"]:
                doc = made[error["index"]]
                paths = {f"{k}.{key}": v for k, m in doc.items() if k != "_id"
                         for key, v in m.items()}
                db[collection].update_one({"_id": doc["_id"]}, {"$set": paths})


def costs(db: Any, finds: Finds) -> list[int]:
    """The ``find`` commands of: the first page, the next one, a rare filter's first page."""
    out = []
    _, cursor = queries.anomalies(db, 50, now=NOW)
    for run in (lambda: queries.anomalies(db, 50, now=NOW),
                lambda: queries.anomalies(db, 50, cursor, now=NOW),
                lambda: queries.anomalies(db, 50, min_z=11.0, now=NOW)):
        finds.filters.clear()
        run()
        assert all(set(f) == {"_id"} and isinstance(f["_id"], str) for f in finds.filters)
        out.append(len(finds.filters))
    return out


def test_reads_are_bounded_whatever_the_history(counted: tuple[Any, Finds]) -> None:
    """An hour of dense anomalies (3 a second), then 30 days more of sparse ones: the same
    finds for the first and the next page, and a rare filter within the budget; its page is
    short, with a cursor that goes on."""
    db, finds = counted
    seed(db, 0, 3000, NOW, timedelta(seconds=1))  # ~50 minutes, 60 a minute
    small = costs(db, finds)
    seed(db, 10_000, 4000, NOW - timedelta(hours=2), timedelta(minutes=11))  # 30 days
    large = costs(db, finds)
    assert small[:2] == large[:2] and max(small[:2]) <= 5
    budget = anomaly_pages.INDEX_READS + anomaly_pages.MINUTE_READS
    assert max(small[2], large[2]) <= budget
    items, cursor = queries.anomalies(db, 50, min_z=11.0, now=NOW)
    assert len(items) < 50 and cursor is not None and queries.decode_cursor(cursor)[1] is None
