"""The sink's database calls (``agents/sink/mongo.py``) on the real FerretDB: collections and
indexes, idempotent inserts, poison documents to dead-letter records, batch records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pymongo
import pytest

from agents.sink import documents as docs
from agents.sink.documents import Entry
from agents.sink.mongo import INDEXES, MongoStore, connect, ensure_collections, is_ferretdb
from app.settings import settings
from tests.sink_data import enriched_stream

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ENRICHED, _ = enriched_stream(300, seed=11)


@pytest.fixture
async def store(mongo_db: pymongo.database.Database) -> AsyncIterator[MongoStore]:
    client = connect(settings.mongo_url)
    yield MongoStore(client[mongo_db.name])
    client.close()


def entries(values: list[dict[str, Any]], topic: str = "t") -> list[Entry]:
    return [Entry(docs.transaction_doc(v), b"{}", topic, 0, i) for i, v in enumerate(values)]


async def test_collections_and_indexes_are_made_once(
        store: MongoStore, mongo_db: pymongo.database.Database) -> None:
    assert ensure_collections(store.db) == "regular"  # FerretDB: no time series
    assert ensure_collections(store.db) == "regular"
    assert set(INDEXES) <= set(mongo_db.list_collection_names())
    info = mongo_db.client.admin.command("buildInfo")
    for name in (docs.TRANSACTIONS, docs.ANOMALIES):
        keys = [list(i["key"].items()) for i in mongo_db[name].list_indexes()]
        expected = [[("_id", 1)]] + [list(i.document["key"].items()) for i in INDEXES[name]]
        # FerretDB never uses a secondary index (mongo.INDEXES): only _id there
        assert keys == (expected[:1] if is_ferretdb(info) else expected)


async def test_ferretdb_is_told_from_mongodb() -> None:
    assert is_ferretdb({"version": "7.0.42", "ferretdbVersion": "v1.24.2"})
    assert is_ferretdb({"version": "7.0.77", "ferretdb": {"version": "v2.1.0"}})
    assert not is_ferretdb({"version": "7.0.14", "versionArray": [7, 0, 14, 0]})


async def test_insert_is_idempotent(store: MongoStore,
                                    mongo_db: pymongo.database.Database) -> None:
    first = await store.insert(docs.TRANSACTIONS, entries(ENRICHED[:200]))
    assert (first.inserted, first.duplicates, first.rejected) == (200, 0, [])
    stored = {d["_id"]: d for d in mongo_db[docs.TRANSACTIONS].find()}
    # a replay of an overlapping range, with different numbers: nothing changes
    changed = [dict(v, user_txn_count=999) for v in ENRICHED[100:300]]
    again = await store.insert(docs.TRANSACTIONS, entries(changed))
    assert (again.inserted, again.duplicates) == (100, 100)
    after = {d["_id"]: d for d in mongo_db[docs.TRANSACTIONS].find()}
    assert len(after) == 300
    assert all(after[k] == v for k, v in stored.items())
    doc = after[ENRICHED[0]["txn_id"]]
    # the compact layout: id, user, date and the message's text, which reads back as sent
    assert doc.keys() == {"_id", "user_id", "timestamp", "txn"}
    assert doc["timestamp"].replace(tzinfo=UTC) == docs.to_date(ENRICHED[0]["timestamp"])
    assert doc["user_id"] == ENRICHED[0]["user_id"]
    assert docs.unpack_transaction(doc) == ENRICHED[0]


async def test_poison_goes_to_dead_letters_and_the_rest_is_stored(
        store: MongoStore, mongo_db: pymongo.database.Database) -> None:
    good = entries(ENRICHED[:5])
    rejected_by_server = Entry({**docs.transaction_doc(ENRICHED[5]), "$where": 1},
                               b'{"$where": 1}', "t", 1, 10)
    rejected_by_client = Entry({**docs.transaction_doc(ENRICHED[6]), "n": 2**70},
                               b'{"n": 1180591620717411303424}', "t", 1, 11)
    unreadable = Entry(None, b"\xff not json", "t", 1, 12, "not valid JSON")
    result = await store.insert(docs.TRANSACTIONS,
                               [*good, rejected_by_server, unreadable, rejected_by_client])
    assert result.inserted == 5 and len(result.rejected) == 3
    assert mongo_db[docs.TRANSACTIONS].count_documents({}) == 5
    dead = {d["_id"]: d for d in mongo_db[docs.DLQ].find()}
    assert set(dead) == {"t:1:10", "t:1:11", "t:1:12"}
    assert "$" in dead["t:1:10"]["reason"] and dead["t:1:12"]["original"] == "\ufffd not json"
    assert all(d["stage"] == "sink" for d in dead.values())
    # the same batch again: no new dead letters, nothing else changes
    await store.insert(docs.TRANSACTIONS, [*good, rejected_by_server, unreadable])
    assert mongo_db[docs.DLQ].count_documents({}) == 3


async def test_batch_records(store: MongoStore, mongo_db: pymongo.database.Database) -> None:
    result = await store.insert(docs.TRANSACTIONS, entries(ENRICHED[:3]))
    await store.record_batch(docs.TRANSACTIONS, result, 0.01, datetime.now(UTC))
    row = mongo_db[docs.METRICS].find_one()
    assert row is not None and row["inserted"] == 3 and row["lag_seconds"] >= 0
