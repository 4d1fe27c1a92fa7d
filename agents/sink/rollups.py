"""The aggregates the sink keeps (``aggregates.py``: ``merchant_days``, ``merchant_hours``,
``volume_hours``, ``currency_days``, ``currency_hours``, ``users_by_day``), counted from the
transactions it stored. A step after the ``transactions`` insert (:meth:`Rollups.add` is that
writer's ``after_write``): it takes the stored batch's items and its acks, and releases the acks
only after the aggregate documents that count those items are written.

Each document holds one **packed** field per partition of ``transactions_enriched``,
``p<partition>``: the JSON text ``[offset, {key: [a, b, c(, label)]}]``, where ``offset`` is the
source offset of the last transaction of that partition folded into the document. A transaction
whose offset is not above its document's partition offset is already in it, so a message read
again (a redelivery after a crash, a replay of the topic) is never counted twice. A partition is
read by one sink process at a time, so each ``p<n>`` field has one writer, which rewrites it
whole (``$set``, upsert): a repeated write is harmless, and two processes writing different
partitions of the same document never overwrite each other. Packed, because FerretDB's cost is
per stored value: one text per partition instead of a value per number makes a document of
1,000 merchants one cheap read and one cheap update.

Only the transactions whose document is this message's are counted (a duplicate ``txn_id``
another message stored is not), so the aggregates count exactly the ``transactions``
collection. Lag between a transaction and its aggregates: its insert batch plus the pause
(:func:`pause_after`) plus one write (docs/sink.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agents.sink import metrics
from agents.sink.aggregates import (
    MAX_REPORTING_AMOUNT,
    Countable,
    Packed,
    pack,
    packed,
    slots,
)
from agents.sink.aggregates import countable as _countable
from agents.sink.batch import Acks
from agents.sink.documents import Entry
from agents.sink.mongo import AggregateWrite, InsertResult, MongoStore
from app.settings import settings

__all__ = ["CACHE_MINUTES", "FLUSH_EVENTS", "FLUSH_SECONDS", "MAX_REPORTING_AMOUNT",
           "WRITE_SHARE", "Change", "Countable", "Packed", "RollupState", "Rollups", "countable",
           "pause_after"]

#: Documents whose hour or day ended this long before the newest minute seen leave the memory
#: (they are read back from MongoDB if a late transaction touches them again).
CACHE_MINUTES = 30
#: Aggregates are written FLUSH_SECONDS after the previous write ended: each write updates
#: every document changed since the last one once, whatever the number of transactions, so a
#: slow write just makes the next one cover more events.
FLUSH_SECONDS = 5.0
#: Past this many held events the inserts wait for an aggregate write (bounds the memory).
FLUSH_EVENTS = 50 * settings.sink_batch_size
#: At most this share of the time goes to aggregate writes, so that under load they leave the
#: database to the inserts (an upsert costs FerretDB far more than an insert).
WRITE_SHARE = 0.2


def pause_after(write_seconds: float) -> float:
    """Seconds from the end of an aggregate write to the start of the next one."""
    return max(FLUSH_SECONDS, write_seconds * (1 / WRITE_SHARE - 1))


def countable(doc: Mapping[str, Any], partition: int, offset: int) -> Countable | None:
    """What a stored ``transactions`` document adds (None: stored but not counted), in this
    sink's ``REPORTING_CURRENCY`` (``aggregates.countable``)."""
    return _countable(doc, partition, offset, settings.reporting_currency)


_Doc = tuple[str, str]  # (collection, _id)
_Key = tuple[str, str, int]  # (collection, _id, partition)


@dataclass
class Change:
    """What one write does to one document: ``$set`` of its plain ``fields`` and of the
    changed ``parts`` (partition: its numbers), each packed whole into its ``p<n>`` field."""

    ends: datetime  # the end of the document's time bucket
    fields: dict[str, Any] = field(default_factory=dict)
    parts: dict[int, Packed] = field(default_factory=dict)

    def update(self) -> dict[str, Any]:
        """The ``$set`` of the document's write."""
        return {**self.fields, **{f"p{n}": pack(part) for n, part in sorted(self.parts.items())}}


class RollupState:
    """The partitions of the documents this process knows (a cache of MongoDB's; MongoDB is
    the durable copy). Pure: no I/O."""

    def __init__(self) -> None:
        self.parts: dict[_Key, Packed] = {}
        self.ends: dict[_Doc, datetime] = {}
        self.newest: datetime | None = None

    def missing(self, items: Iterable[Countable]) -> dict[_Doc, dict[int, datetime]]:
        """The (collection, _id, partition) ``items`` touch that the cache lacks: per
        document, its partitions, each with the end of the document's time bucket."""
        wanted: dict[_Doc, dict[int, datetime]] = {}
        for item in items:
            for slot in slots(item):
                if (slot.collection, slot.id, item.partition) not in self.parts:
                    wanted.setdefault((slot.collection, slot.id), {})[item.partition] = \
                        slot.ends
        return wanted

    def load(self, doc: _Doc, partitions: Mapping[int, datetime],
             stored: Mapping[str, Any] | None) -> None:
        """Put the ``partitions`` of a document read from MongoDB (None: no such document
        yet) into the cache; a partition the document lacks counted nothing yet."""
        found = packed(stored)
        for partition, ends in partitions.items():
            self.parts[(*doc, partition)] = found.get(partition, Packed())
            self.ends[doc] = ends

    def apply(self, items: Iterable[Countable]) -> dict[_Doc, Change]:
        """Fold ``items`` (in offset order per partition) into copies of their documents'
        partitions; returns the changed documents, for the caller to write and then
        :meth:`commit`. Every partition touched must be in the cache (:meth:`missing`,
        :meth:`load`)."""
        copies: dict[_Key, Packed] = {}
        changed: dict[_Doc, Change] = {}
        for item in items:
            for slot in slots(item):
                key = (slot.collection, slot.id, item.partition)
                part = copies.get(key)
                if part is None:
                    cached = self.parts.get(key)
                    part = copies[key] = Packed() if cached is None else cached.copy()
                if part.fold(slot, item.offset):
                    change = changed.get(key[:2])
                    if change is None:
                        change = changed[key[:2]] = Change(ends=slot.ends)
                    change.parts[item.partition] = part
                    change.fields.update(slot.fields)
            if self.newest is None or item.minute > self.newest:
                self.newest = item.minute
        return changed

    def commit(self, changed: Mapping[_Doc, Change]) -> None:
        """The changed documents were written: keep their partitions, forget the documents
        long behind."""
        for doc, change in changed.items():
            for partition, part in change.parts.items():
                self.parts[(*doc, partition)] = part
            self.ends[doc] = change.ends
        if self.newest is not None and self.newest.year > 1:
            oldest = self.newest - timedelta(minutes=CACHE_MINUTES)
            gone = {doc for doc, ends in self.ends.items() if ends < oldest}
            if gone:
                for doc in gone:
                    del self.ends[doc]
                for key in [k for k in self.parts if k[:2] in gone]:
                    del self.parts[key]

    def forget(self) -> None:
        """Drop every cached partition (after a rebalance another process may have written
        some)."""
        self.parts.clear()
        self.ends.clear()


def _shared() -> bool:
    return False


class Rollups:
    """The rollup step of one sink process: holds the stored items and their batches' acks,
    and on :meth:`flush` writes the changed aggregate documents, then releases the acks."""

    def __init__(self, store: MongoStore, exclusive: Callable[[], bool] = _shared,
                 flush_events: int = FLUSH_EVENTS) -> None:
        """``exclusive``: whether this process reads every partition of the enriched topic
        (kept for the callers; it changes nothing now)."""
        self.store = store
        self.exclusive = exclusive
        self.flush_events = flush_events
        self.state = RollupState()
        self.items: list[Countable] = []
        self.acks: list[Acks] = []
        self.held = 0  # events in ``acks``
        self._lock = asyncio.Lock()

    async def add(self, entries: list[Entry], result: InsertResult, acks: Acks) -> None:
        """A batch just stored: its items are counted at the next flush, its events acked
        after it (the caller waits for that flush when too many events are held)."""
        # Read first, then append: a flush during the read swaps ``self.items`` for a new
        # list, and items appended to the list it took would never be counted.
        items = await self.stored_here(entries, result)
        self.items.extend(items)
        self.acks.append(acks)
        self.held += len(acks)
        if self.held >= self.flush_events:
            await self.flush()

    async def stored_here(self, entries: Sequence[Entry],
                          result: InsertResult) -> list[Countable]:
        """The items of the entries whose ``transactions`` document is theirs: inserted now,
        or by an earlier read of the same message (the same ``txn`` text)."""
        rejected = {id(e) for e, _ in result.rejected}
        kept = [(e, e.doc) for e in entries if e.doc is not None and id(e) not in rejected]
        if result.duplicates:
            stored = await self.store.stored_txn([doc["_id"] for _, doc in kept])
            kept = [(e, doc) for e, doc in kept
                    if doc.get("txn") is not None and stored.get(doc["_id"]) == doc["txn"]]
        items = (countable(e.fields or doc, e.partition, e.offset) for e, doc in kept)
        return [item for item in items if item is not None]

    async def flush(self) -> None:
        """Write the held items' aggregates, then release the held acks."""
        async with self._lock:
            items, acks = self.items, self.acks
            self.items, self.acks, self.held = [], [], 0
            try:
                if items:
                    await self.write(items, self.exclusive())
            except BaseException:
                # Not written (a data error; outages are retried inside): keep everything
                # held, so nothing is acked past it and a later flush tries again.
                self.items[:0] = items
                self.acks[:0] = acks
                self.held += sum(len(a) for a in acks)
                raise
            for batch in acks:
                await batch.release()

    async def write(self, items: list[Countable], exclusive: bool = False) -> None:
        """Fold ``items`` into their documents' partitions and write the changed documents:
        one upsert per document, ``$set`` of its plain fields and its changed ``p<n>`` fields
        whole. (``exclusive`` changes nothing: each partition of a document has one writer
        whatever the number of processes.)"""
        missing = self.state.missing(items)
        by_collection: dict[str, dict[str, dict[int, datetime]]] = {}
        for (collection, _id), partitions in missing.items():
            by_collection.setdefault(collection, {})[_id] = partitions
        for collection, docs in by_collection.items():
            projection = {"reporting_currency": 1, **{
                f"p{n}": 1 for partitions in docs.values() for n in sorted(partitions)}}
            stored = await self.store.aggregate_docs(collection, list(docs), projection)
            for _id, partitions in docs.items():
                self.state.load((collection, _id), partitions, stored.get(_id))
        changed = self.state.apply(items)
        writes: list[AggregateWrite] = [(c, _id, change.update(), [])
                                        for (c, _id), change in changed.items()]
        started = time.monotonic()
        if writes:  # nothing new (a redelivery): nothing to write
            await self.store.write_aggregates(writes)
        written: dict[str, int] = {}
        for c, *_ in writes:
            written[c] = written.get(c, 0) + 1
        metrics.rollup_written(written, time.monotonic() - started)
        self.state.commit(changed)

    async def flush_forever(self) -> None:
        """Flush at the rollups' pace: :data:`FLUSH_SECONDS` after the previous write ended,
        longer when writes get slow (:func:`pause_after`)."""
        took = 0.0
        while True:
            await asyncio.sleep(pause_after(took))
            started = time.monotonic()
            await self.flush()
            took = time.monotonic() - started

    def forget(self, revoked: Collection[int]) -> None:
        """After a rebalance: read every document again (another process may have written some),
        and drop the items of the ``revoked`` partitions (Faust commits nothing for a partition
        it revoked; the partition's next reader counts them)."""
        if revoked:
            self.items = [i for i in self.items if i.partition not in revoked]
        self.state.forget()
