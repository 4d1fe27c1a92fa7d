"""The sink's MongoDB side: the client, collections and indexes at start-up, batched idempotent
inserts, poison documents to dead-letter records, and the aggregates' reads and upserts. Every
call runs through :class:`~agents.sink.retry.Retry` (a writer thread, retried through an
outage) and has a socket timeout, so a database that stops answering is retried too.

- :meth:`MongoStore.insert`: ``insert_many(ordered=False)``; a duplicate key (code 11000) means
  "already stored" and is ignored, so replays never duplicate nor change a document. An error
  about one document (a write error of that document, or the client unable to encode it) is
  tried once more, then that document goes to the ``dlq`` collection as a dead-letter record
  (the rest of the batch is stored). Any other error is raised: an outage is retried
  (``retry.py``), anything else ends the process without acking the batch (``crash.py``).
- :meth:`MongoStore.write_aggregates`: raw ``update`` commands (``$set``, upsert), one
  statement per document, of absolute values (an aggregate's packed ``p<n>`` fields whole), so
  a repeated write is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING, IndexModel, MongoClient
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    CollectionInvalid,
    DocumentTooLarge,
    DuplicateKeyError,
    OperationFailure,
    WriteError,
    WTimeoutError,
)

from agents.sink import aggregates as agg
from agents.sink import documents as docs
from agents.sink.documents import Entry
from agents.sink.exceptions import DeadLetterWriteError, RollupWriteError
from agents.sink.retry import RETRY_MIN_SECONDS, ROLLUP_WRITER, WRITER, Retry

__all__ = [
    "INDEXES",
    "UPDATES_PER_COMMAND",
    "AggregateWrite",
    "InsertResult",
    "MongoStore",
    "connect",
    "ensure_collections",
    "is_ferretdb",
    "time_series_supported",
]

log = logging.getLogger("app.sink")

SERVER_TIMEOUT_MS = 5_000
SOCKET_TIMEOUT_MS = 60_000
#: FerretDB 1.24 can stop answering an ``update`` of 50 statements or more (docs/data-model.md).
UPDATES_PER_COMMAND = 20
#: Ids per ``$in`` read of the aggregates and of stored transactions (MongoDB only).
READ_IDS_PER_QUERY = 1000
DUPLICATE_KEY = 11000

#: Collections and their secondary indexes (made on MongoDB only: FerretDB 1.24 never uses
#: them and keeps each one on every insert, docs/data-model.md). The API reads the aggregates
#: by ``_id`` only; the anomalies' indexes serve its pagination on MongoDB; the transactions'
#: serve a user's history and time ranges (their only fields besides ``_id`` and ``txn``).
INDEXES: dict[str, list[IndexModel]] = {
    docs.TRANSACTIONS: [
        IndexModel([("user_id", ASCENDING), ("timestamp", DESCENDING)]),
        IndexModel([("timestamp", DESCENDING)]),
    ],
    docs.ANOMALIES: [
        IndexModel([("timestamp", DESCENDING)]),
        IndexModel([("merchant_category", ASCENDING), ("timestamp", DESCENDING)]),
    ],
    **{name: [] for name in agg.COLLECTIONS},
    docs.DLQ: [IndexModel([("failed_at", DESCENDING)])],
    docs.METRICS: [IndexModel([("collection", ASCENDING), ("at", DESCENDING)])],
}

#: A document's upsert: ``(collection, _id, $set fields or paths, $unset paths)`` (the
#: aggregates unset nothing; the anomalies' time index sets dotted paths).
AggregateWrite = tuple[str, str, dict[str, Any], list[str]]
#: ``(inserted, duplicates, [(entry, reason, kind)] refused)`` of one insert call; ``kind`` is
#: "encoding" (the client could not encode the document) or "rejected" (the server refused it).
_Inserted = tuple[int, int, list[tuple[Entry, str, str]]]
#: What the client raises, before sending anything, for a document it cannot encode as BSON.
ENCODING_ERRORS = (InvalidDocument, OverflowError, DocumentTooLarge, UnicodeEncodeError)


def connect(url: str) -> MongoClient[dict[str, Any]]:
    """The client; a write is acknowledged once journaled (``j=True``). A call that gets no
    answer for ``SOCKET_TIMEOUT_MS`` fails (and is retried) instead of hanging."""
    return MongoClient(url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS,
                       connectTimeoutMS=SERVER_TIMEOUT_MS, socketTimeoutMS=SOCKET_TIMEOUT_MS,
                       tz_aware=True, w=1, journal=True)


def is_ferretdb(build_info: Mapping[str, Any]) -> bool:
    """Whether the server (its ``buildInfo`` answer) is FerretDB, which reports a MongoDB
    version too but adds its own ``ferretdb...`` keys."""
    return any(key.startswith("ferretdb") for key in build_info)


def time_series_supported(build_info: Mapping[str, Any]) -> bool:
    """Whether the server (its ``buildInfo`` answer) can make time-series collections: MongoDB
    5.0 or newer, not FerretDB."""
    if is_ferretdb(build_info):
        return False
    version = build_info.get("versionArray") or [0]
    return int(version[0]) >= 5


@dataclass
class InsertResult:
    """What one :meth:`MongoStore.insert` did. ``rejected``: the entries written as dead-letter
    records instead, with their reasons; ``dead_letters``: how many of each kind
    ("conversion", "encoding", "rejected")."""

    inserted: int = 0
    duplicates: int = 0
    rejected: list[tuple[Entry, str]] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)


def ensure_collections(db: Database[dict[str, Any]]) -> str:
    """Create the sink's collections and, on MongoDB, their indexes when missing. Returns (and
    logs) how the metrics collection was made: "time-series" on MongoDB 5.0+, else "regular"."""
    info = db.client.admin.command("buildInfo")
    ferretdb = is_ferretdb(info)
    existing = set(db.list_collection_names())
    kind = "regular"
    if docs.METRICS not in existing and time_series_supported(info):
        try:
            db.create_collection(docs.METRICS, timeseries={
                "timeField": "at", "metaField": "collection", "granularity": "seconds"})
            kind = "time-series"
        except OperationFailure as exc:
            log.warning("time-series collection refused (%s); using a regular one", exc)
    for name in INDEXES:
        if name not in existing and not (name == docs.METRICS and kind == "time-series"):
            try:
                db.create_collection(name)
            except CollectionInvalid:  # created meanwhile by another sink worker
                pass
        if ferretdb:  # it would never use them (INDEXES)
            continue
        # One index per call, only the missing ones: FerretDB 1.24 drops the connection
        # (a panic) on a createIndexes of several indexes that already exist.
        have = {index["name"] for index in db[name].list_indexes()}
        for index in INDEXES[name]:
            if index.document["name"] not in have:
                db[name].create_indexes([index])
    log.info("MongoDB %s%s at database %r: collections and %s ready; %s is a %s "
             "collection (transactions, anomalies, dlq and aggregates are regular collections, "
             "as they need a unique _id)",
             info.get("version"), " (FerretDB)" if ferretdb else "", db.name,
             "the _id indexes (FerretDB uses no other)" if ferretdb else "indexes",
             docs.METRICS, kind)
    return kind


class MongoStore:
    """The sink's database calls, each retried through an outage."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.db = db
        self._ready: asyncio.Task[str] | None = None
        self._ferretdb: bool | None = None  # known after the first read by ids

    async def ready(self) -> None:
        """Collections and indexes exist (made once, retried while the database is down)."""
        if self._ready is None:
            retry = Retry("collections and indexes")
            self._ready = asyncio.ensure_future(retry.run(lambda: ensure_collections(self.db)))
        await asyncio.shield(self._ready)

    async def insert(self, collection: str, entries: list[Entry]) -> InsertResult:
        """Store ``entries`` (idempotent); poison goes to ``dlq`` as dead-letter records."""
        await self.ready()
        result = InsertResult()
        todo = [e for e in entries if e.doc is not None]
        result.rejected = [(e, e.error) for e in entries if e.doc is None]
        if result.rejected:
            result.dead_letters["conversion"] = len(result.rejected)
        retry = Retry(f"{len(todo)} documents to {collection}")
        for attempt in (1, 2):
            if not todo:
                break
            inserted, duplicates, failed = await retry.run(
                partial(self._insert_many, collection, todo), holding=len(entries))
            result.inserted += inserted
            result.duplicates += duplicates
            todo = [e for e, _, _ in failed]
            if attempt == 1 and failed:  # once more, in case the error was passing
                await asyncio.sleep(RETRY_MIN_SECONDS)
            else:
                result.rejected.extend((e, reason) for e, reason, _ in failed)
                result.dead_letters.update(kind for _, _, kind in failed)
        if result.rejected:
            for entry, reason in result.rejected[:3]:
                log.error("poison message %s:%d:%d skipped to the dlq collection: %s",
                          entry.topic, entry.partition, entry.offset, reason)
            dead = [e.dead_letter(reason) for e, reason in result.rejected]
            await retry.run(lambda: self._insert_dead_letters(dead))
        return result

    def _insert_many(self, collection: str, entries: list[Entry]) -> _Inserted:
        coll = self.db[collection]
        try:
            coll.insert_many([e.doc for e in entries if e.doc is not None], ordered=False)
            return len(entries), 0, []
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise WTimeoutError(str(exc.details["writeConcernErrors"])[:300]) from None
            duplicates, failed = 0, []
            for error in exc.details.get("writeErrors", []):
                if error.get("code") == DUPLICATE_KEY:
                    duplicates += 1
                else:
                    failed.append((entries[error["index"]], str(error.get("errmsg"))[:500],
                                   "rejected"))
            return exc.details.get("nInserted", 0), duplicates, failed
        except ENCODING_ERRORS:
            # Encoding failed in the client for the whole call: find the culprits one by one.
            return self._insert_one_by_one(collection, entries)

    def _insert_one_by_one(self, collection: str, entries: list[Entry]) -> _Inserted:
        coll = self.db[collection]
        inserted, duplicates, failed = 0, 0, []
        for entry in entries:
            try:
                coll.insert_one(entry.doc)  # type: ignore[arg-type]
                inserted += 1
            except DuplicateKeyError:
                duplicates += 1
            except ENCODING_ERRORS as exc:
                failed.append((entry, f"{type(exc).__name__}: {exc}"[:500], "encoding"))
            except WriteError as exc:  # this document's error; a command's error is raised
                failed.append((entry, f"{type(exc).__name__}: {exc}"[:500], "rejected"))
        return inserted, duplicates, failed

    def _insert_dead_letters(self, dead: list[dict[str, Any]]) -> None:
        try:
            self.db[docs.DLQ].insert_many(dead, ordered=False)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise WTimeoutError(str(exc.details["writeConcernErrors"])[:300]) from None
            other = [e for e in exc.details.get("writeErrors", [])
                     if e.get("code") != DUPLICATE_KEY]
            if other:  # text-only records: not expected, and never acked past
                raise DeadLetterWriteError(
                    f"dead-letter records rejected: {str(other)[:500]}") from None

    async def stored_txn(self, ids: list[str]) -> dict[str, Any]:
        """``txn`` (the message's text) of the stored ``transactions`` with these ids: the
        same text means the same message, so the sink tells its own earlier write of it from
        another message's."""
        def read() -> dict[str, Any]:
            return {row["_id"]: row.get("txn")
                    for row in self._find_ids(docs.TRANSACTIONS, ids, {"txn": 1})}
        return await Retry(f"{len(ids)} stored transactions").run(read)

    async def aggregate_docs(self, collection: str, ids: list[str],
                             projection: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The stored aggregate documents of ``collection`` with these ids (the ``projection``
        fields: for the rollups, ``reporting_currency`` and the ``p<n>`` of the partitions
        they need); absent ones are left out."""
        def read() -> dict[str, dict[str, Any]]:
            return {row["_id"]: row for row in self._find_ids(collection, ids, projection)}
        return await Retry(f"{len(ids)} {collection} documents").run(
            read, executor=ROLLUP_WRITER)

    async def write_aggregates(self, writes: list[AggregateWrite]) -> None:
        """Upsert documents by ``_id``, one statement each: ``$set`` the given fields (for the
        aggregates, the plain fields and this process's changed ``p<n>`` fields, whole: absolute
        values, so a rewrite is harmless and other processes' partitions are left alone),
        ``$unset`` the given paths if any."""
        await self.ready()
        updates = [(c, {"q": {"_id": _id},
                        "u": {"$set": fields, **({"$unset": dict.fromkeys(unset, "")}
                                                  if unset else {})},
                        "upsert": True})
                   for c, _id, fields, unset in writes]
        await Retry(f"{len(writes)} aggregate documents").run(
            lambda: self._update_rows(updates), holding=len(writes), executor=ROLLUP_WRITER)

    def _find_ids(self, collection: str, ids: list[str],
                  projection: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The documents with these ``_id``s. FerretDB 1.24 pushes only an ``_id`` equality
        down to SQLite, so a ``$in`` reads the whole collection: there it asks once per id."""
        if self._ferretdb is None:
            self._ferretdb = is_ferretdb(self.db.client.admin.command("buildInfo"))
        coll = self.db[collection]
        if self._ferretdb:
            for _id in ids:
                row = coll.find_one({"_id": _id}, projection)
                if row is not None:
                    yield row
            return
        for start in range(0, len(ids), READ_IDS_PER_QUERY):
            yield from coll.find({"_id": {"$in": ids[start:start + READ_IDS_PER_QUERY]}},
                                 projection)

    def _update_rows(self, updates: list[tuple[str, dict[str, Any]]]) -> None:
        """Raw ``update`` commands, ``UPDATES_PER_COMMAND`` statements each, ordered, with a
        journaled write concern. The raw command, not ``bulk_write``: FerretDB answers an
        upsert that lost a race for a new ``_id`` without ``nModified``, which pymongo's bulk
        API cannot read. Such a duplicate key (two sink processes creating the same document
        at once) means the document exists now: the command is sent again (the writes are absolute,
        so repeating them is harmless)."""
        by_collection: dict[str, list[dict[str, Any]]] = {}
        for collection, update in updates:
            by_collection.setdefault(collection, []).append(update)
        for collection, statements in by_collection.items():
            for start in range(0, len(statements), UPDATES_PER_COMMAND):
                chunk = statements[start:start + UPDATES_PER_COMMAND]
                for attempt in range(5):
                    answer = self.db.command("update", collection, updates=chunk, ordered=True,
                                             writeConcern={"w": 1, "j": True})
                    errors = answer.get("writeErrors") or []
                    if not errors:
                        break
                    if any(e.get("code") != DUPLICATE_KEY for e in errors) or attempt == 4:
                        raise RollupWriteError(f"aggregate update failed: {str(errors)[:300]}")

    async def record_batch(self, collection: str, result: InsertResult, seconds: float,
                           oldest: datetime | None) -> None:
        """One ``sink_batches`` document: what a flush wrote, how long it took, and the lag
        between the oldest event in it and its write. Best effort: never blocks the sink."""
        now = datetime.now(UTC)
        doc = {"at": now, "collection": collection, "inserted": result.inserted,
               "duplicates": result.duplicates, "rejected": len(result.rejected),
               "seconds": round(seconds, 4),
               "lag_seconds": None if oldest is None else (now - oldest).total_seconds()}
        try:
            await asyncio.get_running_loop().run_in_executor(
                WRITER, self.db[docs.METRICS].insert_one, doc)
        except Exception as exc:  # noqa: BLE001 - metrics must never stop the sink
            log.debug("sink_batches record not written: %s", exc)
