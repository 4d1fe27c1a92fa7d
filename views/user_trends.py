"""The reads of ``/users/{user_id}/trends``: a user's spend, count and anomalies per UTC day.

Per day, the ``users_by_day`` document of the user's group (:func:`agents.sink.aggregates.
user_group`: 64 groups), found by ``_id``. The documents of ended days are kept
(:mod:`views.settled`), shared by every user of a group, so a warm request reads at most
today's; :func:`warm` fills them at the API's start.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

from agents.sink import aggregates
from views import queries
from views.settled import SettledDocs

__all__ = ["TRENDS_READERS", "trends", "users_day", "warm"]

#: Day documents one trends request reads at once: one after another, 30 lookups on a busy
#: machine would wait 30 times for the database's turn.
TRENDS_READERS = 8
_trends_readers = ThreadPoolExecutor(TRENDS_READERS, thread_name_prefix="trends")


def trends(db: queries.Db, user_id: str, days: int, now: datetime,
           currency: str = queries.REPORTING,
           settled: SettledDocs[dict[str, Any] | None] | None = None,
           background: Callable[[Callable[[], Any]], object] = _trends_readers.submit,
           today_doc: Callable[[date, int], dict[str, Any] | None] | None = None,
           ) -> list[dict[str, Any]]:
    """Spend (in ``currency``: the transactions' ``amount_reporting``), count and anomalies of
    ``user_id`` per UTC day, the last ``days`` days up to ``now``'s day included, oldest first;
    days without transactions are zeros. Per day, the ``users_by_day`` document of the user's
    group (:func:`agents.sink.aggregates.user_group`), which counts the transactions in the
    reporting currency, as every other figure: ``days`` lookups, :data:`TRENDS_READERS` at a
    time; with ``settled``, the documents of ended days come from it (every user of a group
    shares them), so a warm request reads today's document only (through ``today_doc``(day,
    group) when given: the API's cache); a kept day past its re-read time is served as kept and
    read again through ``background``."""
    today = now.astimezone(UTC).date()
    group = aggregates.user_group(user_id)
    dates = [today - timedelta(days=days - 1 - i) for i in range(days)]

    def read(day: date) -> dict[str, Any] | None:
        return users_day(db, day, group, currency)

    def doc_of(day: date) -> dict[str, Any] | None:
        if day == today and today_doc is not None:
            return today_doc(day, group)
        if settled is None:
            return read(day)
        return settled.get(_users_day_key(day, group, currency), _day_end(day), now,
                           lambda: read(day))

    # Kept days answer at once, even past their re-read time: those are read again in the
    # background, so a warm request reads today's document only, here (every hop to another
    # thread may wait for the GIL on a busy API).
    found: dict[date, dict[str, Any] | None] = {}
    if settled is not None:
        for day in dates:
            key = _users_day_key(day, group, currency)
            kept = settled.kept(key)
            if kept is None:
                continue
            found[day] = kept[0]
            if not kept[1]:
                settled.refresh_later(key, _day_end(day), now, functools.partial(read, day),
                                      background)
    missing = [day for day in dates if day not in found]
    readers = map if len(missing) <= 1 else _trends_readers.map
    found.update(zip(missing, readers(doc_of, missing), strict=True))
    rows = []
    for day in dates:
        t = aggregates.total_of(found[day], user_id)
        rows.append({"day": day.isoformat(), "spend": queries.from_cents(t.b), "count": t.a,
                     "anomalies": t.c})
    return rows


def warm(db: queries.Db, now: datetime, days: int, currency: str,
         settled: SettledDocs[dict[str, Any] | None]) -> int:
    """Keep in ``settled`` the ``users_by_day`` documents of every group for the ``days`` - 1
    ended days before ``now``'s (the API's start, in the background), so that the first trends
    request of a group reads today's document only, as the next ones do. A day without a
    document is not kept (a backfill written after the start shows at once). Returns how many
    documents were kept."""
    today = now.astimezone(UTC).date()
    kept = 0
    for back in range(1, days):
        day = today - timedelta(days=back)
        for group in range(aggregates.USER_GROUPS):
            doc = users_day(db, day, group, currency)
            if doc is not None:
                settled.put(_users_day_key(day, group, currency), _day_end(day), now, doc)
                kept += 1
    return kept


def users_day(db: queries.Db, day: date, group: int, currency: str) -> dict[str, Any] | None:
    """The ``users_by_day`` document of ``group`` on ``day`` in ``currency``, or None."""
    return queries.aggregate_doc(db, aggregates.USERS_BY_DAY,
                                 aggregates.users_by_day_id(day.isoformat(), group), currency)


def _users_day_key(day: date, group: int, currency: str) -> tuple[str, date, int, str]:
    return (aggregates.USERS_BY_DAY, day, group, currency)


def _day_end(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
