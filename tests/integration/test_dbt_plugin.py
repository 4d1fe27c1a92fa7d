"""The dbt-duckdb MongoDB plugin (app/mongo_dbt.py) against the real FerretDB, without dbt:
loading a collection into Arrow, turning a mart into documents, replacing a collection."""

from __future__ import annotations

import threading
from datetime import date, datetime
from decimal import Decimal
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dbt.adapters.duckdb.utils import SourceConfig, TargetConfig, TargetLocation

from app.mongo_dbt import (
    TMP_MARK,
    MongoPluginError,
    Plugin,
    arrow_schema,
    load_collection,
    replace_collection,
    supports_drop_target,
    to_documents,
)
from app.settings import settings

pytestmark = pytest.mark.integration

FIELDS = {"_id": "string", "amount": "double", "n": "bigint", "ok": "boolean",
          "at": "timestamp"}


def test_load_collection_projects_types_and_fills_missing_fields(mongo_db) -> None:
    at = datetime(2026, 11, 25, 12, 30, 1, 250000)
    mongo_db.c.insert_many(
        [{"_id": f"t{i}", "amount": i * 1.5, "n": i, "ok": i % 2 == 0, "at": at,
          "secret": "not loaded"} for i in range(25)]
        + [{"_id": "bare", "amount": 7}])  # an int amount, the other fields missing
    table = load_collection(mongo_db.c, FIELDS, batch_size=10)  # three batches
    assert table.schema == arrow_schema(FIELDS)
    rows = {r["_id"]: r for r in table.to_pylist()}
    assert len(rows) == 26
    assert rows["t3"] == {"_id": "t3", "amount": 4.5, "n": 3, "ok": False, "at": at}
    assert rows["bare"] == {"_id": "bare", "amount": 7.0, "n": None, "ok": None, "at": None}
    empty = load_collection(mongo_db.nothing, FIELDS)
    assert empty.num_rows == 0 and empty.schema == arrow_schema(FIELDS)


def test_load_collection_rejects_a_document_of_the_wrong_type(mongo_db) -> None:
    mongo_db.c.insert_one({"_id": "x", "amount": "12.50"})
    with pytest.raises(MongoPluginError, match=r"does not fit.*amount"):
        load_collection(mongo_db.c, FIELDS)


def test_arrow_schema_needs_known_types() -> None:
    with pytest.raises(MongoPluginError, match="unknown field types"):
        arrow_schema({"a": "money"})
    with pytest.raises(MongoPluginError, match="non-empty"):
        arrow_schema({})


def test_to_documents() -> None:
    table = pa.table({"day": pa.array([date(2026, 11, 25), None], pa.date32()),
                      "m": ["m1", None], "x": pa.array([Decimal("1.25"), None]),
                      "n": pa.array([3, None], pa.int64())})
    # the all-null row is the placeholder dbt-duckdb writes for an empty model
    assert to_documents(table, ["day", "m"]) == [
        {"_id": "2026-11-25|m1", "day": "2026-11-25", "m": "m1", "x": 1.25, "n": 3}]
    assert to_documents(table.slice(1), ["m"]) == []
    with pytest.raises(MongoPluginError, match="must name columns"):
        to_documents(table, ["nope"])
    with pytest.raises(MongoPluginError, match="not unique"):
        to_documents(pa.table({"k": ["a", "a"]}), ["k"])


def test_replace_collection_creates_then_syncs(mongo_db) -> None:
    assert supports_drop_target(mongo_db) is False  # FerretDB 1.24
    mongo_db.create_collection(f"mart{TMP_MARK}left0ver")
    v1 = [{"_id": k, "v": i} for i, k in enumerate("abc")]
    assert replace_collection(mongo_db, "mart", v1) == "created"
    assert list(mongo_db.mart.find().sort("_id")) == v1
    v2 = [{"_id": "b", "v": 1}, {"_id": "c", "v": 20}, {"_id": "d", "v": 3}]
    assert replace_collection(mongo_db, "mart", v2) == "synced"
    assert list(mongo_db.mart.find().sort("_id")) == v2
    assert replace_collection(mongo_db, "mart", []) == "synced"
    assert mongo_db.mart.count_documents({}) == 0
    assert replace_collection(mongo_db, "empty", []) == "created"
    assert sorted(mongo_db.list_collection_names()) == ["empty", "mart"]


def plugin(db_name: str) -> Plugin:
    return Plugin(name="mongo", plugin_config={"mongo_url": settings.mongo_url,
                                               "mongo_db": db_name})


def source(**meta: object) -> SourceConfig:
    return SourceConfig(name="mongo", identifier="transactions", schema="main",
                        database=None, meta=dict(meta), tags=[])


def test_plugin_load_and_store(mongo_db, tmp_path) -> None:
    mongo_db.transactions.insert_many([{"_id": "a", "amount": 1.0}])
    mongo = plugin(mongo_db.name)
    config = source(fields={"_id": "string", "amount": "double"})
    first = mongo.load(config)
    mongo_db.transactions.insert_one({"_id": "b", "amount": 2.0})
    assert mongo.load(config) is first  # one snapshot per dbt invocation
    assert first.to_pylist() == [{"_id": "a", "amount": 1.0}]
    with pytest.raises(MongoPluginError, match="needs a 'fields' map"):
        mongo.load(source())

    path = tmp_path / "top.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "total": [3.5, 1.0]}), path)

    def target(fmt: str = "parquet", key: object = "user_id") -> TargetConfig:
        return TargetConfig(relation=SimpleNamespace(identifier="top"), column_list=[],
                            config={"mongo_key": key},
                            location=TargetLocation(path=str(path), format=fmt))

    mongo.store(target())
    mongo.store(target(key=["user_id"]))  # the second time syncs in place
    assert list(mongo_db.top.find().sort("_id")) == [
        {"_id": "u1", "user_id": "u1", "total": 3.5},
        {"_id": "u2", "user_id": "u2", "total": 1.0}]
    with pytest.raises(MongoPluginError, match="external"):
        mongo.store(target(fmt="csv"))
    with pytest.raises(MongoPluginError, match="mongo_key"):
        mongo.store(target(key=None))


def test_plugin_needs_its_config() -> None:
    with pytest.raises(MongoPluginError, match="mongo_db"):
        Plugin(name="mongo", plugin_config={"mongo_url": settings.mongo_url})


def test_a_reader_never_sees_a_replaced_collection_missing_or_partial(mongo_db) -> None:
    """Hundreds of rows, so each replacement takes a while; a thread polls all along."""
    v1 = [{"_id": f"k{i:05d}", "v": i, "gen": 1} for i in range(600)]
    v2 = [{"_id": f"k{i:05d}", "v": i if i % 3 else -i, "gen": 1 if i % 3 else 2}
          for i in range(200, 800)]  # 200 gone, 200 new, a third of the rest changed
    by_id = {1: {d["_id"]: d for d in v1}, 2: {d["_id"]: d for d in v2}}
    polls: list[dict[str, dict]] = []
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.002):
            polls.append({d["_id"]: d for d in mongo_db.mart.find({}, batch_size=100_000)})

    reader = threading.Thread(target=poll, daemon=True)
    reader.start()
    try:
        assert replace_collection(mongo_db, "mart", v1) == "created"
        seen_v1 = len(polls)
        assert replace_collection(mongo_db, "mart", v2) == "synced"
    finally:
        done.set()
        reader.join(30)
    assert len(polls) > seen_v1 > 0
    both = set(by_id[1]) & set(by_id[2])
    for i, rows in enumerate(polls):
        if i < seen_v1 and not rows:
            continue  # before the first version appeared
        if i < seen_v1 and rows == by_id[1]:
            continue  # complete first version
        assert both <= set(rows) <= set(by_id[1]) | set(by_id[2]), i
        assert all(doc in (by_id[1].get(k), by_id[2].get(k)) for k, doc in rows.items()), i
    assert {d["_id"]: d for d in mongo_db.mart.find({})} == by_id[2]
    assert any(set(rows) != set(by_id[2]) for rows in polls[seen_v1:]), "no poll during sync"
