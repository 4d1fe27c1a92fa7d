"""The API's MongoDB reads: plain functions over a pymongo ``Database`` (no web framework here).

Collections and fields are those of ``docs/data-model.md``. FerretDB 1.24 answers only an
``_id`` equality without reading the whole collection, so every endpoint reads a bounded number
of documents by ``_id`` (``find_one({"_id": ...})``), whatever the history stored: month, day
and minute documents of the anomalies' time index (:mod:`views.anomaly_pages`),
``users_by_day`` (one per day asked), ``merchant_hours``/``merchant_days`` (2, 25 or 8),
``volume_hours`` and ``currency_hours`` (one per hour of the window). An aggregate document
holds one packed JSON text per partition of the enriched topic
(:mod:`agents.sink.aggregates`); :func:`agents.sink.aggregates.totals` sums them per key in
integer cents, so sums are exact, and a field that is not such a text counts nothing.

Every money figure is in one reporting currency (the ``currency`` argument, the API's
``REPORTING_CURRENCY``): only aggregate documents labelled with that ``reporting_currency`` are
read (one written under another setting is left out: amounts in two currencies cannot be
added). ``revenue_by_currency`` sums ``currency_hours``, each currency in its own amounts.

Values that come from a request are only ever used as plain values (``{"user_id": user_id}``
with ``user_id`` a ``str``), never as query documents, so ``{"$ne": null}`` is just a strange id.
"""

from __future__ import annotations

import base64
import binascii
import functools
import heapq
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import orjson
from pymongo.database import Database
from pymongo.errors import OperationFailure

from agents.sink import aggregates
from agents.sink.aggregates import Total
from app.contract import minute_of
from app.settings import settings
from views import anomaly_pages
from views.settled import SettledDocs

__all__ = [
    "REPORTING",
    "WINDOWS",
    "CursorError",
    "Db",
    "aggregate_doc",
    "anomalies",
    "decode_cursor",
    "dlq_count",
    "encode_cursor",
    "from_cents",
    "iso",
    "merchant_totals",
    "merchants_top",
    "revenue_by_currency",
    "since",
    "summary",
    "top",
    "volume",
]

#: The database the reads take: documents as plain dicts.
Db: TypeAlias = Database[dict[str, Any]]

#: ``/merchants/top`` windows, in minutes.
WINDOWS = {"1h": 60, "24h": 24 * 60, "7d": 7 * 24 * 60}

#: The default ``currency`` of the money figures: ``REPORTING_CURRENCY``.
REPORTING = settings.reporting_currency

#: ``/merchants/top`` windows: the aggregate collection and how many of its documents, the
#: current (partial) hour or day included.
WINDOW_DOCS = {"1h": ("merchant_hours", 2), "24h": ("merchant_hours", 25),
               "7d": ("merchant_days", 8)}


class CursorError(ValueError):
    """A pagination cursor that this API did not produce."""


def iso(value: Any) -> Any:
    """A BSON date as ISO-8601 UTC with milliseconds (BSON's precision); other values as is."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    return value


def from_cents(value: int) -> float:
    return round(value / 100, 2)


def aggregate_doc(db: Db, collection: str, _id: str, currency: str | None) -> dict[str, Any] | None:
    """The aggregate document ``_id`` (an ``_id`` lookup); None when there is none or it is
    labelled with another reporting currency (unless ``currency`` is None)."""
    doc = db[collection].find_one({"_id": _id})
    if doc is None or (currency is not None and doc.get("reporting_currency") != currency):
        return None
    return doc


# --- /anomalies ---------------------------------------------------------------------------------
def encode_cursor(timestamp: datetime, txn_id: str | None) -> str:
    """An opaque cursor: the (timestamp, txn_id) of the last item of a page, or (when a page
    stopped at its reading budget) the instant before which the next page starts."""
    raw = orjson.dumps([iso(timestamp)] if txn_id is None else [iso(timestamp), txn_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str | None]:
    """The (timestamp, txn_id or None) in a cursor made by :func:`encode_cursor`, or
    CursorError."""
    try:
        if not cursor or len(cursor) > 400:
            raise ValueError("bad length")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
        if (not isinstance(value, list) or len(value) not in (1, 2)
                or not all(isinstance(v, str) for v in value)):
            raise ValueError("not one or two strings")
        ts = datetime.fromisoformat(value[0])
        txn_id = value[1] if len(value) == 2 else None
        if ts.tzinfo is None or (txn_id is not None and (not txn_id or len(txn_id) > 128)):
            raise ValueError("bad values")
        if txn_id is not None:
            txn_id.encode("utf-8")
        # Inside the try: a date at the edge of the range with an offset (year 1 at +01:00,
        # year 9999 at -01:00) has no UTC equivalent (OverflowError).
        return ts.astimezone(UTC), txn_id
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeError,
            orjson.JSONDecodeError):
        raise CursorError("cursor is not a cursor returned by this API") from None


def anomalies(db: Db, limit: int, cursor: str | None = None, category: str | None = None,
              min_z: float | None = None, since: datetime | None = None,
              now: datetime | None = None, keep_days: int = settings.anomaly_retention_days,
              ahead_seconds: float = settings.future_event_tolerance_seconds,
              ) -> tuple[list[dict[str, Any]], str | None]:
    """A page of anomalies, newest first (``timestamp`` desc, then ``txn_id`` desc), and the
    cursor of the next page (None on the last page), read from the anomalies' time index
    (:mod:`views.anomaly_pages`: a bounded number of ``_id`` lookups).

    Keyset pagination: the next page holds the anomalies strictly after this one's position in
    that order, so anomalies arriving meanwhile (newer ones go to the top) never shift the
    pages: no item is repeated or skipped. The walk goes back to ``keep_days`` before ``now``
    at most; the first page starts ``ahead_seconds`` after ``now`` (event times run ahead of
    the clock up to ``FUTURE_EVENT_TOLERANCE_SECONDS``)."""
    after = decode_cursor(cursor) if cursor is not None else None
    items, position = anomaly_pages.page(
        db, limit, after, category, min_z, since, now or datetime.now(UTC), keep_days,
        ahead_seconds)
    return items, None if position is None else encode_cursor(*position)


# --- aggregates: /merchants/top, /volume, /summary ------------------------------------------
def _hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def since(window: str, now: datetime) -> datetime:
    """The start of ``window`` ending at ``now``: the start of the previous UTC hour (1h), of
    the hour 24 hours before the current one (24h), of the UTC day 7 days before today (7d).
    The window is whole hours or days up to the current, partial one: 1h covers 60 to 120
    minutes, 24h 24 to 25 hours, 7d 7 to 8 days."""
    collection, count = WINDOW_DOCS[window]
    if collection == "merchant_hours":
        return _hour(now) - timedelta(hours=count - 1)
    day = _hour(now).replace(hour=0)
    return day - timedelta(days=count - 1)


def _window_ids(window: str, now: datetime) -> tuple[str, list[str]]:
    collection, count = WINDOW_DOCS[window]
    start = since(window, now)
    if collection == "merchant_hours":
        return collection, [(start + timedelta(hours=i)).strftime("%Y-%m-%dT%H")
                            for i in range(count)]
    return collection, [(start + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(count)]


def _merchant_sums(doc: Mapping[str, Any] | None) -> dict[str, tuple[Any, int, int, int]]:
    """merchant -> (category, count, cents, anomalies) of one merchant aggregate document."""
    return {merchant: (t.label, t.a, t.b, t.c)
            for merchant, t in aggregates.totals(doc).items()}


def merchant_totals(db: Db, window: str, now: datetime, currency: str = REPORTING,
                    settled: SettledDocs[dict[str, tuple[Any, int, int, int]]] | None = None
                    ) -> list[dict[str, Any]]:
    """Revenue (in ``currency``), count and anomalies of every merchant in ``window`` (see
    :func:`since`), summed from 2 or 25 ``merchant_hours`` or 8 ``merchant_days`` documents
    (with ``settled``: those of ended hours and days re-read only now and then)."""
    collection, ids = _window_ids(window, now)
    step = timedelta(hours=1) if collection == "merchant_hours" else timedelta(days=1)
    start = since(window, now)
    totals: dict[str, list[Any]] = {}  # merchant -> [category, count, cents, anomalies]
    for i, _id in enumerate(ids):
        def read(_id: str = _id) -> dict[str, tuple[Any, int, int, int]]:
            return _merchant_sums(aggregate_doc(db, collection, _id, currency))
        sums = read() if settled is None else settled.get(
            (collection, _id, currency), start + step * (i + 1), now, read)
        for merchant, (category, count, cents, anomalies) in sums.items():
            row = totals.setdefault(merchant, [category, 0, 0, 0])
            row[1] += count
            row[2] += cents
            row[3] += anomalies
    return [{"merchant_id": merchant, "merchant_category": category, "revenue": from_cents(cents),
             "count": count, "anomalies": anomalies}
            for merchant, (category, count, cents, anomalies) in totals.items() if count]


def top(totals: list[dict[str, Any]], by: str, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` rows with the most ``by``; ties by merchant_id."""
    # A partial selection: every request ranks a window's thousands of merchants.
    return heapq.nsmallest(limit, totals, key=lambda r: (-r[by], r["merchant_id"]))


def merchants_top(db: Db, window: str, by: str, limit: int, now: datetime,
                  currency: str = REPORTING) -> list[dict[str, Any]]:
    """The ``limit`` merchants with the most ``by`` (revenue or count) in ``window``."""
    return top(merchant_totals(db, window, now, currency), by, limit)


def _hour_docs(db: Db, collection: str, first: datetime, last: datetime,
               currency: str | None) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """(hour, document) of the hours ``first``..``last`` that have one: an ``_id`` lookup per
    hour."""
    hour = _hour(first)
    while hour <= last:
        doc = aggregate_doc(db, collection, hour.strftime("%Y-%m-%dT%H"), currency)
        if doc is not None:
            yield hour, doc
        hour += timedelta(hours=1)


def _minute_totals(db: Db, collection: str, first: datetime, last: datetime,
                   currency: str | None) -> Iterator[tuple[datetime, str | None, Total]]:
    """(minute, the rest of the key after ``MM/``, or None for a key ``MM``, its totals) of the
    minutes ``first``..``last`` in ``collection``'s hour documents (an ``_id`` lookup per
    hour)."""
    for hour, doc in _hour_docs(db, collection, first, last, currency):
        for key, total in aggregates.totals(doc).items():
            mm, sep, rest = key.partition("/")
            if not (len(mm) == 2 and mm.isdigit() and int(mm) < 60):
                continue
            minute = hour + timedelta(minutes=int(mm))
            if first <= minute <= last:
                yield minute, rest if sep else None, total


def _volume_rows(db: Db, first: datetime, last: datetime,
                 currency: str) -> dict[datetime, dict[str, Any]]:
    rows: dict[datetime, dict[str, Any]] = {}
    span = int((last - first).total_seconds() // 60) + 1
    for i in range(span):
        key = first + timedelta(minutes=i)
        rows[key] = {"minute": key, "count": 0, "cents": 0, "anomalies": 0}
    for minute, rest, total in _minute_totals(db, aggregates.VOLUME_HOURS, first, last,
                                              currency):
        if rest is not None:
            continue
        row = rows[minute]
        row["count"] += total.a
        row["cents"] += total.b
        row["anomalies"] += total.c
    return rows


def volume(db: Db, minutes: int, now: datetime,
           currency: str = REPORTING) -> list[dict[str, Any]]:
    """Count, revenue (in ``currency``) and anomalies per minute, the last ``minutes`` minutes
    up to ``now``'s (partial) minute, oldest first; minutes without transactions are zeros.
    One ``volume_hours`` lookup per hour the minutes touch."""
    last = minute_of(now)
    rows = _volume_rows(db, last - timedelta(minutes=minutes - 1), last, currency)
    return [{"minute": iso(r["minute"]), "count": r["count"], "revenue": from_cents(r["cents"]),
             "anomalies": r["anomalies"]} for r in rows.values()]


def revenue_by_currency(db: Db, first: datetime, last: datetime) -> dict[str, float]:
    """Revenue per original currency (each in its own amounts) in the minutes
    ``first``..``last``, summed from ``currency_hours`` (keys ``MM/<currency>``, one lookup per
    hour); largest first."""
    totals: dict[str, int] = {}
    for _, code, total in _minute_totals(db, aggregates.CURRENCY_HOURS, first, last, None):
        if code is None:
            continue
        totals[code] = totals.get(code, 0) + total.b
    return {c: from_cents(v) for c, v in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))}


def dlq_count(db: Db) -> int:
    """Documents in ``dlq``: the collection's ``collStats`` count (MongoDB: its metadata;
    FerretDB counts the rows in SQLite, ~8 µs per document, far less than
    ``estimated_document_count``, which reads every document there)."""
    try:
        return int(db.command("collStats", "dlq").get("count", 0))
    except OperationFailure:  # a server without collStats
        return db.dlq.estimated_document_count()


def summary(db: Db, now: datetime, currency: str = REPORTING,
            dead_letters: Callable[[], int] | None = None) -> dict[str, Any]:
    """The dashboard's KPIs. ``tps_now`` is the last complete minute's count / 60 (the current
    minute is still filling); the ``*_1h`` sums cover the last 60 minutes, the current partial
    minute included (the same minutes as ``/volume?minutes=60``). ``revenue_1h`` is in
    ``currency``; ``revenue_by_currency`` is the same hour's revenue per original currency.
    Reads 2 ``volume_hours`` and 2 ``currency_hours`` documents; ``dlq_count`` is
    ``dead_letters()`` (default: :func:`dlq_count` now)."""
    last = minute_of(now)
    first = last - timedelta(minutes=59)
    rows = _volume_rows(db, first, last, currency)
    previous = rows[last - timedelta(minutes=1)]  # the last complete minute
    return {
        "tps_now": round(previous["count"] / 60, 3),
        "count_1h": sum(r["count"] for r in rows.values()),
        "revenue_1h": from_cents(sum(r["cents"] for r in rows.values())),
        "currency": currency,
        "revenue_by_currency": revenue_by_currency(db, first, last),
        "anomalies_1h": sum(r["anomalies"] for r in rows.values()),
        "dlq_count": (dead_letters or functools.partial(dlq_count, db))(),
        "as_of": iso(now),
    }
