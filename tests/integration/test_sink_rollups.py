"""The aggregate writes of the sink on the real FerretDB (``agents/sink/mongo.py``:
``write_aggregates``, ``aggregate_docs``, ``stored_txn``), driven by
:meth:`agents.sink.rollups.Rollups.write`, and a redelivered batch through the insert and the
rollups (stored once, counted once)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pymongo
import pytest

from agents.sink import aggregates as agg
from agents.sink import documents as docs
from agents.sink.batch import Acks
from agents.sink.documents import Entry
from agents.sink.mongo import MongoStore, connect
from agents.sink.rollups import Countable, Rollups, countable
from app.settings import settings
from tests.sink_data import enriched_stream

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MINUTE = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


@pytest.fixture
async def store(mongo_db: pymongo.database.Database) -> AsyncIterator[MongoStore]:
    client = connect(settings.mongo_url)
    yield MongoStore(client[mongo_db.name])
    client.close()


def items(partition: int, merchants: int, first_offset: int) -> list[Countable]:
    """3 per merchant (one user each): 1.00 (partition 0) or 2.00 (partition 1) USD each, in
    yen (150 or 300 yen) when ``i`` is even, else in euros (0.93 or 1.86)."""
    return [Countable(f"m.{i % merchants}", "grocery", MINUTE, 100 * (partition + 1), i % 2,
                      partition, first_offset + i, "JPY" if i % 2 == 0 else "EUR",
                      (15_000 if i % 2 == 0 else 93) * (partition + 1), "USD",
                      f"u{partition}-{i % merchants}")
            for i in range(3 * merchants)]


def stored_docs(mongo_db: pymongo.database.Database, name: str) -> list[dict]:
    """A collection's documents, ``p<n>`` texts read back as (offset, numbers)."""
    return sorted((plain(d) for d in mongo_db[name].find()), key=lambda d: d["_id"])


def plain(doc: dict) -> dict:
    return {k: (agg.unpack(v).offset, agg.unpack(v).places)
            if k[:1] == "p" and k[1:].isdigit() else v for k, v in doc.items()}


def assert_built(mongo_db: pymongo.database.Database, counted: list[Countable]) -> None:
    """Every aggregate collection holds exactly the documents built from ``counted``."""
    expected = agg.build(counted)
    for name in agg.COLLECTIONS:
        assert stored_docs(mongo_db, name) == sorted(
            (plain(d) for d in expected[name]), key=lambda d: d["_id"]), name


async def test_two_processes_share_documents_and_replays_change_nothing(
        store: MongoStore, mongo_db: pymongo.database.Database) -> None:
    """Two processes (partitions 0 and 1) upsert their own ``p<n>`` fields of the same
    documents; a restarted process reading its partition again changes nothing: the stored
    documents equal the ones built from each transaction once."""
    merchants = 50
    a, b = Rollups(store), Rollups(store)
    await a.write(items(0, merchants, 0), exclusive=False)
    await b.write(items(1, merchants, 0), exclusive=False)
    await a.write(items(0, merchants, 3 * merchants), exclusive=False)
    # process a restarts (empty cache) and reads its partition again from the start
    await Rollups(store).write(items(0, merchants, 0), exclusive=False)

    assert_built(mongo_db, items(0, merchants, 0) + items(0, merchants, 3 * merchants)
                 + items(1, merchants, 0))
    hour = mongo_db[agg.VOLUME_HOURS].find_one({"_id": "2026-11-26T01"})
    assert hour is not None and set(hour) == {"_id", "reporting_currency", "p0", "p1"}
    minute = agg.totals(hour)["00"]
    assert (minute.a, minute.b, minute.c) == (
        9 * merchants, merchants * (6 * 100 + 3 * 200),
        sum(i % 2 for i in range(3 * merchants)) * 3)
    day = mongo_db[agg.MERCHANT_DAYS].find_one({"_id": "2026-11-26"})
    assert day is not None
    merchant = agg.totals(day)["m.0"]  # 6 at 1.00 (partition 0), 3 at 2.00 (partition 1)
    assert (merchant.a, merchant.b, merchant.label) == (9, 6 * 100 + 3 * 200, "grocery")


async def test_one_document_per_statement_whatever_the_number_of_merchants(
        store: MongoStore, mongo_db: pymongo.database.Database) -> None:
    """1,000 merchants in one flush: the merchant day is one document, read back whole by a
    restarted process, and more documents than one update command holds (the user groups)
    are written."""
    counted = items(0, 1000, 0)
    await Rollups(store).write(counted)
    assert mongo_db[agg.USERS_BY_DAY].count_documents({}) == agg.USER_GROUPS
    day = mongo_db[agg.MERCHANT_DAYS].find_one({"_id": "2026-11-26"})
    assert day is not None and len(agg.totals(day)) == 1000
    more = items(0, 1000, 3000)
    await Rollups(store).write(counted + more)  # a restart and a replay
    assert_built(mongo_db, counted + more)


async def test_stored_txn(store: MongoStore, mongo_db: pymongo.database.Database) -> None:
    mongo_db[docs.TRANSACTIONS].insert_one({"_id": "t-1", "txn": '{"a": 1}'})
    assert await store.stored_txn(["t-1", "t-2"]) == {"t-1": '{"a": 1}'}


async def test_a_redelivered_batch_is_stored_once_and_counted_once(
        store: MongoStore, mongo_db: pymongo.database.Database) -> None:
    """The sink's insert then rollups on FerretDB: the compact documents are stored; the same
    messages read again (a redelivery) are duplicates and add nothing; a message the worker
    emitted again (same ``txn_id``, a later ``processed_at``) is neither stored nor counted."""
    enriched, _ = enriched_stream(300, seed=5)
    raws = [orjson.dumps(e) for e in enriched]

    def batch(values: list[bytes], first: int) -> list[Entry]:
        return [Entry(*docs.transaction(raw)[:1], raw, "t", 0, first + i,
                      fields=docs.transaction(raw)[1]) for i, raw in enumerate(values)]

    acked: list[object] = []

    async def ack(events: object) -> None:
        acked.extend(events)  # type: ignore[call-overload]

    rollups = Rollups(store)
    first = batch(raws[:200], 0)
    result = await store.insert(docs.TRANSACTIONS, first)
    await rollups.add(first, result, Acks(ack, list(range(200))))
    await rollups.flush()
    # a restart: the last 100 read again, with the next 100 and 20 emitted again
    again = [orjson.dumps({**e, "processed_at": "2026-12-01T00:00:00+00:00"})
             for e in enriched[:20]]
    second = batch(raws[100:] + again, 100)
    result = await store.insert(docs.TRANSACTIONS, second)
    assert (result.inserted, result.duplicates) == (100, 120)
    restarted = Rollups(store)
    await restarted.add(second, result, Acks(ack, list(range(200, 420))))
    await restarted.flush()
    assert len(acked) == 420

    stored = {d["_id"]: d for d in mongo_db[docs.TRANSACTIONS].find()}
    assert len(stored) == 300
    assert all(d.keys() == {"_id", "user_id", "timestamp", "txn"} for d in stored.values())
    assert [docs.unpack_transaction(stored[e["txn_id"]]) for e in enriched] == enriched
    items = [countable(docs.transaction(raw)[1], 0, i) for i, raw in enumerate(raws)]
    counted = [i for i in items if i is not None]
    assert_built(mongo_db, counted)
    volume = sum(t.a for d in mongo_db[agg.VOLUME_HOURS].find()
                 for t in agg.totals(d).values())
    assert volume == len(counted) > 250  # each stored transaction counted once
