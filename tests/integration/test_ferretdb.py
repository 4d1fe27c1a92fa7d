"""The real local FerretDB: the MongoDB features the pipeline relies on."""

from __future__ import annotations

import pymongo
import pytest
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError

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
