"""The API's query helpers (views/queries.py) without a database: cursors, ISO times, minutes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.sink import aggregates as agg
from app.contract import minute_of
from tests.unit.views.cursor_strategies import b64, cursors
from views import queries, user_trends
from views.settled import SettledDocs


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


NOW = datetime(2026, 11, 26, 0, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize("window,docs", [("1h", 2), ("24h", 25), ("7d", 8)])
def test_merchants_top_reads_a_bounded_number_of_ids(window: str, docs: int) -> None:
    spy = _Stored({})
    queries.merchants_top(spy, window, "revenue", 10, NOW)  # type: ignore[arg-type]
    assert len(spy.lookups) == docs
    assert spy.lookups[-1] == (("merchant_days", "2026-11-26") if window == "7d"
                               else ("merchant_hours", "2026-11-26T00"))
    assert queries.since(window, NOW) == {
        "1h": datetime(2026, 11, 25, 23, tzinfo=UTC), "24h": datetime(2026, 11, 25, tzinfo=UTC),
        "7d": datetime(2026, 11, 19, tzinfo=UTC)}[window]


def test_every_other_endpoint_reads_ids_only() -> None:
    spy = _Stored({})
    user_trends.trends(spy, "alice", 366, NOW)  # type: ignore[arg-type]
    group = agg.user_group("alice")
    assert len(spy.lookups) == 366  # read concurrently: in no particular order
    assert min(spy.lookups) == ("users_by_day", agg.users_by_day_id("2025-11-26", group))
    assert max(spy.lookups) == ("users_by_day", agg.users_by_day_id("2026-11-26", group))
    spy.lookups.clear()
    queries.summary(spy, NOW)  # type: ignore[arg-type]
    assert sorted(spy.lookups) == [("currency_hours", "2026-11-25T23"),
                                   ("currency_hours", "2026-11-26T00"),
                                   ("volume_hours", "2026-11-25T23"),
                                   ("volume_hours", "2026-11-26T00")]
    spy.lookups.clear()
    queries.volume(spy, 7 * 24 * 60, NOW)  # type: ignore[arg-type]
    assert len(spy.lookups) == 169


class _Stored:
    """A database holding documents by collection and ``_id`` that counts the lookups: any
    read other than an ``_id`` lookup fails the test (on FerretDB it would scan the
    collection)."""

    def __init__(self, docs: dict[str, list[dict]]) -> None:
        self.docs = {name: {d["_id"]: d for d in found} for name, found in docs.items()}
        self.lookups: list[tuple[str, str]] = []

    def __getitem__(self, name: str) -> _Stored.Collection:
        return _Stored.Collection(self, name)

    def __getattr__(self, name: str) -> _Stored.Collection:
        return _Stored.Collection(self, name)

    class Collection:
        def __init__(self, db: _Stored, name: str) -> None:
            self.db, self.name = db, name

        def find_one(self, query: dict, *args: object) -> dict | None:
            assert list(query) == ["_id"] and isinstance(query["_id"], str), query
            self.db.lookups.append((self.name, query["_id"]))
            return self.db.docs.get(self.name, {}).get(query["_id"])

        def estimated_document_count(self) -> int:
            return 0

    def command(self, name: str, collection: str) -> dict:
        assert name == "collStats"
        return {"count": len(self.docs.get(collection, {}))}


def _item(user: str, minute: datetime, cents: int, offset: int, anomaly: int = 0,
          partition: int = 0, reporting: str = "USD", merchant: str = "m1",
          currency: str = "USD") -> agg.Countable:
    return agg.Countable(merchant, "travel", minute, cents, anomaly, partition, offset, currency,
                         cents * 2, reporting, user)


def _same_group(user: str) -> str:
    """Another user id of ``user``'s ``users_by_day`` group."""
    return next(other for i in range(10_000) if (other := f"other{i}") != user
                and agg.user_group(other) == agg.user_group(user))


def test_trends_read_the_users_group_document_of_each_day() -> None:
    """One ``users_by_day`` lookup per day, in the user's group; the user's numbers summed over
    the partitions; another user of the same group and a document labelled with another
    reporting currency count nothing."""
    user = "alice"
    neighbour = _same_group(user)
    today, yesterday = NOW, NOW - timedelta(days=1)
    docs = agg.build([
        _item(user, yesterday, 1050, 0, anomaly=1),
        _item(neighbour, yesterday, 99_999, 1, anomaly=1),
        _item(user, today, 200, 2),
        _item(user, today, 305, 0, partition=1),  # another partition of the same document
        _item(neighbour, today, 77_777, 1, partition=1),
    ])
    stale_day = (NOW - timedelta(days=2)).date().isoformat()
    stale = agg.build([_item(user, NOW - timedelta(days=2), 500, 0, anomaly=1,
                             reporting="EUR")])
    docs[agg.USERS_BY_DAY] += stale[agg.USERS_BY_DAY]
    assert {d["reporting_currency"] for d in docs[agg.USERS_BY_DAY]} == {"USD", "EUR"}
    db = _Stored(docs)
    rows = user_trends.trends(db, user, 4, NOW)  # type: ignore[arg-type]
    assert rows == [
        {"day": "2026-11-23", "spend": 0.0, "count": 0, "anomalies": 0},
        {"day": stale_day, "spend": 0.0, "count": 0, "anomalies": 0},
        {"day": "2026-11-25", "spend": 10.5, "count": 1, "anomalies": 1},
        {"day": "2026-11-26", "spend": 5.05, "count": 2, "anomalies": 0},
    ]
    group = agg.user_group(user)
    assert sorted(db.lookups) == [("users_by_day", agg.users_by_day_id(day, group))
                                  for day in ("2026-11-23", "2026-11-24", "2026-11-25",
                                              "2026-11-26")]
    assert user_trends.trends(db, neighbour, 1, NOW)[0]["spend"] == 777.77  # type: ignore[arg-type]
    assert user_trends.trends(db, user, 1, NOW, currency="EUR")[0]["count"] == 0  # type: ignore[arg-type]


def test_the_aggregate_readers_sum_the_partitions_and_ignore_garbage() -> None:
    """/volume, /summary and the merchant totals from packed documents of two partitions, a
    document of another reporting currency left out, a field that is not a packed text counting
    nothing."""
    minute = NOW.replace(second=0, microsecond=0)
    docs = agg.build([
        _item("u1", minute, 1000, 0, anomaly=1, merchant="m1", currency="EUR"),
        _item("u2", minute, 250, 0, partition=1, merchant="m2", currency="JPY"),
        _item("u3", minute - timedelta(minutes=40), 125, 1, merchant="m1", currency="EUR"),
    ])
    for collection in (agg.VOLUME_HOURS, agg.MERCHANT_HOURS, agg.CURRENCY_HOURS):
        for doc in docs[collection]:
            doc["p7"] = "not JSON"
            doc["p8"] = '[3, {"05": [1, "x", 2]}]'
    db = _Stored(docs)
    volume = queries.volume(db, 60, NOW)  # type: ignore[arg-type]
    assert volume[-1] == {"minute": queries.iso(minute), "count": 2, "revenue": 12.5,
                          "anomalies": 1}
    assert volume[-41]["count"] == 1 and sum(r["count"] for r in volume) == 3
    summary = queries.summary(db, NOW + timedelta(minutes=1))  # type: ignore[arg-type]
    assert summary["count_1h"] == 3 and summary["revenue_1h"] == 13.75
    assert summary["tps_now"] == round(2 / 60, 3) and summary["anomalies_1h"] == 1
    assert summary["revenue_by_currency"] == {"EUR": 22.5, "JPY": 5.0}
    totals = sorted(queries.merchant_totals(db, "1h", NOW),  # type: ignore[arg-type]
                    key=lambda r: r["merchant_id"])
    assert totals == [
        {"merchant_id": "m1", "merchant_category": "travel", "revenue": 11.25, "count": 2,
         "anomalies": 1},
        {"merchant_id": "m2", "merchant_category": "travel", "revenue": 2.5, "count": 1,
         "anomalies": 0}]
    stale = _Stored({agg.VOLUME_HOURS: [dict(d, reporting_currency="EUR")
                                        for d in docs[agg.VOLUME_HOURS]]})
    assert sum(r["count"] for r in queries.volume(stale, 60, NOW)) == 0  # type: ignore[arg-type]


def test_trends_take_ended_days_from_the_settled_documents() -> None:
    """With ``settled``: the first request reads every day; the next one, for another user of
    the same group, reads only today's document (the open day), and still gets its own
    numbers from the kept documents of the ended days."""
    user = "alice"
    neighbour = _same_group(user)
    yesterday = NOW - timedelta(days=1)
    docs = agg.build([_item(user, yesterday, 1050, 0), _item(neighbour, yesterday, 700, 1),
                      _item(neighbour, NOW, 300, 2)])
    db = _Stored({"users_by_day": docs["users_by_day"]})
    settled: SettledDocs[Any] = SettledDocs(empty_seconds=60)
    first = user_trends.trends(db, user, 7, NOW, settled=settled)  # type: ignore[arg-type]
    assert len(db.lookups) == 7 and first[-2]["spend"] == 10.5
    db.lookups.clear()
    second = user_trends.trends(db, neighbour, 7, NOW, settled=settled)  # type: ignore[arg-type]
    today_id = agg.users_by_day_id(NOW.date().isoformat(), agg.user_group(user))
    assert db.lookups == [("users_by_day", today_id)]
    assert [d["spend"] for d in second[-2:]] == [7.0, 3.0]


def test_trends_reread_expired_days_in_the_background() -> None:
    """Past ``settled_seconds`` a request reads today only and serves the expired days as
    kept; each of them is read again once in the background (not again while that read is
    under way), and a late change shows after it."""
    user = "alice"
    docs = agg.build([_item(user, NOW - timedelta(days=d), 100 * (d + 1), d) for d in range(7)])
    db = _Stored({"users_by_day": docs["users_by_day"]})
    clock = [0.0]
    settled: SettledDocs[Any] = SettledDocs(600, clock=lambda: clock[0], empty_seconds=60)
    pending: list[Callable[[], Any]] = []
    first = user_trends.trends(db, user, 7, NOW, settled=settled,  # type: ignore[arg-type]
                           background=pending.append)
    assert len(db.lookups) == 7 and not pending
    clock[0] += 601
    db.lookups.clear()
    late = agg.build([_item(user, NOW - timedelta(days=d), 100 * (d + 1) + (d == 3), d)
                      for d in range(7)])
    db.docs["users_by_day"] = {d["_id"]: d for d in late["users_by_day"]}
    for _ in range(2):
        again = user_trends.trends(db, user, 7, NOW, settled=settled,  # type: ignore[arg-type]
                               background=pending.append)
        assert again[:-1] == first[:-1]  # the kept values
    assert len(db.lookups) == 2 and len(pending) == 6  # today twice; one refresh per day
    for refresh in pending:
        refresh()
    db.lookups.clear()
    after = user_trends.trends(db, user, 7, NOW, settled=settled,  # type: ignore[arg-type]
                           background=pending.append)
    assert len(db.lookups) == 1 and len(pending) == 6  # all fresh again: today only
    assert round(after[3]["spend"] - first[3]["spend"], 2) == 0.01



def test_warm_trends_keeps_every_groups_ended_days() -> None:
    """After the warm-up (the API's start), the first request of any group reads today's
    document only, and answers as a request without the warm-up."""
    users = [f"u{i}" for i in range(200)]
    docs = agg.build([_item(u, NOW - timedelta(days=d), 100 + i, i) for i, u in enumerate(users)
                      for d in range(7)])
    db = _Stored({"users_by_day": docs["users_by_day"]})
    settled: SettledDocs[Any] = SettledDocs(empty_seconds=60)
    kept = user_trends.warm(db, NOW, 7, "USD", settled)  # type: ignore[arg-type]
    assert len(db.lookups) == 6 * agg.USER_GROUPS
    assert kept == len(settled) == len(docs["users_by_day"]) - len(
        {agg.user_group(u) for u in users})  # every ended day of every group with a user
    for user in users[:20]:
        db.lookups.clear()
        rows = user_trends.trends(db, user, 7, NOW, settled=settled)  # type: ignore[arg-type]
        assert len(db.lookups) == 1
        assert rows == user_trends.trends(db, user, 7, NOW)  # type: ignore[arg-type]
    # With today's documents from elsewhere (the API's cache), a request reads nothing.
    today = {d["_id"]: d for d in docs["users_by_day"]}
    db.lookups.clear()
    shared = user_trends.trends(db, users[0], 7, NOW, settled=settled,  # type: ignore[arg-type]
                            today_doc=lambda day, group: today.get(
                                agg.users_by_day_id(day.isoformat(), group)))
    assert not db.lookups and shared == user_trends.trends(db, users[0], 7, NOW)  # type: ignore[arg-type]
