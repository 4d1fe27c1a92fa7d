"""A page of ``GET /anomalies`` from the anomalies' time index (``agents/sink/anomaly_index.py``):
``_id`` lookups of month, day and minute documents, newest first, filtered and ordered here.

The walk starts at the cursor's position (or, for the first page, at the month of now plus
``FUTURE_EVENT_TOLERANCE_SECONDS``) and goes back month by month over the days each month lists,
and within a day minute by minute over the minutes it lists, until it has ``limit`` + 1
anomalies (one more tells that a next page exists), or reaches ``since`` or the oldest day kept
(``ANOMALY_RETENTION_DAYS`` before now). Its reads are bounded: at most :data:`INDEX_READS` month
and day documents and ``max(MINUTE_READS, limit + 1)`` minute documents per request, whatever the
number of anomalies stored. When they run out first, the page holds what was found (possibly
fewer than ``limit``, possibly none) and its cursor goes on from where the walk stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

from agents.sink.anomaly_index import (
    DAYS,
    MINUTES,
    day_id,
    listed,
    minute_id,
    month_id,
    parse_items,
)

__all__ = ["INDEX_READS", "MINUTE_READS", "Position", "page"]

#: Month and day documents read per request at most.
INDEX_READS = 16
#: Minute documents read per request at most (or ``limit`` + 1, when larger).
MINUTE_READS = 50

#: Where a page starts: ``(timestamp, txn_id)``: after that item (newest first order), or
#: ``(timestamp, None)``: before that instant.
Position = tuple[datetime, str | None]
_MS = timedelta(milliseconds=1)


def _text(ts: datetime) -> str:
    """``ts`` as the anomalies' stored timestamps are written (ISO-8601 UTC, milliseconds)."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds")


def _shift(ts: datetime, delta: timedelta) -> datetime:
    """``ts + delta``, or ``ts`` at the ends of the date range."""
    try:
        return ts + delta
    except OverflowError:
        return ts


def _ceil_ms(ts: datetime) -> datetime:
    """``ts`` rounded up to a millisecond (stored timestamps have no finer precision)."""
    extra = ts.microsecond % 1000
    return ts if not extra else _shift(ts, timedelta(microseconds=1000 - extra))


def _months(first: str, last: str) -> list[str]:
    """The months ``first`` down to ``last`` (``YYYY-MM``), newest first."""
    year, month = int(first[:4]), int(first[5:7])
    out = []
    while f"{year:04d}-{month:02d}" >= last and year > 0:
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out


class _Walk:
    """One request's walk: the reads it may still make and the anomalies found."""

    def __init__(self, db: Database[dict[str, Any]], limit: int) -> None:
        self.db = db
        self.index_reads = INDEX_READS
        self.minute_reads = max(MINUTE_READS, limit + 1)

    def read(self, collection: str, _id: str) -> Mapping[str, Any] | None:
        if collection == MINUTES:
            self.minute_reads -= 1
        else:
            self.index_reads -= 1
        return self.db[collection].find_one({"_id": _id})


def page(db: Database[dict[str, Any]], limit: int, after: Position | None,
         category: str | None, min_z: float | None, since: datetime | None, now: datetime,
         keep_days: int, ahead_seconds: float) -> tuple[list[dict[str, Any]], Position | None]:
    """Up to ``limit`` anomalies after ``after`` (None: from the newest), newest first
    (``timestamp`` desc, then ``txn_id`` desc), with ``category``, ``z_score >= min_z`` and
    ``timestamp >= since``; and the position of the next page (None: nothing is left)."""
    # Stored timestamps are whole milliseconds: a finer cursor is the instant after its item.
    if after is not None and after[1] is not None and after[0].microsecond % 1000:
        after = (_ceil_ms(after[0]), None)
    if after is None:
        top_key = None
        start_month = month_id(_shift(now, timedelta(seconds=ahead_seconds)))
        top_minute = "~"  # after every minute id
    else:
        top_key = (_text(after[0]), after[1] or "")
        top_minute = minute_id(after[0] if after[1] is not None else _shift(after[0], -_MS))
        start_month = top_minute[:7]
    since_text = None if since is None else _text(_ceil_ms(since))
    floor_day = day_id(_shift(now, -timedelta(days=keep_days)))
    low_minute = max(floor_day, minute_id(since) if since is not None else "")

    def keep(a: dict[str, Any]) -> bool:
        if top_key is not None and (a["timestamp"], a["txn_id"] if top_key[1] else "") \
                >= top_key:
            return False
        if category is not None and a.get("merchant_category") != category:
            return False
        if min_z is not None:
            z = a.get("z_score")
            if isinstance(z, bool) or not isinstance(z, int | float) or not z >= min_z:
                return False
        return since_text is None or a["timestamp"] >= since_text

    walk = _Walk(db, limit)
    found: list[dict[str, Any]] = []
    covered: str | None = None  # every match from here up to the start is in ``found``

    def stopped() -> tuple[list[dict[str, Any]], Position | None]:
        if covered is None or (top_key is not None and covered >= top_key[0]):
            return found, after  # no progress possible in one request (not expected)
        return found, (datetime.fromisoformat(covered), None)

    for month in _months(start_month, low_minute[:7]):
        if walk.index_reads <= 0:
            return stopped()
        for dd in listed(walk.read(DAYS, month), "days", 2):
            day = f"{month}-{dd}"
            if day > top_minute[:10]:
                continue
            if day < low_minute[:10]:
                break
            if walk.index_reads <= 0:
                return stopped()
            for hhmm in listed(walk.read(DAYS, day), "minutes", 4):
                minute = f"{day}T{hhmm[:2]}:{hhmm[2:]}"
                if minute > top_minute:
                    continue
                if minute < low_minute[:16]:
                    break
                if walk.minute_reads <= 0:
                    return stopped()
                found += [a for a in parse_items(walk.read(MINUTES, minute)) if keep(a)]
                if len(found) > limit:
                    last = found[limit - 1]
                    return found[:limit], (datetime.fromisoformat(last["timestamp"]),
                                           last["txn_id"])
                covered = f"{minute}:00.000+00:00"
            covered = f"{day}T00:00:00.000+00:00"
        covered = f"{month}-01T00:00:00.000+00:00"
    return found, None
