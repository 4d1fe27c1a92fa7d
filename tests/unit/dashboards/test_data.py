"""The dashboard's pure transforms (dashboards/data.py): API answers -> what the views show.
No browser, no services: these run with the unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from dashboards.data import (
    ANOMALY_COLUMNS,
    anomaly_frame,
    currency_of,
    kpi_values,
    live_stats_rows,
    merchant_columns,
    parse_time,
    revenue_by_currency,
    revenue_by_currency_text,
    trend_columns,
    volume_columns,
)


def test_parse_time_gives_naive_utc() -> None:
    assert parse_time("2026-11-25T10:30:00.000+00:00") == pd.Timestamp("2026-11-25 10:30")
    assert parse_time("2026-11-25T12:30:00+02:00") == pd.Timestamp("2026-11-25 10:30")
    assert parse_time("2026-11-25T10:30:00Z") == pd.Timestamp("2026-11-25 10:30")
    assert parse_time("yesterday") is None
    assert parse_time(None) is None


def test_kpis_default_to_zero() -> None:
    assert kpi_values({"tps_now": 12.5, "revenue_1h": 10, "anomalies_1h": 3, "dlq_count": 2,
                       "count_1h": 750}) == {"tps_now": 12.5, "revenue_1h": 10.0,
                                             "anomalies_1h": 3.0, "dlq_count": 2.0,
                                             "count_1h": 750.0}
    assert kpi_values({"tps_now": None, "revenue_1h": "x", "anomalies_1h": True}) == dict.fromkeys(
        ("tps_now", "revenue_1h", "anomalies_1h", "dlq_count", "count_1h"), 0.0)


minutes = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 500),
                             st.floats(0, 1e6, allow_nan=False)), max_size=60,
                   unique_by=lambda r: r[0])


@given(minutes)
def test_volume_is_sorted_and_keeps_every_minute(rows: list[tuple[int, int, float]]) -> None:
    base = datetime(2026, 11, 25, tzinfo=UTC)
    items = [{"minute": (base + timedelta(minutes=m)).isoformat(), "count": c, "revenue": r,
              "anomalies": 0} for m, c, r in rows]
    cols = volume_columns({"minutes": 60, "items": items})
    assert cols["minute"] == sorted(cols["minute"])
    assert sum(cols["count"]) == sum(c for _, c, _ in rows)
    assert len(cols["revenue"]) == len(rows)


def test_volume_skips_unreadable_items() -> None:
    cols = volume_columns({"items": [{"minute": "nope", "count": 1}, "junk",
                                     {"minute": "2026-11-25T10:00:00+00:00", "count": 4}]})
    assert cols["count"] == [4.0]
    assert volume_columns({"items": None}) == {"minute": [], "count": [], "revenue": [],
                                               "anomalies": []}


def test_merchants_put_the_biggest_last_and_use_the_ranking_measure() -> None:
    payload = {"window": "1h", "by": "count", "items": [
        {"merchant_id": "a", "merchant_category": "grocery", "revenue": 5.0, "count": 9,
         "anomalies": 1},
        {"merchant_id": "b", "merchant_category": "travel", "revenue": 50.0, "count": 3,
         "anomalies": 0}]}
    cols = merchant_columns(payload)
    assert cols["merchant"] == ["b", "a"]
    assert cols["value"] == [3.0, 9.0]
    assert merchant_columns({**payload, "by": "revenue"})["value"] == [50.0, 5.0]


def test_anomaly_frame_columns_and_order() -> None:
    item = {"txn_id": "t1", "user_id": "u1", "amount": 99.5, "currency": "EUR",
            "amount_reporting": 107.46, "reporting_currency": "USD", "merchant_id": "m1",
            "merchant_category": "grocery",
            "timestamp": "2026-11-25T10:30:05.000+00:00", "z_score": 4.25, "mean_prev": 10.0,
            "std_prev": 2.0, "n_prev": 7, "detected_at": "2026-11-25T10:30:05.020+00:00"}
    frame = anomaly_frame({"items": [item, {**item, "txn_id": "t2", "z_score": None}]})
    assert tuple(frame.columns) == ANOMALY_COLUMNS
    assert list(frame["txn_id"]) == ["t1", "t2"]
    assert frame.iloc[0]["time"] == "2026-11-25 10:30:05"
    assert list(frame["z_score"]) == [4.25, 0.0]
    assert list(frame["amount_reporting"]) == [107.46, 107.46]
    assert list(frame["amount"]) == [99.5, 99.5] and frame.iloc[0]["currency"] == "EUR"
    assert anomaly_frame({}).empty and tuple(anomaly_frame({}).columns) == ANOMALY_COLUMNS


def test_trend_days_sorted_and_invalid_days_dropped() -> None:
    cols = trend_columns({"days": [{"day": "2026-11-25", "spend": 3.5, "count": 1,
                                    "anomalies": 1},
                                   {"day": "2026-11-24", "spend": 1.0, "count": 2,
                                    "anomalies": 0},
                                   {"day": "not a day"}]})
    assert cols["label"] == ["2026-11-24", "2026-11-25"]
    assert cols["spend"] == [1.0, 3.5]
    assert trend_columns({"days": "x"})["day"] == []


def test_live_stats_rows() -> None:
    assert live_stats_rows(None) == []
    assert live_stats_rows({"count": 12, "mean": 20.123, "last": [1, 2], "w": {"a": 1},
                            "last_z": None}) == [
        ("count", "12"), ("mean", "20.12"), ("last", "1, 2"), ("w", "a: 1"), ("last_z", "-")]
    days = [{"day": "2026-11-24", "spend": 10.5, "count": 1},
            {"day": "2026-11-25", "spend": 2.0, "count": 1}]
    assert live_stats_rows({"last_7_days": days}) == [("last_7_days", "2 entries, 12.50 spent")]


def test_currency_and_revenue_by_currency() -> None:
    summary = {"currency": "USD", "revenue_by_currency": {"EUR": 12.5, "JPY": 9000, "X": "?"}}
    assert currency_of(summary) == "USD"
    assert currency_of({}) == currency_of({"currency": 3}) == ""
    by_currency = revenue_by_currency(summary)
    assert by_currency == {"JPY": 9000.0, "EUR": 12.5, "X": 0.0}
    assert list(by_currency) == ["JPY", "EUR", "X"]  # largest first
    assert revenue_by_currency({"revenue_by_currency": [1, 2]}) == {}
    text = revenue_by_currency_text(by_currency)
    assert "**JPY** 9,000.00" in text and "**EUR** 12.50" in text
    assert text.index("JPY") < text.index("EUR")
    assert "none yet" in revenue_by_currency_text({})
