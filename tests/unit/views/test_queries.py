"""The API's query helpers (views/queries.py) without a database: cursors, ISO times, minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import bson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.contract import minute_of
from tests.unit.views.cursor_strategies import b64, cursors
from views import queries


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1),
                    timezones=st.just(UTC)),
       st.text(min_size=1, max_size=128))
def test_cursor_round_trip(ts: datetime, txn_id: str) -> None:
    try:
        txn_id.encode("utf-8")
    except UnicodeError:
        return
    ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)
    assert queries.decode_cursor(queries.encode_cursor(ts, txn_id)) == (ts, txn_id)


@given(st.text(max_size=60))
def test_random_text_is_never_a_valid_cursor_or_an_error(raw: str) -> None:
    try:
        ts, txn_id = queries.decode_cursor(raw)
    except queries.CursorError:
        return
    assert ts.tzinfo is not None and (txn_id is None or isinstance(txn_id, str))


@settings(max_examples=500)
@given(cursors)
def test_any_cursor_decodes_or_is_a_cursor_error(raw: str) -> None:
    """Text, base64 of random bytes or JSON, of dates out of range or with an offset at the
    edge, wrong types: decode_cursor answers a usable pair (txn_id None: a position) or
    CursorError, nothing else."""
    try:
        ts, txn_id = queries.decode_cursor(raw)
    except queries.CursorError:
        return
    assert ts.utcoffset() == timedelta(0) and (txn_id is None or isinstance(txn_id, str)
                                               and txn_id)
    bson.encode({"timestamp": ts, "_id": txn_id})  # a document can carry both


def test_a_position_cursor_round_trips() -> None:
    """A page that stopped at its reading budget continues from an instant: a one-item cursor."""
    ts = datetime(2026, 11, 30, 10, 5, tzinfo=UTC)
    cursor = queries.encode_cursor(ts, None)
    assert queries.decode_cursor(cursor) == (ts, None)
    assert cursor == b64(b'["2026-11-30T10:05:00.000+00:00"]')


#: The cursor of the bug report (base64 of ["0001-01-01T00:00:00+01:00","x"]): was a 500.
CRAFTED_CURSOR = "WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzAxOjAwIiwieCJd"


@pytest.mark.parametrize("cursor", [CRAFTED_CURSOR, b64(b'["9999-12-31T23:59:59-01:00","x"]')])
def test_a_date_without_a_utc_equivalent_is_a_cursor_error(cursor: str) -> None:
    with pytest.raises(queries.CursorError):
        queries.decode_cursor(cursor)


def test_iso_and_minutes() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5, 678901)
    assert queries.iso(naive) == "2026-01-02T03:04:05.678+00:00"
    assert queries.iso(5) == 5
    aware = datetime(2026, 1, 2, 3, 4, 59, tzinfo=UTC) + timedelta(hours=0)
    assert minute_of(aware) == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def test_every_answer_with_money_names_its_currency() -> None:
    """Each response schema that carries a revenue, spend or statistic requires the
    reporting currency's code; /summary adds the revenue per original currency."""
    from views.api_openapi import SCHEMAS

    for name in ("Trends", "AnomalyPage", "MerchantsTop", "Volume", "Summary"):
        assert "currency" in SCHEMAS[name]["required"], name
        assert SCHEMAS[name]["properties"]["currency"]["pattern"] == "^[A-Z]{3}$"
    assert "revenue_by_currency" in SCHEMAS["Summary"]["required"]
    assert {"amount_reporting", "reporting_currency"} <= set(SCHEMAS["Anomaly"]["properties"])
    assert queries.REPORTING == "USD"  # the settings' default


class _Spy:
    """A database whose collections answer only ``find_one({"_id": <str>})`` and count the
    lookups: any other read fails the test (on FerretDB it would scan the collection)."""

    def __init__(self) -> None:
        self.lookups: list[tuple[str, str]] = []

    def __getitem__(self, name: str) -> _Spy.Collection:
        return _Spy.Collection(self, name)

    def __getattr__(self, name: str) -> _Spy.Collection:
        return _Spy.Collection(self, name)

    class Collection:
        def __init__(self, db: _Spy, name: str) -> None:
            self.db, self.name = db, name

        def find_one(self, query: dict, *args: object) -> None:
            assert list(query) == ["_id"] and isinstance(query["_id"], str), query
            self.db.lookups.append((self.name, query["_id"]))

        def estimated_document_count(self) -> int:
            return 0


NOW = datetime(2026, 11, 26, 0, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize("window,docs", [("1h", 2), ("24h", 25), ("7d", 8)])
def test_merchants_top_reads_a_bounded_number_of_ids(window: str, docs: int) -> None:
    spy = _Spy()
    queries.merchants_top(spy, window, "revenue", 10, NOW)  # type: ignore[arg-type]
    assert len(spy.lookups) == docs
    assert spy.lookups[-1] == (("merchant_days", "2026-11-26") if window == "7d"
                               else ("merchant_hours", "2026-11-26T00"))
    assert queries.since(window, NOW) == {
        "1h": datetime(2026, 11, 25, 23, tzinfo=UTC), "24h": datetime(2026, 11, 25, tzinfo=UTC),
        "7d": datetime(2026, 11, 19, tzinfo=UTC)}[window]


def test_every_other_endpoint_reads_ids_only() -> None:
    spy = _Spy()
    queries.trends(spy, "alice", 366, NOW)  # type: ignore[arg-type]
    assert spy.lookups == [("user_days", "alice")]
    spy.lookups.clear()
    queries.summary(spy, NOW)  # type: ignore[arg-type]
    assert sorted(spy.lookups) == [("currency_hours", "2026-11-25T23"),
                                   ("currency_hours", "2026-11-26T00"),
                                   ("volume_hours", "2026-11-25T23"),
                                   ("volume_hours", "2026-11-26T00")]
    spy.lookups.clear()
    queries.volume(spy, 7 * 24 * 60, NOW)  # type: ignore[arg-type]
    assert len(spy.lookups) == 169
