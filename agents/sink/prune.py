"""``txn prune``: delete what has passed its retention, by ``_id`` only, so that its cost is
that of what it deletes, whatever the size of the collections (``retention.py`` describes the
bookkeeping the sink writes).

For ``transactions``, ``anomalies`` and ``dlq`` it walks the expired hours of the collection's
calendar, oldest first; per hour it reads the directories (one per minute of writing), then each
manifest, deletes the listed ids (``DeleteOne`` by ``_id``, :data:`DELETES_PER_CALL` per call), then
the manifest. For the aggregates it walks the expired whole days of the ``aggregates`` calendar and
deletes their documents by the ids made of the day and its hours. Before the anomalies, it deletes
their time index (``anomaly_index.py``) of the anomalies' expired hours: the minute documents that
each expired day's ``anomaly_days`` document lists, then the day (and month) document once it lists
nothing. An hour is retired last: its entries are pulled from its directories and the hour from its
calendar; the directories are then read again, and if a sink listed something there meanwhile (a
late event), the hour goes back on the calendar for the next run, else the empty directories are
deleted.

Every step is idempotent (deleting a missing id is a no-op), so a prune that stopped half way is
finished by the next one, two prunes at once do the same deletes, and a prune runs beside the
sink: the sink writes only recent hours, except for late events, which the re-read catches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import DeleteOne
from pymongo.database import Database
from pymongo.errors import PyMongoError

from agents.sink import anomaly_index as index
from agents.sink import documents as docs
from agents.sink import retention as ret
from agents.sink.manifests import upsert
from app.settings import Settings

__all__ = ["ANOMALY_INDEX", "DELETES_PER_CALL", "Counts", "Pruner", "Report", "prune",
           "retention_days"]

#: ``DeleteOne`` statements per ``bulk_write`` call.
DELETES_PER_CALL = 1000
#: The report of the anomalies' time index (``anomaly_index.py``).
ANOMALY_INDEX = "anomaly_index"
#: What the directory of a kind of hour lists.
MANIFEST_FIELDS = ("manifests",)


def retention_days(settings: Settings) -> dict[str, int]:
    """Days kept per collection (``aggregates``: every aggregate collection)."""
    return {docs.TRANSACTIONS: settings.retention_days, docs.ANOMALIES:
            settings.anomaly_retention_days, docs.DLQ: settings.dlq_retention_days,
            ret.AGGREGATE_KEYS: settings.aggregate_retention_days}


@dataclass
class Report:
    """What a prune did to one collection (or, for ``aggregates``, to each aggregate)."""

    collection: str
    days: int
    cutoff: str
    hours: list[str] = field(default_factory=list)
    listed: int = 0
    deleted: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        span = f"{self.hours[0]} .. {self.hours[-1]}" if self.hours else "none"
        deleted = ", ".join(f"{c} {n:,}" for c, n in self.deleted.items() if n) or "nothing"
        return (f"{self.collection}: {self.days} days, before {self.cutoff}: {len(self.hours)} "
                f"hours expired ({span}), {self.listed:,} ids listed, deleted {deleted} "
                f"in {self.seconds:.1f} s")


@dataclass
class Counts:
    """The database calls a prune made (its cost; the tests compare it with what expired)."""

    reads: int = 0
    delete_calls: int = 0
    delete_ids: int = 0
    updates: int = 0


class Pruner:
    """Deletes what has expired, by ``_id``. ``progress`` gets a line per hour retired."""

    def __init__(self, db: Database[dict[str, Any]], days: dict[str, int], *,
                 progress: Callable[[str], None] | None = None) -> None:
        self.db = db
        self.days = days
        self.progress = progress or (lambda line: None)
        self.books = db[ret.COLLECTION]
        self.counts = Counts()

    # --- the calls ----------------------------------------------------------------------------
    def _read(self, _id: str) -> dict[str, Any] | None:
        self.counts.reads += 1
        return self.books.find_one({"_id": _id})

    def _delete(self, collection: str, ids: Iterable[str]) -> int:
        """Delete these ids (by ``_id`` equality: FerretDB reads the whole collection for a
        ``$in``); how many existed."""
        unique = list(dict.fromkeys(ids))
        deleted = 0
        for start in range(0, len(unique), DELETES_PER_CALL):
            chunk = unique[start:start + DELETES_PER_CALL]
            self.counts.delete_calls += 1
            self.counts.delete_ids += len(chunk)
            result = self.db[collection].bulk_write([DeleteOne({"_id": i}) for i in chunk],
                                                    ordered=False)
            deleted += result.deleted_count
        return deleted

    def _update(self, _id: str, update: dict[str, Any], upsert_it: bool = False) -> None:
        self.counts.updates += 1
        if upsert_it:
            upsert(self.db, [(_id, update)])
        else:
            self.books.update_one({"_id": _id}, update)

    # --- a run --------------------------------------------------------------------------------
    def run(self, now: datetime | None = None) -> list[Report]:
        """Prune everything expired at ``now`` (default: the current time)."""
        now = now or datetime.now(UTC)
        # The anomalies' index first: it finds its expired days from the anomalies' calendar
        # (read once for both), which the anomalies' prune then empties.
        anomaly_hours = self._calendar(docs.ANOMALIES)
        reports = [self.prune_collection(docs.TRANSACTIONS, now),
                   self.prune_anomaly_index(now, anomaly_hours),
                   self.prune_collection(docs.ANOMALIES, now, anomaly_hours),
                   self.prune_collection(docs.DLQ, now)]
        reports.append(self.prune_aggregates(now))
        self._update(ret.STATE_ID, {"$set": {
            "at": now, "finished_at": datetime.now(UTC),
            **{f"collections.{r.collection}": {
                "days": r.days, "cutoff": r.cutoff, "hours": len(r.hours),
                "newest_hour": r.hours[-1] if r.hours else None, "listed": r.listed,
                "deleted": r.deleted, "seconds": round(r.seconds, 3)} for r in reports}}},
            upsert_it=True)
        return reports

    def _calendar(self, collection: str) -> list[str]:
        calendar = self._read(ret.calendar_id(collection)) or {}
        return [h for h in calendar.get("hours") or [] if isinstance(h, str)]

    def prune_collection(self, collection: str, now: datetime,
                         calendar: list[str] | None = None) -> Report:
        """``calendar``: the collection's hours, when already read."""
        started = time.monotonic()
        days = self.days[collection]
        report = Report(collection, days, ret.cutoff_hour(now, days), deleted={collection: 0})
        hours = self._calendar(collection) if calendar is None else calendar
        for hour in ret.expired_hours(hours, now, days):
            hour_started = time.monotonic()
            listing: dict[str, list[str]] = {}  # directory -> the manifests it lists
            for directory in ret.directory_ids(collection, hour):
                found = self._read(directory)
                if found is not None:
                    listing[directory] = [n for n in found.get("manifests") or []
                                          if isinstance(n, str)]
            names = list(dict.fromkeys(n for listed in listing.values() for n in listed))
            listed = deleted = 0
            for name in names:
                manifest = self._read(name) or {}
                ids = [i for i in manifest.get("ids") or [] if isinstance(i, str)]
                listed += len(ids)
                deleted += self._delete(collection, ids)
                self._delete(ret.COLLECTION, [name])
            self._retire(collection, hour, listing)
            report.hours.append(hour)
            report.listed += listed
            report.deleted[collection] += deleted
            self.progress(f"{collection} {hour}: {len(names)} manifests, {deleted:,} of "
                          f"{listed:,} listed deleted in {time.monotonic() - hour_started:.2f} s")
        report.seconds = time.monotonic() - started
        return report

    def prune_anomaly_index(self, now: datetime, calendar: list[str] | None = None) -> Report:
        """The ``anomaly_minutes`` of the anomalies' expired hours (listed by their day's
        ``anomaly_days`` document), then those minutes off their day, and a day (and month)
        document once it lists nothing."""
        started = time.monotonic()
        days = self.days[docs.ANOMALIES]
        report = Report(ANOMALY_INDEX, days, ret.cutoff_hour(now, days),
                        deleted={index.MINUTES: 0, index.DAYS: 0})
        expired: dict[str, set[str]] = {}
        hours = self._calendar(docs.ANOMALIES) if calendar is None else calendar
        for hour in ret.expired_hours(hours, now, days):
            expired.setdefault(ret.day_of(hour), set()).add(hour[11:13])
        for day, day_hours in expired.items():
            self.counts.reads += 1
            stored = self.db[index.DAYS].find_one({"_id": day})
            listed = index.listed(stored, "minutes", 4)
            gone = [m for m in listed if m[:2] in day_hours]
            report.listed += len(gone)
            report.deleted[index.MINUTES] += self._delete(
                index.MINUTES, [f"{day}T{m[:2]}:{m[2:]}" for m in gone])
            if gone:
                self._update_index(day, {"$unset": {f"minutes.{m}": "" for m in gone}})
            emptied = len(gone) == len(listed) and self._delete_empty(day, "minutes")
            report.deleted[index.DAYS] += emptied
            if emptied or stored is None:  # stored None: deleted by a run that then stopped
                self._update_index(day[:7], {"$unset": {f"days.{day[8:]}": ""}})
                self._delete_empty(day[:7], "days")
            report.hours += sorted(f"{day}T{h}" for h in day_hours)
        report.seconds = time.monotonic() - started
        return report

    def _update_index(self, _id: str, update: dict[str, Any]) -> None:
        self.counts.updates += 1
        self.db[index.DAYS].update_one({"_id": _id}, update)

    def _delete_empty(self, _id: str, field: str) -> bool:
        """Delete the ``anomaly_days`` document ``_id`` if its ``field`` lists nothing (a sink
        may have listed a late anomaly meanwhile)."""
        self.counts.delete_calls += 1
        return self.db[index.DAYS].delete_one({"_id": _id, field: {}}).deleted_count > 0

    def prune_aggregates(self, now: datetime) -> Report:
        started = time.monotonic()
        days = self.days[ret.AGGREGATE_KEYS]
        report = Report(ret.AGGREGATE_KEYS, days, ret.cutoff_day(now, days),
                        deleted={a.collection: 0 for a in ret.AGGREGATES})
        expired = ret.expired_days(self._calendar(ret.AGGREGATE_KEYS), now, days)
        for day, hours in expired.items():
            day_started = time.monotonic()
            # The day's documents first: the day leaves the calendar with its last hour.
            deleted = self._delete_rows("day", hours[0], report)
            for hour in hours:
                deleted += self._delete_rows("hour", hour, report)
                deleted += self._delete_rows("minute", hour, report)
                self._update(ret.calendar_id(ret.AGGREGATE_KEYS), {"$pull": {"hours": hour}})
                report.hours.append(hour)
            self.progress(f"aggregates {day}: {len(hours)} hours, {deleted:,} documents "
                          f"deleted in {time.monotonic() - day_started:.2f} s")
        report.seconds = time.monotonic() - started
        return report

    def _delete_rows(self, unit: str, hour: str, report: Report) -> int:
        deleted = 0
        for aggregate in ret.AGGREGATES:
            if aggregate.unit == unit:
                ids = ret.aggregate_ids(aggregate, hour)
                report.listed += len(ids)
                n = self._delete(aggregate.collection, ids)
                report.deleted[aggregate.collection] += n
                deleted += n
        return deleted

    def _retire(self, collection: str, hour: str, listing: dict[str, list[str]]) -> None:
        """Take ``hour`` off: pull what was handled from its directories (``listing``) and the
        hour from the calendar; then, if a directory lists something new (a sink wrote it
        meanwhile), put the hour back on the calendar, else delete the empty directories."""
        for directory, names in listing.items():
            if names:
                self._update(directory, {"$pullAll": {"manifests": names}})
        self._update(ret.calendar_id(collection), {"$pull": {"hours": hour}})
        # Every slot again: a sink may have written a slot that had no directory before.
        left = {d: doc for d in ret.directory_ids(collection, hour)
                if (doc := self._read(d)) is not None}
        if any(doc.get(k) for doc in left.values() for k in MANIFEST_FIELDS):
            self._update(ret.calendar_id(collection), {"$addToSet": {"hours": hour}},
                         upsert_it=True)
            self.progress(f"{collection} {hour}: listed again meanwhile, left for the next run")
            return
        for directory in left:
            self.counts.delete_calls += 1
            self.books.delete_one({"_id": directory,
                                   **{k: {"$in": [None, []]} for k in MANIFEST_FIELDS}})


def prune(db: Database[dict[str, Any]], days: dict[str, int], now: datetime | None,
          out: Callable[[str], None], err: Callable[[str], None]) -> int:
    """One ``txn prune`` run: progress and a line per collection on ``out``; on an error a
    message on ``err`` and exit code 1 (what was deleted stays deleted; the next run goes on
    from there)."""
    started = time.monotonic()
    when = now or datetime.now(UTC)
    out(f"[prune] now={when.isoformat()} keeping: " + ", ".join(
        f"{c} {d} days" for c, d in days.items()))
    pruner = Pruner(db, days, progress=lambda line: out(f"[prune] {line}"))
    try:
        reports = pruner.run(when)
    except PyMongoError as exc:
        err(f"Error: prune stopped after {time.monotonic() - started:.1f} s: "
            f"{type(exc).__name__}: {str(exc)[:300]}. What it deleted stays deleted; run "
            "it again to finish.")
        return 1
    for report in reports:
        out(f"[prune] {report.line()}")
    c = pruner.counts
    out(f"[prune] done in {time.monotonic() - started:.1f} s: {c.reads:,} reads, "
        f"{c.delete_calls:,} delete calls for {c.delete_ids:,} ids, {c.updates:,} updates")
    return 0
