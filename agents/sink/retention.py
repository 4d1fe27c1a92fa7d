"""Retention without scans: the hours, ids and bookkeeping documents that let ``txn prune``
delete what has expired by ``_id`` alone. Pure (no I/O); the sink writes the bookkeeping
(``manifests.py``), the prune reads and deletes it (``prune.py``).

FerretDB 1.24 pushes only an ``_id`` equality down to its storage: any other filter, an ``_id``
range or a ``$in`` reads the whole collection. So every stored document is listed, by the sink
as it stores it, under the UTC hour of its event time, in the ``retention`` collection:

- a **manifest** per batch, hour and partition: ``m|<collection>|<hour>|<partition>|<first
  offset>`` with the ``ids`` stored (a replayed batch writes the same manifest again);
- a **directory** per hour and minute of writing: ``h|<collection>|<hour>|<MM>`` with the
  ``manifests`` of that hour written in that minute of the wall clock (an earlier version wrote
  one per hour, ``h|<collection>|<hour>``, which the prune still reads): an ``$addToSet``
  rewrites the whole array, and one hour's directory at 1k/s grew to ~57,000 names, ~0.2 s of
  FerretDB per batch by the end of the hour;
- a **calendar** per collection: ``c|<collection>`` with the ``hours`` that have a directory.

The aggregates (``aggregates.py``) have ids made of their hour or day, so they need no
manifest: the calendar ``c|aggregates`` lists the hours of the transactions stored, and the ids
of their documents follow.

Hours are text, ``YYYY-MM-DDTHH`` (UTC), so they sort in time order. An hour expires once it
has ended ``days`` before now: every document in it is then past its retention.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.sink import aggregates as agg
from agents.sink import documents as docs
from agents.sink.buckets import HOUR_FORMAT
from agents.sink.documents import Entry

__all__ = [
    "AGGREGATES",
    "AGGREGATE_KEYS",
    "COLLECTION",
    "HOUR_FORMAT",
    "MAX_IDS",
    "MIN_RECENT",
    "SLOTS",
    "STATE_ID",
    "Aggregate",
    "Listed",
    "aggregate_ids",
    "calendar_id",
    "cutoff_day",
    "cutoff_hour",
    "day_of",
    "directory_id",
    "directory_ids",
    "event_time",
    "expired_days",
    "expired_hours",
    "hour_of",
    "hour_start",
    "list_batch",
    "manifest_id",
    "minutes_of",
    "slot_of",
]

#: The collection of the bookkeeping documents (manifests, directories, calendars, state).
COLLECTION = "retention"
#: The directory slots of an hour: the minutes of the wall clock.
SLOTS = tuple(f"{m:02d}" for m in range(60))
#: The prune's own state: what it did last, per collection.
STATE_ID = "prune"
#: The calendar of the hours of the aggregates (of the transactions stored).
AGGREGATE_KEYS = "aggregates"
#: Ids per manifest at most (about 400 kB; a document may not exceed 16 MB): a larger batch's
#: ids of one hour and partition are split, the parts named ``<manifest id>+<n>``.
MAX_IDS = 10_000
#: The sink remembers an hour it added to a calendar only while the hour is younger than this:
#: the prune never retires an hour younger than a day (the shortest retention), so an older
#: hour is written to its calendar with every batch that touches it (late events only).
MIN_RECENT = timedelta(hours=23)


# --- hours ------------------------------------------------------------------------------------
def hour_of(when: datetime) -> str:
    """The UTC hour of ``when`` (aware) as text: ``2026-11-30T14``."""
    return agg.hour_id(when)


def hour_start(hour: str) -> datetime:
    """The first instant of an hour (``hour_of``'s inverse)."""
    return datetime.strptime(hour, HOUR_FORMAT).replace(tzinfo=UTC)


def day_of(hour: str) -> str:
    """The day of an hour: ``2026-11-30``."""
    return hour[:10]


def minutes_of(hour: str) -> list[datetime]:
    """The 60 minutes of an hour."""
    start = hour_start(hour)
    return [start + timedelta(minutes=m) for m in range(60)]


def cutoff_hour(now: datetime, days: int) -> str:
    """Hours before this one have expired: they ended at least ``days`` before ``now``."""
    return hour_of(now - timedelta(days=days))


def cutoff_day(now: datetime, days: int) -> str:
    """Days before this one have expired: they ended at least ``days`` before ``now``."""
    return (now - timedelta(days=days)).astimezone(UTC).strftime("%Y-%m-%d")


def expired_hours(hours: Iterable[str], now: datetime, days: int) -> list[str]:
    """The expired ones of ``hours``, oldest first."""
    cutoff = cutoff_hour(now, days)
    return sorted(h for h in set(hours) if h < cutoff)


def expired_days(hours: Iterable[str], now: datetime, days: int) -> dict[str, list[str]]:
    """The expired whole days among the days of ``hours``, oldest first, each with its hours
    (a day's rows go only once every hour of it has expired)."""
    cutoff = cutoff_day(now, days)
    found: dict[str, list[str]] = {}
    for hour in sorted(set(hours)):
        if day_of(hour) < cutoff:
            found.setdefault(day_of(hour), []).append(hour)
    return found


# --- ids ----------------------------------------------------------------------------------------
def manifest_id(collection: str, hour: str, partition: int, offset: int) -> str:
    """A batch's manifest of one hour: the same batch read again has the same id."""
    return f"m|{collection}|{hour}|{partition}|{offset}"


def directory_id(collection: str, hour: str, slot: str | None = None) -> str:
    """The directory of ``hour`` written in minute ``slot`` (``MM``; None: the one-per-hour
    directory of an earlier version)."""
    return f"h|{collection}|{hour}" if slot is None else f"h|{collection}|{hour}|{slot}"


def directory_ids(collection: str, hour: str) -> list[str]:
    """Every directory ``hour`` may have: the one-per-hour one, then one per minute."""
    return [directory_id(collection, hour)] + [directory_id(collection, hour, slot)
                                               for slot in SLOTS]


def slot_of(now: datetime) -> str:
    """The directory slot a write at ``now`` lists its manifests in: the minute, ``MM``."""
    return now.astimezone(UTC).strftime("%M")


def calendar_id(collection: str) -> str:
    return f"c|{collection}"


# --- what the sink lists --------------------------------------------------------------------------
def event_time(collection: str, doc: Mapping[str, Any]) -> datetime | None:
    """The time a stored document's retention counts from: a dead letter's ``failed_at``,
    anything else's ``timestamp`` (event time)."""
    value = doc.get("failed_at" if collection == docs.DLQ else "timestamp")
    return value if isinstance(value, datetime) else None


@dataclass
class Listed:
    """What one stored batch adds to the bookkeeping: ``manifests`` (collection, hour, manifest
    id: ids), and the ``aggregate_hours`` (of the transactions stored)."""

    manifests: dict[tuple[str, str, str], list[str]]
    aggregate_hours: set[str]


def list_batch(collection: str, entries: Sequence[Entry], rejected: Iterable[Entry],
               now: datetime) -> Listed:
    """The manifests of a stored batch: every entry that has a document and was not refused
    (inserted, or stored before: a duplicate) under the hour of its event time, per partition,
    named after the first offset of that partition in the batch; the refused ones are dead
    letters made now, listed under ``dlq``. For ``transactions``, their hours are the
    aggregates' too."""
    refused = {id(e) for e in rejected}
    listed = Listed({}, set())
    firsts: dict[tuple[str, int], int] = {}
    for entry in entries:
        key = (collection if entry.doc is not None and id(entry) not in refused else docs.DLQ,
               entry.partition)
        firsts[key] = min(firsts.get(key, entry.offset), entry.offset)

    def add(target: str, hour: str, entry: Entry, _id: str) -> None:
        name = manifest_id(target, hour, entry.partition, firsts[target, entry.partition])
        listed.manifests.setdefault((target, hour, name), []).append(_id)

    for entry in entries:
        doc = entry.doc
        when = None if doc is None else event_time(collection, doc)
        if doc is None or id(entry) in refused or when is None or "_id" not in doc:
            if doc is None or id(entry) in refused:  # its dead letter, made now
                add(docs.DLQ, hour_of(now), entry,
                    f"{entry.topic}:{entry.partition}:{entry.offset}")
            continue
        hour = hour_of(when)
        add(collection, hour, entry, str(doc["_id"]))
        if collection == docs.TRANSACTIONS:
            listed.aggregate_hours.add(hour)
    for (target, hour, name), ids in list(listed.manifests.items()):
        if len(ids) > MAX_IDS:
            del listed.manifests[target, hour, name]
            for n, start in enumerate(range(0, len(ids), MAX_IDS)):
                part = name if n == 0 else f"{name}+{n}"
                listed.manifests[target, hour, part] = ids[start:start + MAX_IDS]
    return listed


# --- the aggregates -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Aggregate:
    """An aggregate collection with one document per ``unit`` ("minute", "hour", "day") of
    event time, its ``_id`` that time: ``YYYY-MM-DDTHH:MM:00Z``, ``YYYY-MM-DDTHH`` or
    ``YYYY-MM-DD``; or ``USER_GROUPS`` documents per day ("day_groups": ``YYYY-MM-DD/NN``)."""

    collection: str
    unit: str


#: Every aggregate the prune deletes after ``AGGREGATE_RETENTION_DAYS``, whole documents by
#: ``_id`` (a user's days are in ``users_by_day``, pruned by day like the others).
#: ``volume_minute`` is written by earlier versions of the sink only; its rows of the hours the
#: sink listed go too.
AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate(agg.MERCHANT_HOURS, "hour"),
    Aggregate(agg.VOLUME_HOURS, "hour"),
    Aggregate(agg.CURRENCY_HOURS, "hour"),
    Aggregate(agg.MERCHANT_DAYS, "day"),
    Aggregate(agg.CURRENCY_DAYS, "day"),
    Aggregate(agg.USERS_BY_DAY, "day_groups"),
    Aggregate(docs.VOLUME_MINUTE, "minute"),
)


def aggregate_ids(aggregate: Aggregate, hour: str) -> list[str]:
    """The ids of ``aggregate``'s documents in ``hour`` (a "day" aggregate: its day's)."""
    if aggregate.unit == "minute":
        return [docs.minute_id(m) for m in minutes_of(hour)]
    if aggregate.unit == "day_groups":
        return [agg.users_by_day_id(day_of(hour), g) for g in range(agg.USER_GROUPS)]
    return [hour if aggregate.unit == "hour" else day_of(hour)]
