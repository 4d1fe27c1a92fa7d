"""The anomalies' time index without a database (agents/sink/anomaly_index.py): ids, the
stored text of an anomaly, the writes of a batch and the documents they make, and the readers."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import orjson
from hypothesis import given
from hypothesis import strategies as st

from agents.sink import anomaly_index as ai
from agents.sink.aggregates import field_name

NOW = datetime(2026, 11, 30, 10, 5, 7, 123000, tzinfo=UTC)


def anomaly(txn_id: str, ts: datetime, **fields: object) -> dict[str, object]:
    return {"_id": txn_id, "txn_id": txn_id, "user_id": "u", "amount": 10.5, "currency": "EUR",
            "amount_reporting": 11.34, "reporting_currency": "USD", "merchant_id": "m",
            "merchant_category": "travel", "timestamp": ts, "z_score": 4.5, "mean_prev": 1.0,
            "std_prev": 2.0, "n_prev": 7, "detected_at": ts, "day": "x", "minute": ts, **fields}


def test_ids_are_utc_minute_day_and_month() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=5)))
    assert ai.minute_id(local) == "2026-11-30T10:05"
    assert (ai.day_id(NOW), ai.month_id(NOW)) == ("2026-11-30", "2026-11")
    assert ai.minute_id(datetime(7, 1, 2, 3, 4, tzinfo=UTC)) == "0007-01-02T03:04"


def test_item_is_the_api_fields_with_iso_dates() -> None:
    item = ai.item(anomaly("t1", NOW))
    assert list(item) == list(ai.API_FIELDS)
    assert item["timestamp"] == "2026-11-30T10:05:07.123+00:00"
    assert "day" not in item and "minute" not in item
    assert orjson.loads(ai.item_text(anomaly("t1", NOW))) == item
    assert ai.item({"_id": "only-id"})["txn_id"] == "only-id"


def test_odd_values_still_make_json() -> None:
    doc = anomaly("t1", NOW, z_score=math.inf, n_prev=2**70, mean_prev=math.nan,
                  amount=b"\x00", user_id=None)
    value = orjson.loads(ai.item_text(doc))
    assert value["z_score"] is None and value["mean_prev"] is None
    assert value["n_prev"] == float(2**70) and value["amount"] == "b'\\x00'"


def test_writes_go_minutes_then_days_then_months_and_are_absolute() -> None:
    docs = [anomaly("a.b$c", NOW), anomaly("t2", NOW + timedelta(seconds=1)),
            anomaly("t3", NOW + timedelta(days=40)), {"_id": "no-date", "timestamp": "x"}]
    writes = ai.index_writes(docs)
    assert [(c, i) for c, i, _, _ in writes] == [
        (ai.MINUTES, "2026-11-30T10:05"), (ai.MINUTES, "2027-01-09T10:05"),
        (ai.DAYS, "2026-11-30"), (ai.DAYS, "2027-01-09"), (ai.DAYS, "2026-11"),
        (ai.DAYS, "2027-01")]
    minute = writes[0][2]
    assert set(minute) == {f"items.{field_name('a.b$c')}", "items.t2"}
    assert writes[2][2] == {"minutes.1005": 1} and writes[4][2] == {"days.30": 1}
    assert ai.index_writes(docs) == writes  # the same batch writes the same values


def test_a_big_minute_is_split_into_statements() -> None:
    docs = [anomaly(f"t{i}", NOW) for i in range(ai.PATHS_PER_STATEMENT + 3)]
    sizes = [len(f) for c, _, f, _ in ai.index_writes(docs) if c == ai.MINUTES]
    assert sizes == [ai.PATHS_PER_STATEMENT, 3]


stamps = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 3, 1),
                      timezones=st.just(UTC)).map(
    lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))


@given(st.dictionaries(st.text(min_size=1, max_size=12), stamps, max_size=40))
def test_documents_list_every_anomaly_once_in_order(found: dict[str, datetime]) -> None:
    docs = [anomaly(txn_id, ts) for txn_id, ts in found.items()]
    made = ai.index_documents(docs)
    minutes = {d["_id"]: d for d in made[ai.MINUTES]}
    days = {d["_id"]: d for d in made[ai.DAYS]}
    read = []
    for month in sorted((i for i in days if len(i) == 7), reverse=True):
        for dd in ai.listed(days[month], "days", 2):
            for hhmm in ai.listed(days[f"{month}-{dd}"], "minutes", 4):
                minute = f"{month}-{dd}T{hhmm[:2]}:{hhmm[2:]}"
                read += [a["txn_id"] for a in ai.parse_items(minutes[minute])]
    expected = sorted(docs, key=lambda d: (d["timestamp"], d["_id"]), reverse=True)
    assert read == [d["_id"] for d in expected]


def test_readers_ignore_what_they_did_not_write() -> None:
    assert ai.listed(None, "minutes", 4) == []
    assert ai.listed({"minutes": {"1005": 1, "99": 1, "ab12": 1, "0001": 1}}, "minutes", 4) \
        == ["1005", "0001"]
    assert ai.listed({"minutes": [1, 2]}, "minutes", 4) == []
    good = ai.item_text(anomaly("t1", NOW))
    doc = {"items": {"t1": good, "x": "{not json", "y": 5, "z": '{"txn_id": 1}', "w": "[]"}}
    assert [a["txn_id"] for a in ai.parse_items(doc)] == ["t1"]
    assert ai.parse_items({"items": "nope"}) == [] and ai.parse_items(None) == []
