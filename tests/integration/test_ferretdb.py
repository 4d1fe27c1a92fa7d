"""The real local FerretDB: the MongoDB features the pipeline relies on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pymongo
import pytest
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError

from tests.procs import Proc, free_port, wait_for

pytestmark = pytest.mark.integration


def test_unordered_insert_many_keeps_one_copy_of_duplicates(mongo_db) -> None:
    coll = mongo_db.txns
    coll.insert_many([{"_id": i, "v": i} for i in range(10)])
    with pytest.raises(BulkWriteError) as info:
        coll.insert_many([{"_id": i, "v": -1} for i in range(5, 15)], ordered=False)
    assert info.value.details["nInserted"] == 5
    assert {e["code"] for e in info.value.details["writeErrors"]} == {11000}
    assert coll.count_documents({}) == 15
    assert coll.find_one({"_id": 7})["v"] == 7  # the first copy is kept, not overwritten


def test_bulk_upserts(mongo_db) -> None:
    coll = mongo_db.rollups
    ops = [UpdateOne({"_id": f"m{i % 3}"}, {"$set": {"count": i}, "$setOnInsert": {"first": i}},
                     upsert=True) for i in range(9)]
    result = coll.bulk_write(ops, ordered=True)
    assert result.upserted_count == 3
    docs = {d["_id"]: d for d in coll.find()}
    assert {k: (d["count"], d["first"]) for k, d in docs.items()} == {
        "m0": (6, 0), "m1": (7, 1), "m2": (8, 2)}
    coll.bulk_write([UpdateOne({"_id": "m0"}, {"$max": {"count": 100}, "$inc": {"n": 2}})])
    assert coll.find_one({"_id": "m0"}) | {} == {"_id": "m0", "count": 100, "first": 0, "n": 2}


def test_compound_index(mongo_db) -> None:
    coll = mongo_db.txns
    name = coll.create_index([("user_id", ASCENDING), ("timestamp", DESCENDING)])
    coll.create_index([("merchant_id", ASCENDING), ("minute", ASCENDING)], unique=True)
    info = coll.index_information()
    assert info[name]["key"] == [("user_id", 1), ("timestamp", -1)]
    coll.insert_one({"merchant_id": "m", "minute": 1})
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        coll.insert_one({"merchant_id": "m", "minute": 1})


def test_aggregation_match_group_sort_limit(mongo_db) -> None:
    """One accumulator per $group: FerretDB 1.24 (SQLite) computes only the first accumulator
    of a $group stage and returns 0 for the others (docs/services.md), so the code never puts
    two in one stage."""
    coll = mongo_db.txns
    docs = [{"merchant": f"m{i % 4}", "amount": float(i), "ok": i % 2 == 0} for i in range(40)]
    coll.insert_many(docs)

    def top(accumulator: dict) -> list[tuple[str, float]]:
        return [(g["_id"], g["v"]) for g in coll.aggregate([
            {"$match": {"ok": True}},
            {"$group": {"_id": "$merchant", "v": accumulator}},
            {"$sort": {"v": -1, "_id": 1}},
            {"$limit": 2},
        ])]

    expected: dict[str, list[float]] = {}
    for d in docs:
        if d["ok"]:
            expected.setdefault(d["merchant"], []).append(d["amount"])
    by_revenue = sorted(expected.items(), key=lambda kv: -sum(kv[1]))[:2]
    assert top({"$sum": "$amount"}) == [(m, sum(v)) for m, v in by_revenue]
    assert sorted(top({"$sum": 1})) == sorted((m, len(v)) for m, v in expected.items())[:2]


# --- ferretdb-local's own additions (scripts/ferretdb) ---------------------------------------
FERRETDB = Path(__file__).resolve().parents[2] / ".cache" / "bin" / "ferretdb-local"


def _plan(db: pymongo.database.Database, coll: str, _id: str) -> str:
    """The SQLite plan of an _id lookup. A real query first: an explain alone does not see a
    schema change (a new index) on a connection SQLite already uses."""
    db[coll].find_one({"_id": _id})
    return str(db.command("explain", {"find": coll, "filter": {"_id": _id}})["queryPlanner"])


@pytest.mark.parametrize("id_index", [True, False])
def test_id_lookups_use_an_index_only_with_ferretdb_local_id_index(
        tmp_path: Path, id_index: bool) -> None:
    """FerretDB 1.24 finds documents by ``_id`` with an expression its own ``_id`` index does
    not match: a full scan ("SCAN") unless ferretdb-local adds its index ("SEARCH")."""
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    with Proc("ferretdb", [str(FERRETDB), f"--listen-addr=127.0.0.1:{port}",
                           f"--data-dir={data}", f"--id-index={str(id_index).lower()}",
                           "--sqlite-params=_pragma=synchronous(normal)"],
              dict(os.environ), tmp_path) as proc, \
            pymongo.MongoClient(f"mongodb://127.0.0.1:{port}",
                                serverSelectionTimeoutMS=20_000) as client:
        db = client.ids
        db.rows.insert_many([{"_id": f"r{i}", "n": i} for i in range(300)])
        if id_index:
            wait_for(lambda: "SEARCH" in _plan(db, "rows", "r7"), timeout=20,
                     message="the _id path index")
        else:
            time.sleep(1.5)  # longer than ferretdb-local's check interval
            assert "SCAN" in _plan(db, "rows", "r7") and "SEARCH" not in _plan(db, "rows", "r7")
        # the data and FerretDB's own view of the indexes are unchanged
        assert db.rows.find_one({"_id": "r7"}) == {"_id": "r7", "n": 7}
        db.rows.bulk_write([UpdateOne({"_id": "r7"}, {"$max": {"n": 70}}, upsert=True),
                            UpdateOne({"_id": "new"}, {"$set": {"n": -1}}, upsert=True)])
        assert db.rows.find_one({"_id": "r7"})["n"] == 70 and db.rows.count_documents({}) == 301
        assert list(db.rows.index_information()) == ["_id_"]
        with pytest.raises(pymongo.errors.DuplicateKeyError):
            db.rows.insert_one({"_id": "r8"})
        # a dropped and re-made collection gets the index again
        db.rows.drop()
        db.rows.insert_one({"_id": "again"})
        if id_index:
            wait_for(lambda: "SEARCH" in _plan(db, "rows", "again"), timeout=20,
                     message="the _id path index after a drop")
        assert proc.alive
