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


async def test_two_processes_share_documents_and_replays_change_nothing(
        store: MongoStore, mongo_db: pymongo.database.Database) -> None:
    """Two processes (partitions 0 and 1) write parts of the same documents with dotted
    ``$set`` upserts; a restarted process reading its partition again changes nothing: the
    stored documents equal the ones built from each transaction once."""
    merchants = 50  # more documents than one update command holds (user_days)
    a, b = Rollups(store), Rollups(store)
    await a.write(items(0, merchants, 0), exclusive=False)
    await b.write(items(1, merchants, 0), exclusive=False)
    await a.write(items(0, merchants, 3 * merchants), exclusive=False)
    # process a restarts (empty cache) and reads its partition again from the start
    await Rollups(store).write(items(0, merchants, 0), exclusive=False)

    expected = agg.build(items(0, merchants, 0) + items(0, merchants, 3 * merchants)
                         + items(1, merchants, 0))
    for name in agg.COLLECTIONS:
        assert sorted(mongo_db[name].find(), key=lambda d: d["_id"]) == sorted(
            expected[name], key=lambda d: d["_id"]), name
    hour = mongo_db[agg.VOLUME_HOURS].find_one({"_id": "2026-11-26T01"})
    assert hour is not None and agg.sum_parts(agg.parts_of(hour["minutes"]["00"])) == (
        9 * merchants, merchants * (6 * 100 + 3 * 200), sum(i % 2 for i in range(3 * merchants))
        * 3)
    merchant = mongo_db[agg.MERCHANT_DAYS].find_one({"_id": "2026-11-26"})
    assert merchant is not None and merchant["merchants"]["m%2E0"]["id"] == "m.0"


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
    expected = agg.build([i for i in items if i is not None])
    for name in agg.COLLECTIONS:
        assert sorted(mongo_db[name].find(), key=lambda d: d["_id"]) == sorted(
            expected[name], key=lambda d: d["_id"]), name
