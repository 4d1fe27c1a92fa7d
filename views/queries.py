"""The API's MongoDB reads: plain functions over a pymongo ``Database`` (no web framework here).

Collections and fields are those of ``docs/data-model.md``. Every query respects the FerretDB 1.24
limits listed there: no ``$group`` at all (sums are done in Python over projected documents, so
the one-accumulator-per-``$group`` trap cannot bite), no date operators (the sink stores the
``day`` and ``minute`` bucket keys on each document).

Every money figure is in one reporting currency (the ``currency`` argument, the API's
``REPORTING_CURRENCY``): spend sums ``amount_reporting``, and only rollup rows labelled with
that ``reporting_currency`` are read (a row written under another setting is left out: amounts
in two currencies cannot be added). ``revenue_by_currency`` sums ``currency_minute``, each
currency in its own amounts.

Values that come from a request are only ever used as plain values (``{"user_id": user_id}``
with ``user_id`` a ``str``), never as query documents, so ``{"$ne": null}`` is just a strange id.
"""

from __future__ import annotations

import base64
import binascii
import math
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import orjson
from pymongo.database import Database

from app.contract import ANOMALY_FIELDS, minute_of
from app.settings import settings

__all__ = [
    "WINDOWS",
    "CursorError",
    "Db",
    "anomalies",
    "decode_cursor",
    "encode_cursor",
    "iso",
    "merchant_totals",
    "merchants_top",
    "revenue_by_currency",
    "summary",
    "top",
    "trends",
    "volume",
]

#: The database the reads take: documents as plain dicts.
Db: TypeAlias = Database[dict[str, Any]]

#: ``/merchants/top`` windows, in minutes.
WINDOWS = {"1h": 60, "24h": 24 * 60, "7d": 7 * 24 * 60}

#: The default ``currency`` of the money figures: ``REPORTING_CURRENCY``.
REPORTING = settings.reporting_currency

#: Most documents a single query may return (a guard against huge collections).
MAX_DOCS = 2_000_000


class CursorError(ValueError):
    """A pagination cursor that this API did not produce."""


def iso(value: Any) -> Any:
    """A BSON date as ISO-8601 UTC with milliseconds (BSON's precision); other values as is."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    return value


def _num(value: Any) -> float:
    """A number from a stored document; anything else (missing, null, NaN) counts as 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0


def _money(value: float) -> float:
    return round(value, 2)


# --- /users/{user_id}/trends ------------------------------------------------------------------
def trends(db: Db, user_id: str, days: int, now: datetime,
           currency: str = REPORTING) -> list[dict[str, Any]]:
    """Spend (in ``currency``: the transactions' ``amount_reporting``), count and anomalies of
    ``user_id`` per UTC day, the last ``days`` days up to ``now``'s day included, oldest first;
    days without transactions are zeros. A transaction converted into another currency counts
    in ``count`` but not in ``spend``."""
    today = now.astimezone(UTC).date()
    keys = [(today - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    rows: dict[str, dict[str, Any]] = {
        k: {"day": k, "spend": 0.0, "count": 0, "anomalies": 0} for k in keys}
    start = datetime.combine(today - timedelta(days=days - 1), datetime.min.time(), tzinfo=UTC)
    # user_id + timestamp: the sink's (user_id, timestamp) index serves it on MongoDB.
    cursor = db.transactions.find(
        {"user_id": user_id, "timestamp": {"$gte": start}},
        {"_id": 0, "day": 1, "amount_reporting": 1, "reporting_currency": 1, "is_anomaly": 1},
    )
    for doc in cursor:
        row = rows.get(str(doc.get("day")))
        if row is None:
            continue
        if doc.get("reporting_currency") == currency:
            row["spend"] += _num(doc.get("amount_reporting"))
        row["count"] += 1
        row["anomalies"] += doc.get("is_anomaly") is True
    for row in rows.values():
        row["spend"] = _money(row["spend"])
    return list(rows.values())


# --- /anomalies ---------------------------------------------------------------------------------
def encode_cursor(timestamp: datetime, txn_id: str) -> str:
    """An opaque cursor: the (timestamp, txn_id) of the last item of a page."""
    raw = orjson.dumps([iso(timestamp), txn_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (timestamp, txn_id) in a cursor made by :func:`encode_cursor`, or CursorError."""
    try:
        if not cursor or len(cursor) > 400:
            raise ValueError("bad length")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, str) for v in value)):
            raise ValueError("not a pair of strings")
        ts = datetime.fromisoformat(value[0])
        if ts.tzinfo is None or not value[1] or len(value[1]) > 128:
            raise ValueError("bad values")
        value[1].encode("utf-8")
        # Inside the try: a date at the edge of the range with an offset (year 1 at +01:00,
        # year 9999 at -01:00) has no UTC equivalent (OverflowError).
        return ts.astimezone(UTC), value[1]
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeError,
            orjson.JSONDecodeError):
        raise CursorError("cursor is not a cursor returned by this API") from None


#: An anomaly's fields in the API: the contract's, with the amount in the reporting currency
#: after ``currency``.
_ANOMALY_OUT = tuple(dict.fromkeys([
    *ANOMALY_FIELDS[:ANOMALY_FIELDS.index("currency") + 1], "amount_reporting",
    "reporting_currency", *ANOMALY_FIELDS[ANOMALY_FIELDS.index("currency") + 1:]]))


def _anomaly(doc: dict[str, Any]) -> dict[str, Any]:
    out = {f: iso(doc.get(f)) for f in _ANOMALY_OUT}
    if out["txn_id"] is None:
        out["txn_id"] = doc.get("_id")
    return out


def anomalies(db: Db, limit: int, cursor: str | None = None, category: str | None = None,
              min_z: float | None = None, since: datetime | None = None,
              ) -> tuple[list[dict[str, Any]], str | None]:
    """A page of anomalies, newest first (``timestamp`` desc, then ``txn_id`` desc), and the
    cursor of the next page (None on the last page).

    Keyset pagination: the next page holds the anomalies strictly after the last item of this
    one in that order, so anomalies arriving meanwhile (newer ones go to the top) never shift
    the pages: no item is repeated or skipped."""
    clauses: list[dict[str, Any]] = []
    if category is not None:
        clauses.append({"merchant_category": category})
    if min_z is not None:
        clauses.append({"z_score": {"$gte": min_z}})
    if since is not None:
        clauses.append({"timestamp": {"$gte": since}})
    if cursor is not None:
        ts, txn_id = decode_cursor(cursor)
        clauses.append({"$or": [{"timestamp": {"$lt": ts}},
                                {"timestamp": ts, "_id": {"$lt": txn_id}}]})
    query = {"$and": clauses} if clauses else {}
    docs = list(db.anomalies.find(query).sort([("timestamp", -1), ("_id", -1)]).limit(limit + 1))
    page = docs[:limit]
    items = [_anomaly(d) for d in page]
    next_cursor = None
    if len(docs) > limit and isinstance(page[-1].get("timestamp"), datetime):
        next_cursor = encode_cursor(page[-1]["timestamp"], str(page[-1]["_id"]))
    return items, next_cursor


# --- rollups: /merchants/top, /volume, /summary -----------------------------------------------
def _minutes(db: Db, collection: str, first: datetime, last: datetime,
             fields: tuple[str, ...], currency: str | None) -> list[dict[str, Any]]:
    """The rows of ``collection`` in the minutes ``first``..``last``; only those in the
    reporting currency ``currency`` unless None."""
    query: dict[str, Any] = {"minute": {"$gte": first, "$lte": last}}
    if currency is not None:
        query["reporting_currency"] = currency
    return list(db[collection].find(
        query, {"_id": 0, "minute": 1, **{f: 1 for f in fields}}).limit(MAX_DOCS))


def merchant_totals(db: Db, window: str, now: datetime,
                    currency: str = REPORTING) -> list[dict[str, Any]]:
    """Revenue (in ``currency``), count and anomalies of every merchant in the last ``window``
    (the current, partial minute included), summed from ``merchant_minute``."""
    last = minute_of(now)
    first = last - timedelta(minutes=WINDOWS[window] - 1)
    totals: dict[str, dict[str, Any]] = {}
    for doc in _minutes(db, "merchant_minute", first, last,
                        ("merchant_id", "merchant_category", "count", "revenue", "anomalies"),
                        currency):
        merchant = doc.get("merchant_id")
        if not isinstance(merchant, str):
            continue
        row = totals.setdefault(merchant, {"merchant_id": merchant,
                                           "merchant_category": doc.get("merchant_category"),
                                           "revenue": 0.0, "count": 0, "anomalies": 0})
        row["revenue"] += _num(doc.get("revenue"))
        row["count"] += int(_num(doc.get("count")))
        row["anomalies"] += int(_num(doc.get("anomalies")))
    for row in totals.values():
        row["revenue"] = _money(row["revenue"])
    return list(totals.values())


def top(totals: list[dict[str, Any]], by: str, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` rows with the most ``by``; ties by merchant_id."""
    return sorted(totals, key=lambda r: (-r[by], r["merchant_id"]))[:limit]


def merchants_top(db: Db, window: str, by: str, limit: int, now: datetime,
                  currency: str = REPORTING) -> list[dict[str, Any]]:
    """The ``limit`` merchants with the most ``by`` (revenue or count) in the last ``window``."""
    return top(merchant_totals(db, window, now, currency), by, limit)


def _volume_rows(db: Db, first: datetime, last: datetime,
                 currency: str) -> dict[datetime, dict[str, Any]]:
    rows: dict[datetime, dict[str, Any]] = {}
    span = int((last - first).total_seconds() // 60) + 1
    for i in range(span):
        key = first + timedelta(minutes=i)
        rows[key] = {"minute": key, "count": 0, "revenue": 0.0, "anomalies": 0}
    for doc in _minutes(db, "volume_minute", first, last, ("count", "revenue", "anomalies"),
                        currency):
        minute = doc.get("minute")
        if not isinstance(minute, datetime):
            continue
        row = rows.get(minute_of(minute if minute.tzinfo else minute.replace(tzinfo=UTC)))
        if row is None:
            continue
        row["count"] += int(_num(doc.get("count")))
        row["revenue"] += _num(doc.get("revenue"))
        row["anomalies"] += int(_num(doc.get("anomalies")))
    return rows


def volume(db: Db, minutes: int, now: datetime,
           currency: str = REPORTING) -> list[dict[str, Any]]:
    """Count, revenue (in ``currency``) and anomalies per minute, the last ``minutes`` minutes
    up to ``now``'s (partial) minute, oldest first; minutes without a ``volume_minute``
    document are zeros."""
    last = minute_of(now)
    rows = _volume_rows(db, last - timedelta(minutes=minutes - 1), last, currency)
    return [{**r, "minute": iso(r["minute"]), "revenue": _money(r["revenue"])}
            for r in rows.values()]


def revenue_by_currency(db: Db, first: datetime, last: datetime) -> dict[str, float]:
    """Revenue per original currency (each in its own amounts) in the minutes
    ``first``..``last``, summed from ``currency_minute``; largest first."""
    totals: dict[str, float] = {}
    for doc in _minutes(db, "currency_minute", first, last, ("currency", "revenue"), None):
        currency = doc.get("currency")
        if isinstance(currency, str):
            totals[currency] = totals.get(currency, 0.0) + _num(doc.get("revenue"))
    return {c: _money(v) for c, v in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))}


def summary(db: Db, now: datetime, currency: str = REPORTING) -> dict[str, Any]:
    """The dashboard's KPIs. ``tps_now`` is the last complete minute's count / 60 (the current
    minute is still filling); the ``*_1h`` sums cover the last 60 minutes, the current partial
    minute included (the same minutes as ``/volume?minutes=60``). ``revenue_1h`` is in
    ``currency``; ``revenue_by_currency`` is the same hour's revenue per original currency."""
    last = minute_of(now)
    first = last - timedelta(minutes=59)
    rows = _volume_rows(db, first, last, currency)
    previous = rows[last - timedelta(minutes=1)]  # the last complete minute
    return {
        "tps_now": round(previous["count"] / 60, 3),
        "count_1h": sum(r["count"] for r in rows.values()),
        "revenue_1h": _money(sum(r["revenue"] for r in rows.values())),
        "currency": currency,
        "revenue_by_currency": revenue_by_currency(db, first, last),
        "anomalies_1h": sum(r["anomalies"] for r in rows.values()),
        "dlq_count": db.dlq.count_documents({}),
        "as_of": iso(now),
    }
