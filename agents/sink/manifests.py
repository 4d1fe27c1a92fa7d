"""The sink's side of retention: after a batch is stored and before its acks go on
(``writer.py``), :meth:`Manifests.record` lists the stored ids under the hour of their event
time (``retention.py`` describes the documents). Every write is idempotent: a manifest has the
id of its batch, hour and partition (a replayed batch inserts the same one again: a duplicate
key, ignored), the directories and calendars are ``$addToSet`` upserts. If the process dies
before the listing is written, the batch is not acked, so it is read, stored (duplicates) and
listed again.

Per batch this costs one ``insert`` (the manifests) and one ``update`` per hour the batch
touches (the directories, one per minute of writing, so that each stays small); a calendar is
written only when the hour is new to this process (or older than
:data:`~retention.MIN_RECENT`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import BulkWriteError

from agents.sink import retention as ret
from agents.sink.documents import Entry
from agents.sink.mongo import DUPLICATE_KEY, UPDATES_PER_COMMAND, InsertResult
from agents.sink.retry import Retry

__all__ = ["Manifests", "RetentionWriteError", "upsert"]

class RetentionWriteError(RuntimeError):
    """A bookkeeping write the database refused (not an outage): the batch is not acked."""


def upsert(db: Database[dict[str, Any]], updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """``updates`` (``(_id, update)``) of the ``retention`` collection as upserts by ``_id``,
    in raw ``update`` commands (FerretDB answers an upsert that lost a race without
    ``nModified``, which pymongo's helpers cannot read). Such a duplicate key means the document
    exists now: the command is sent again (``$addToSet`` is idempotent)."""
    statements = [{"q": {"_id": _id}, "u": update, "upsert": True} for _id, update in updates]
    for start in range(0, len(statements), UPDATES_PER_COMMAND):
        chunk = statements[start:start + UPDATES_PER_COMMAND]
        for attempt in range(5):
            answer = db.command("update", ret.COLLECTION, updates=chunk, ordered=True,
                                writeConcern={"w": 1, "j": True})
            errors = answer.get("writeErrors") or []
            if not errors:
                break
            if any(e.get("code") != DUPLICATE_KEY for e in errors) or attempt == 4:
                raise RetentionWriteError(f"retention update failed: {str(errors)[:300]}")


class Manifests:
    """Lists what one sink writer stores (its own cache of the calendars' recent hours)."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.db = db
        self.calendars: set[tuple[str, str]] = set()

    async def record(self, collection: str, entries: list[Entry], result: InsertResult,
                     now: datetime | None = None) -> None:
        """List a stored batch (``result`` is its insert's): retried through an outage, any
        other error raised (the batch is then not acked)."""
        now = now or datetime.now(UTC)
        listed = ret.list_batch(collection, entries, (e for e, _ in result.rejected), now)
        if not listed.manifests:
            return
        await Retry(f"retention manifests of {len(entries)} {collection}").run(
            lambda: self._write(listed, now), holding=len(entries))

    def _write(self, listed: ret.Listed, now: datetime) -> None:
        manifests = [{"_id": name, "collection": c, "hour": h, "ids": ids}
                     for (c, h, name), ids in listed.manifests.items()]
        updates: list[tuple[str, dict[str, Any]]] = []
        try:
            self.db[ret.COLLECTION].insert_many(manifests, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if exc.details.get("writeConcernErrors") or \
                    any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            # A replayed batch: its manifest exists, and a batch cut differently this time (from
            # the same first offset) may hold more ids: they are added to it.
            updates += [(manifests[e["index"]]["_id"],
                         {"$addToSet": {"ids": {"$each": manifests[e["index"]]["ids"]}}})
                        for e in errors]
        directories: dict[str, list[str]] = {}
        slot = ret.slot_of(now)
        for c, h, name in listed.manifests:
            directories.setdefault(ret.directory_id(c, h, slot), []).append(name)
        updates += [(d, {"$addToSet": {"manifests": {"$each": names}}})
                    for d, names in directories.items()]
        recent = ret.hour_of(now - ret.MIN_RECENT)
        hours = {(c, h) for c, h, _ in listed.manifests}
        hours |= {(ret.AGGREGATE_KEYS, h) for h in listed.aggregate_hours}
        calendars: dict[str, list[str]] = {}
        for c, h in sorted(hours):
            if (c, h) not in self.calendars or h < recent:
                calendars.setdefault(c, []).append(h)
        updates += [(ret.calendar_id(c), {"$addToSet": {"hours": {"$each": hs}}})
                    for c, hs in calendars.items()]
        upsert(self.db, updates)
        self.calendars = {(c, h) for c, h in self.calendars | hours if h >= recent}
