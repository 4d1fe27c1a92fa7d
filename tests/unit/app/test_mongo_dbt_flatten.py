"""The mongo dbt plugin's flattening of nested maps into rows and its window of _ids
(app/mongo_dbt.py); no services."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest

from agents.sink.aggregates import USER_GROUPS
from app.mongo_arrow import MongoPluginError, flatten, unnest_schema, window_ids

MERCHANTS = [{"map": "merchants", "key": "merchant_key",
              "fields": {"id": "string", "category": "string"}},
             {"parts": "partition", "values": ["txn_count", "cents", "anomaly_count", "offset"]}]
TOP = {"_id": "string", "reporting_currency": "string"}


def test_flatten_merchant_days_one_row_per_merchant_and_part() -> None:
    docs = [{"_id": "2026-11-30", "reporting_currency": "USD", "merchants": {
        "m%2E1": {"id": "m.1", "category": "books_media", "p0": [2, 1050, 0, 7],
                  "p3": [1, 99, 1, 12]},
        "m2": {"id": "m2", "category": "travel", "p1": [5, 500, 0, 3], "note": "ignored"}}},
        {"_id": "2026-11-29", "reporting_currency": "USD"}]  # no map: no rows
    table = flatten(docs, TOP, MERCHANTS)
    assert table.schema == unnest_schema(TOP, MERCHANTS)
    assert table.schema.field("partition").type == pa.int64()
    assert table.to_pylist() == [
        {"_id": "2026-11-30", "reporting_currency": "USD", "merchant_key": "m%2E1", "id": "m.1",
         "category": "books_media", "partition": 0, "txn_count": 2, "cents": 1050,
         "anomaly_count": 0, "offset": 7},
        {"_id": "2026-11-30", "reporting_currency": "USD", "merchant_key": "m%2E1", "id": "m.1",
         "category": "books_media", "partition": 3, "txn_count": 1, "cents": 99,
         "anomaly_count": 1, "offset": 12},
        {"_id": "2026-11-30", "reporting_currency": "USD", "merchant_key": "m2", "id": "m2",
         "category": "travel", "partition": 1, "txn_count": 5, "cents": 500,
         "anomaly_count": 0, "offset": 3}]


def test_flatten_user_days_map_of_arrays_and_short_arrays() -> None:
    unnest = [{"map": "days", "key": "day", "values": ["txn_count", "cents", "anomaly_count"]}]
    table = flatten([{"_id": "u1", "days": {"2026-11-29": [1, 10, 0, 4],
                                            "2026-11-30": [2, 20]}}], {"_id": "string"}, unnest)
    assert table.to_pylist() == [
        {"_id": "u1", "day": "2026-11-29", "txn_count": 1, "cents": 10, "anomaly_count": 0},
        {"_id": "u1", "day": "2026-11-30", "txn_count": 2, "cents": 20, "anomaly_count": None}]


def test_flatten_nested_maps_of_parts() -> None:
    unnest = [{"map": "minutes", "key": "minute"}, {"parts": "partition", "values": ["n"]}]
    table = flatten([{"_id": "2026-11-30T10", "minutes": {"05": {"p0": [3], "p1": [4]}}}],
                    {"_id": "string"}, unnest)
    assert [(r["minute"], r["partition"], r["n"]) for r in table.to_pylist()] == [
        ("05", 0, 3), ("05", 1, 4)]
    assert flatten([], {"_id": "string"}, unnest).num_rows == 0


def test_flatten_rejects_wrong_types_and_bad_config() -> None:
    with pytest.raises(MongoPluginError, match="does not fit"):
        flatten([{"_id": "d", "merchants": {"k": {"id": 5, "p0": [1, 2, 3, 4]}}}], TOP, MERCHANTS)
    with pytest.raises(MongoPluginError, match="expected an array"):
        flatten([{"_id": "d", "merchants": {"k": {"id": "m", "p0": 3}}}], TOP, MERCHANTS)
    with pytest.raises(MongoPluginError, match="unnest level"):
        unnest_schema(TOP, [{"map": "days"}])  # no key column
    with pytest.raises(MongoPluginError, match="unnest level"):
        unnest_schema(TOP, [{"parts": "p", "values": ["n"]}, {"map": "x", "key": "k"}])


def test_window_ids_days_and_hours() -> None:
    assert window_ids(date(2026, 11, 29), date(2026, 12, 1), "day_ids") == [
        "2026-11-29", "2026-11-30", "2026-12-01"]
    hours = window_ids(date(2026, 11, 30), date(2026, 11, 30), "hour_ids")
    assert hours[0] == "2026-11-30T00" and hours[-1] == "2026-11-30T23" and len(hours) == 24
    groups = window_ids(date(2026, 11, 30), date(2026, 12, 1), "day_group_ids")
    assert groups[0] == "2026-11-30/00" and groups[-1] == f"2026-12-01/{USER_GROUPS - 1:02d}"
    assert len(groups) == len(set(groups)) == 2 * USER_GROUPS
