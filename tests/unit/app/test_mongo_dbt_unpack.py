"""The mongo dbt plugin's unpacking of the sink's packed aggregate documents into rows and its
window of _ids (app/mongo_arrow.py); no services."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from agents.sink.aggregates import USER_GROUPS, Countable, build
from app.mongo_arrow import MongoPluginError, packed_schema, unpack_rows, window_ids

MERCHANTS = {"key": "merchant_id", "values": ["txn_count", "cents", "anomaly_count"],
             "label": "merchant_category"}
TOP = {"_id": "string", "reporting_currency": "string"}


def item(merchant: str, partition: int, offset: int, cents: int, anomaly: int = 0,
         category: str = "travel", minute: datetime = datetime(2026, 11, 30, 10, 5, tzinfo=UTC)
         ) -> Countable:
    return Countable(merchant, category, minute, cents, anomaly, partition, offset, "EUR",
                     cents + 1, "USD", f"user-{merchant}")


def test_unpack_merchant_days_one_row_per_day_and_merchant_summed_over_partitions() -> None:
    docs = build([item("m.1", 0, 1, 1000), item("m.1", 0, 2, 50, 1), item("m.1", 3, 7, 99),
                  item("m2", 1, 3, 500, category="books_media"),
                  item("m2", 1, 3, 999),  # a redelivery (same offset): not counted again
                  item("m2", 1, 4, 1, minute=datetime(2026, 11, 29, 23, 59, tzinfo=UTC))])
    merchant_days = docs["merchant_days"] + [{"_id": "2026-11-28", "reporting_currency": "USD"}]
    table = unpack_rows(merchant_days, TOP, MERCHANTS)  # the last document: no parts, no rows
    assert table.schema == packed_schema(TOP, MERCHANTS)
    assert table.schema.field("cents").type == pa.int64()
    assert sorted(table.to_pylist(), key=lambda r: (r["_id"], r["merchant_id"])) == [
        {"_id": "2026-11-29", "reporting_currency": "USD", "merchant_id": "m2",
         "txn_count": 1, "cents": 1, "anomaly_count": 0, "merchant_category": "travel"},
        {"_id": "2026-11-30", "reporting_currency": "USD", "merchant_id": "m.1",
         "txn_count": 3, "cents": 1149, "anomaly_count": 1, "merchant_category": "travel"},
        {"_id": "2026-11-30", "reporting_currency": "USD", "merchant_id": "m2",
         "txn_count": 1, "cents": 500, "anomaly_count": 0, "merchant_category": "books_media"}]


def test_unpack_users_currencies_and_fewer_values() -> None:
    docs = build([item("m1", 0, 1, 10), item("m1", 1, 1, 20), item("m2", 0, 2, 5)])
    users = unpack_rows(docs["users_by_day"], {"_id": "string", "day": "string"},
                        {"key": "user_id", "values": ["txn_count", "cents", "anomaly_count"]})
    assert sorted((r["day"], r["user_id"], r["txn_count"], r["cents"])
                  for r in users.to_pylist()) == [
        ("2026-11-30", "user-m1", 2, 30), ("2026-11-30", "user-m2", 1, 5)]
    currencies = unpack_rows(docs["currency_days"], TOP,
                             {"key": "currency", "values": ["n", "original", "reporting"]})
    assert currencies.to_pylist() == [{"_id": "2026-11-30", "reporting_currency": "USD",
                                       "currency": "EUR", "n": 3, "original": 38,
                                       "reporting": 35}]
    minutes = unpack_rows(docs["volume_hours"], {"_id": "string"},
                          {"key": "minute", "values": ["n"]})
    assert minutes.to_pylist() == [{"_id": "2026-11-30T10", "minute": "05", "n": 3}]
    assert unpack_rows([], TOP, MERCHANTS).num_rows == 0


def test_unpack_ignores_what_the_sink_did_not_write() -> None:
    doc = {"_id": "d", "reporting_currency": "USD", "day": "not a field", "pX": "[1, {}]",
           "p0": "not json", "p1": '[3, {"m": [1, 2, 3, "travel"], "bad": [1, "x", 3]}]',
           "p2": 7, "p3": '[4, {"m": [2, 20, 0]}]'}
    assert unpack_rows([doc], TOP, MERCHANTS).to_pylist() == [
        {"_id": "d", "reporting_currency": "USD", "merchant_id": "m", "txn_count": 3,
         "cents": 22, "anomaly_count": 3, "merchant_category": "travel"}]


def test_unpack_rejects_wrong_types_and_bad_specs() -> None:
    with pytest.raises(MongoPluginError, match="does not fit"):
        unpack_rows([{"_id": 5, "p0": '[1, {"m": [1, 2, 3]}]'}], TOP, MERCHANTS)
    with pytest.raises(MongoPluginError, match="does not fit"):  # a label that is no string
        unpack_rows([{"_id": "d", "p0": '[1, {"m": [1, 2, 3, 4]}]'}], TOP, MERCHANTS)
    for spec in ({"values": ["n"]}, {"key": "k"}, {"key": "k", "values": ["a", "b", "c", "d"]},
                 {"key": "k", "values": ["k"]}, {"key": "k", "values": ["n"], "other": 1},
                 {"key": "k", "values": "n"}, {"key": "k", "values": ["n"], "label": ""}):
        with pytest.raises(MongoPluginError, match="packed"):
            packed_schema(TOP, spec)
    with pytest.raises(MongoPluginError, match="also in 'fields'"):
        packed_schema(TOP, {"key": "reporting_currency", "values": ["n"]})


def test_window_ids_days_and_hours() -> None:
    assert window_ids(date(2026, 11, 29), date(2026, 12, 1), "day_ids") == [
        "2026-11-29", "2026-11-30", "2026-12-01"]
    hours = window_ids(date(2026, 11, 30), date(2026, 11, 30), "hour_ids")
    assert hours[0] == "2026-11-30T00" and hours[-1] == "2026-11-30T23" and len(hours) == 24
    groups = window_ids(date(2026, 11, 30), date(2026, 12, 1), "day_group_ids")
    assert groups[0] == "2026-11-30/00" and groups[-1] == f"2026-12-01/{USER_GROUPS - 1:02d}"
    assert len(groups) == len(set(groups)) == 2 * USER_GROUPS
