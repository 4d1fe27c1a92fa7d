"""The aggregates the sink keeps (``aggregates.py``: ``user_days``, ``merchant_days``,
``merchant_hours``, ``volume_hours``, ``currency_days``, ``currency_hours``), counted from the
transactions it stored. A step after the ``transactions`` insert (:meth:`Rollups.add` is that
writer's ``after_write``): it takes the stored batch's items and its acks, and releases the acks
only after the aggregate documents that count those items are written.

Each document is made of **parts**, one per partition of ``transactions_enriched``:
``[a, b, c, offset]``, where ``offset`` is the source offset of the last transaction of that
partition folded into the part. A transaction whose offset is not above its part's offset is
already in it, so a message read again (a redelivery after a crash, a replay of the topic) is
never counted twice. A partition is read by one sink process at a time, so each part has one
writer, which writes it as an absolute value (``$set`` of its dotted path): a repeated write is
harmless, and two processes writing parts of the same document never overwrite each other.

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
from datetime import date, datetime, timedelta
from typing import Any

from agents.sink import metrics
from agents.sink.aggregates import (
    EMPTY_OFFSET,
    MAX_REPORTING_AMOUNT,
    USER_DAYS,
    Countable,
    Part,
    as_part,
    at_path,
    fold,
    slots,
)
from agents.sink.aggregates import countable as _countable
from agents.sink.batch import Acks
from agents.sink.documents import Entry
from agents.sink.mongo import AggregateWrite, InsertResult, MongoStore
from app.settings import settings

__all__ = ["CACHE_MINUTES", "FLUSH_EVENTS", "FLUSH_SECONDS", "MAX_REPORTING_AMOUNT",
           "WRITE_SHARE", "Change", "Countable", "Part", "RollupState", "Rollups", "countable",
           "pause_after"]

#: Parts whose hour or day ended this long before the newest minute seen leave the memory
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
_Key = tuple[str, str, str]  # (collection, _id, dotted path of a part)


@dataclass
class Change:
    """What one write does to one document: ``$set`` of ``labels`` and the changed ``parts``
    (dotted paths), ``$unset`` of ``unset`` (days of ``user_days`` past the retention)."""

    labels: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, Part] = field(default_factory=dict)
    unset: set[str] = field(default_factory=set)
    ends: dict[str, datetime] = field(default_factory=dict)

    def update(self) -> tuple[dict[str, Any], list[str]]:
        """The ``$set`` and ``$unset`` paths."""
        return {**self.labels, **self.parts}, sorted(self.unset - set(self.parts))


def _stale_days(stored: Any, wanted: Iterable[str], keep_days: int) -> set[str]:
    """The ``days.<day>`` paths of a stored ``user_days`` map older than ``keep_days`` before
    its newest day (stored or about to be written)."""
    days = [d for d in stored if isinstance(d, str)] if isinstance(stored, Mapping) else []
    newest = max([*days, *(p.removeprefix("days.") for p in wanted)], default=None)
    if newest is None:
        return set()
    try:
        cutoff = (date.fromisoformat(newest) - timedelta(days=keep_days)).isoformat()
    except (ValueError, OverflowError):
        return set()
    return {f"days.{d}" for d in days if d < cutoff}


class RollupState:
    """The parts this process knows (a cache of MongoDB's; MongoDB is the durable copy). Pure:
    no I/O."""

    def __init__(self, keep_days: int | None = None) -> None:
        self.parts: dict[_Key, Part] = {}
        self.ends: dict[_Key, datetime] = {}
        self.stale: dict[_Doc, set[str]] = {}  # user_days days to drop at the next write
        self.newest: datetime | None = None
        self.keep_days = settings.aggregate_retention_days if keep_days is None else keep_days

    def missing(self, items: Iterable[Countable]) -> dict[_Doc, dict[str, datetime]]:
        """The parts (per document: path and the end of its bucket) ``items`` touch that the
        cache lacks."""
        wanted: dict[_Doc, dict[str, datetime]] = {}
        for item in items:
            for slot in slots(item):
                if (slot.collection, slot.id, slot.path) not in self.parts:
                    wanted.setdefault((slot.collection, slot.id), {})[slot.path] = slot.ends
        return wanted

    def load(self, doc: _Doc, paths: Mapping[str, datetime],
             stored: Mapping[str, Any] | None) -> None:
        """Put the ``paths`` of a document read from MongoDB (None: no such document yet)
        into the cache. For ``user_days`` (read whole), note the days past the retention."""
        for path, ends in paths.items():
            key = (*doc, path)
            self.parts[key] = as_part(at_path(stored, path))
            self.ends[key] = ends
        if doc[0] == USER_DAYS and stored is not None:
            stale = _stale_days(stored.get("days"), paths, self.keep_days)
            if stale:
                self.stale[doc] = stale

    def apply(self, items: Iterable[Countable]) -> dict[_Doc, Change]:
        """Fold ``items`` (in partition order) into copies of their parts; returns the changed
        documents, for the caller to write and then :meth:`commit`. Every part touched must be
        in the cache (:meth:`missing`, :meth:`load`)."""
        copies: dict[_Key, Part] = {}
        changed: dict[_Doc, Change] = {}
        for item in items:
            for slot in slots(item):
                key = (slot.collection, slot.id, slot.path)
                part = copies.get(key)
                if part is None:
                    part = copies[key] = list(self.parts.get(key, [0, 0, 0, EMPTY_OFFSET]))
                if fold(part, slot.add, item.offset):
                    change = changed.setdefault((slot.collection, slot.id), Change())
                    change.parts[slot.path] = part
                    change.labels.update(slot.labels)
                    change.ends[slot.path] = slot.ends
            if self.newest is None or item.minute > self.newest:
                self.newest = item.minute
        for doc, change in changed.items():
            change.unset = set(self.stale.get(doc, ()))
        return changed

    def commit(self, changed: Mapping[_Doc, Change]) -> None:
        """The changed documents were written: keep their parts, forget parts long behind."""
        for doc, change in changed.items():
            for path, part in change.parts.items():
                self.parts[(*doc, path)] = part
                self.ends[(*doc, path)] = change.ends[path]
            self.stale.pop(doc, None)
        if self.newest is not None and self.newest.year > 1:
            oldest = self.newest - timedelta(minutes=CACHE_MINUTES)
            for key in [k for k, ends in self.ends.items() if ends < oldest]:
                del self.parts[key], self.ends[key]

    def forget(self) -> None:
        """Drop every cached part (after a rebalance another process may have written some)."""
        self.parts.clear()
        self.ends.clear()
        self.stale.clear()


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
        """Fold ``items`` into their parts and write the changed documents (absolute values).
        (``exclusive`` changes nothing: each part has one writer whatever the number of
        processes.)"""
        missing = self.state.missing(items)
        by_collection: dict[str, dict[str, dict[str, datetime]]] = {}
        for (collection, _id), paths in missing.items():
            by_collection.setdefault(collection, {})[_id] = paths
        for collection, docs in by_collection.items():
            # user_days is read whole (its days are checked against the retention)
            projection = {"days": 1} if collection == USER_DAYS else {
                path: 1 for paths in docs.values() for path in paths}
            stored = await self.store.aggregate_docs(collection, list(docs), projection)
            for _id, paths in docs.items():
                self.state.load((collection, _id), paths, stored.get(_id))
        changed = self.state.apply(items)
        writes: list[AggregateWrite] = [(c, _id, *change.update())
                                        for (c, _id), change in changed.items()]
        started = time.monotonic()
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
        """After a rebalance: read every part again (another process may have written some),
        and drop the items of the ``revoked`` partitions (Faust commits nothing for a partition
        it revoked; the partition's next reader counts them)."""
        if revoked:
            self.items = [i for i in self.items if i.partition not in revoked]
        self.state.forget()
