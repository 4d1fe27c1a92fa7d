"""The dbt-duckdb MongoDB plugin (app/mongo_dbt.py) against the real FerretDB, without dbt:
loading a collection into Arrow, turning a mart into documents, replacing a collection."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dbt.adapters.duckdb.utils import SourceConfig, TargetConfig, TargetLocation

from agents.sink.aggregates import Countable, build
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


def plugin(db_name: str, state_dir: object) -> Plugin:
    return Plugin(name="mongo", plugin_config={"mongo_url": settings.mongo_url,
                                               "mongo_db": db_name,
                                               "state_dir": str(state_dir)})


def source(**meta: object) -> SourceConfig:
    return SourceConfig(name="mongo", identifier="transactions", schema="main",
                        database=None, meta=dict(meta), tags=[])


def test_plugin_load_and_store(mongo_db, tmp_path) -> None:
    mongo_db.transactions.insert_many([{"_id": "a", "amount": 1.0}])
    mongo = plugin(mongo_db.name, tmp_path / "state")
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
    mongo.store(target(key=["user_id"]))  # the second time: nothing changed, nothing written
    assert list(mongo_db.top.find().sort("_id")) == [
        {"_id": "u1", "user_id": "u1", "total": 3.5},
        {"_id": "u2", "user_id": "u2", "total": 1.0}]
    # Then only the changed row is written (from what the plugin wrote last, kept in
    # state_dir; the collection is not read).
    pq.write_table(pa.table({"user_id": ["u1", "u3"], "total": [4.5, 1.0]}), path)
    mongo_db.top.update_one({"_id": "u1"}, {"$set": {"marker": 1}})
    mongo.store(target())
    assert list(mongo_db.top.find().sort("_id")) == [
        {"_id": "u1", "user_id": "u1", "total": 4.5},
        {"_id": "u3", "user_id": "u3", "total": 1.0}]
    assert (tmp_path / "state" / f"{mongo_db.name}.top.written.parquet").exists()
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


# --- incremental reads (a mirror refreshed for the recent days) and changed-row writes --------
MERCHANT_DAYS = {
    "fields": {"_id": "string", "reporting_currency": "string"},
    "packed": {"key": "merchant_id", "values": ["txn_count", "cents", "anomaly_count"],
               "label": "merchant_category"},
    "window": {"by": "day_ids", "day_column": "_id"}}


def merchant_day(day: date, count: int) -> dict:
    """A merchant_days document as the sink writes it: ``count`` transactions of merchant m1,
    split over two partitions."""
    minute = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    items = [Countable("m1", "travel", minute, 100, 0, i % 2, i, "USD", 100, "USD")
             for i in range(count)]
    (doc,) = build(items)["merchant_days"]
    return doc


def counts(table: pa.Table) -> dict[str, int]:
    return {r["_id"]: r["txn_count"] for r in table.to_pylist()}


def test_load_windowed_reads_all_then_only_the_recent_days(mongo_db, tmp_path) -> None:
    from datetime import timedelta

    from app.mongo_dbt import load_windowed

    today = date(2026, 11, 30)
    days = [today - timedelta(days=i) for i in range(6)]
    mongo_db.merchant_days.insert_many([merchant_day(d, 1) for d in days])
    table, read = load_windowed(mongo_db.merchant_days, MERCHANT_DAYS, tmp_path, 1, today=today)
    assert read == {"first": None, "docs": 6, "rows": 6}
    assert counts(table) == {d.isoformat(): 1 for d in days}

    # An old day and yesterday change; a new day appears (tomorrow, the window's last day).
    for day, count in ((days[4], 7), (days[1], 2), (today + timedelta(days=1), 3)):
        mongo_db.merchant_days.replace_one({"_id": day.isoformat()}, merchant_day(day, count),
                                           upsert=True)
    table, read = load_windowed(mongo_db.merchant_days, MERCHANT_DAYS, tmp_path, 1, today=today)
    # last day seen 2026-11-30, lookback 1: 11-29 .. 12-01 read by _id (3 lookups, 3 found)
    assert read == {"first": "2026-11-29", "docs": 3, "rows": 7}
    seen = counts(table)
    assert seen["2026-11-29"] == 2 and seen["2026-12-01"] == 3
    assert seen[days[4].isoformat()] == 1  # outside the window: the mirror's old row

    table, read = load_windowed(mongo_db.merchant_days, MERCHANT_DAYS, tmp_path, 1,
                                full_refresh=True, today=today)
    assert read["first"] is None and counts(table)[days[4].isoformat()] == 7
    other = {**MERCHANT_DAYS, "fields": {"_id": "string"}}  # another config: no mirror
    _, read = load_windowed(mongo_db.merchant_days, other, tmp_path, 1, today=today)
    assert read["first"] is None


def test_load_windowed_recent_days_then_the_whole_lookback_when_due(mongo_db, tmp_path) -> None:
    """With ``recent_days`` only the last days are read while the deep read is not due; a
    change to an older day inside the lookback is read once it is due."""
    from datetime import timedelta

    from app.mongo_dbt import load_windowed

    today = date(2026, 11, 30)
    days = [today - timedelta(days=i) for i in range(6)]
    mongo_db.merchant_days.insert_many([merchant_day(d, 1) for d in days])
    config = {**MERCHANT_DAYS, "window": {**MERCHANT_DAYS["window"], "recent_days": 1,
                                          "deep_refresh_seconds": "3600"}}
    _, read = load_windowed(mongo_db.merchant_days, config, tmp_path, 4, today=today)
    assert read["first"] is None
    for day, count in ((days[3], 7), (days[1], 2)):
        mongo_db.merchant_days.replace_one({"_id": day.isoformat()}, merchant_day(day, count))
    table, read = load_windowed(mongo_db.merchant_days, config, tmp_path, 4, today=today)
    # not due: yesterday .. tomorrow (3 lookups, 2 found); the day 3 days back is the copy's
    assert read == {"first": "2026-11-29", "docs": 2, "rows": 6}
    assert counts(table)["2026-11-29"] == 2 and counts(table)[days[3].isoformat()] == 1
    config["window"]["deep_refresh_seconds"] = 0  # due (how often: the same copy)
    table, read = load_windowed(mongo_db.merchant_days, config, tmp_path, 4, today=today)
    assert read == {"first": "2026-11-26", "docs": 5, "rows": 6}
    assert counts(table)[days[3].isoformat()] == 7


def test_load_windowed_all_since_and_refresh_seconds(mongo_db, tmp_path) -> None:
    from app.mongo_dbt import load_windowed

    users = {"fields": {"_id": "string", "day": "string"},
             "packed": {"key": "user_id", "values": ["txn_count"]},
             "window": {"by": "all", "day_column": "day", "refresh_seconds": "3600"}}
    mongo_db.users_by_day.insert_many([
        {"_id": "2026-11-20/01", "day": "2026-11-20", "p0": '[4, {"u1": [1, 5, 0]}]'},
        {"_id": "2026-11-30/01", "day": "2026-11-30", "p0": '[9, {"u1": [2, 5, 0]}]',
         "p1": '[3, {"u2": [5, 50, 1]}]'}])
    today = date(2026, 11, 30)
    table, read = load_windowed(mongo_db.users_by_day, users, tmp_path, 2, today=today)
    assert table.num_rows == 3 and read["first"] is None
    mongo_db.users_by_day.update_one({"_id": "2026-11-30/01"},
                                     {"$set": {"p1": '[5, {"u2": [9, 90, 1], "u3": [4, 1, 0]}]'}})
    # Read less than refresh_seconds ago: the copy is used as it is.
    table, read = load_windowed(mongo_db.users_by_day, users, tmp_path, 2, today=today)
    assert read == {"first": "kept", "docs": 0, "rows": 3}
    # Due (another interval: the same copy, since how often is not what): all read again.
    users["window"] = {**users["window"], "refresh_seconds": 0}
    table, read = load_windowed(mongo_db.users_by_day, users, tmp_path, 2, today=today)
    assert read == {"first": None, "docs": 2, "rows": 4}
    rows = {(r["day"], r["user_id"]): r["txn_count"] for r in table.to_pylist()}
    assert rows == {("2026-11-20", "u1"): 1, ("2026-11-30", "u1"): 2,
                    ("2026-11-30", "u2"): 9, ("2026-11-30", "u3"): 4}

    anomalies = {"fields": {"_id": "string", "timestamp": "timestamp"},
                 "window": {"by": "since", "field": "timestamp", "day_column": "timestamp"}}
    mongo_db.anomalies.insert_many([{"_id": "a", "timestamp": datetime(2026, 11, 20, 5)},
                                    {"_id": "b", "timestamp": datetime(2026, 11, 30, 5)}])
    load_windowed(mongo_db.anomalies, anomalies, tmp_path, 1, today=today)
    mongo_db.anomalies.insert_many([{"_id": "c", "timestamp": datetime(2026, 11, 30, 6)},
                                    {"_id": "old", "timestamp": datetime(2026, 11, 2)}])
    table, read = load_windowed(mongo_db.anomalies, anomalies, tmp_path, 1, today=today)
    assert read["docs"] == 2  # b and c: from 2026-11-29 on
    assert sorted(table.column("_id").to_pylist()) == ["a", "b", "c"]


def test_write_changes_writes_only_what_changed(mongo_db) -> None:
    from app.mongo_dbt import write_changes

    old = [{"_id": f"r{i}", "n": i} for i in range(120)]
    mongo_db.mart.insert_many([dict(d) for d in old])
    new = [{"_id": f"r{i}", "n": i + (1 if i % 40 == 0 else 0)} for i in range(1, 120)]
    new.append({"_id": "extra", "n": -1})
    assert write_changes(mongo_db.mart, old, new) == (3, 1)  # r40, r80, extra; r0 gone
    assert {d["_id"]: d for d in mongo_db.mart.find({})} == {d["_id"]: d for d in new}
