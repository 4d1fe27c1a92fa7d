"""One collection's sink: :meth:`MongoSink.add` holds documents with the Kafka events they came
from, :meth:`MongoSink.flush` writes them to MongoDB and only then hands the batch's
:class:`~agents.sink.batch.Acks` to the next step (``after_write``): by default they are
released at once; for ``transactions`` the rollups take them and release them after their own
write (``rollups.py``). Between the two, the stored ids are listed for ``txn prune`` under the
hour of their event time (:class:`~agents.sink.manifests.Manifests`): that listing is part of
the durable write. If the write or the listing raises, the events stay unacked.

A batch is flushed when it holds ``max_size`` events (by the agent, which waits meanwhile) or
when its oldest event is ``max_seconds`` old (by a timer calling :meth:`MongoSink.flush_if_due`).
While a write waits for the database the agent waits too, so at most about two batches are held
in memory, and Faust pauses fetching once its own buffers are full.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from agents.sink import metrics
from agents.sink.batch import Ack, Acks, Batch
from agents.sink.documents import Entry
from agents.sink.manifests import Manifests
from agents.sink.mongo import InsertResult, MongoStore

__all__ = ["AfterWrite", "Lister", "MongoSink", "Store", "release"]


class Store(Protocol):
    """The database calls a :class:`MongoSink` makes (:class:`~agents.sink.mongo.MongoStore`)."""

    async def insert(self, collection: str, entries: list[Entry]) -> InsertResult: ...

    async def record_batch(self, collection: str, result: InsertResult, seconds: float,
                           oldest: datetime | None) -> None: ...


class Lister(Protocol):
    """Lists a stored batch for the retention (:class:`~agents.sink.manifests.Manifests`)."""

    async def record(self, collection: str, entries: list[Entry], result: InsertResult,
                     now: datetime | None = None) -> None: ...


class AfterWrite(Protocol):
    """What happens once a batch is durably written; it owns the batch's acks from then on."""

    async def __call__(self, entries: list[Entry], result: InsertResult, acks: Acks) -> None: ...


async def release(entries: list[Entry], result: InsertResult, acks: Acks) -> None:
    """The default step after a write: ack the batch's events now."""
    await acks.release()


def _oldest(entries: Sequence[Entry]) -> datetime | None:
    dates = [e.doc["timestamp"] for e in entries
             if e.doc is not None and isinstance(e.doc.get("timestamp"), datetime)]
    return min(dates) if dates else None


class MongoSink:
    """Batches of one collection, written (and listed) then passed on with their acks.
    ``lister``: by default, a :class:`~agents.sink.manifests.Manifests` of a
    :class:`~agents.sink.mongo.MongoStore`'s database (none for another store)."""

    def __init__(self, store: Store, collection: str, ack: Ack, *, max_size: int,
                 max_seconds: float, after_write: AfterWrite = release,
                 lister: Lister | None = None) -> None:
        self.store = store
        self.collection = collection
        self.ack = ack
        self.after_write = after_write
        if lister is None and isinstance(store, MongoStore):
            lister = Manifests(store.db)
        self.lister = lister
        self.batch: Batch[Entry] = Batch(max_size, max_seconds)
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self.batch)

    async def add(self, entries: Sequence[Entry], events: Sequence[Any]) -> None:
        """Hold ``entries`` and their ``events`` (one entry per event), flushing every
        ``max_size`` events."""
        start = 0
        while start < len(events):
            end = start + self.batch.room()
            self.batch.extend(entries[start:end], events[start:end])
            start = end
            if self.batch.full():
                await self.flush()

    async def flush_if_due(self) -> None:
        if self.batch.due():
            await self.flush()

    async def flush(self) -> None:
        """Write the held entries, then hand their events' acks to ``after_write``. The batch
        holds them until the write returned: when it raises (an error that is not an outage:
        the process then exits, ``crash.py``), nothing is dropped and nothing acked."""
        async with self._lock:
            if not self.batch:
                return
            entries, events = self.batch.head()
            started = time.monotonic()
            result = await self.store.insert(self.collection, entries)
            if self.lister is not None:
                await self.lister.record(self.collection, entries, result)
            self.batch.written(len(entries), started)
            seconds = time.monotonic() - started
            metrics.batch_written(self.collection, result, seconds)
            oldest = _oldest(entries)
            if oldest is not None:
                metrics.event_lag(self.collection,
                                  (datetime.now(UTC) - oldest).total_seconds())
            await self.store.record_batch(self.collection, result, seconds, oldest)
            await self.after_write(entries, result, Acks(self.ack, events))
