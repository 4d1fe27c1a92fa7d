"""One collection's sink: :meth:`MongoSink.add` holds documents with the Kafka events they came
from, :meth:`MongoSink.flush` writes them to MongoDB and only then hands the batch's
:class:`~agents.sink.batch.Acks` to the next step (``after_write``): by default they are
released at once; for ``transactions`` the rollups take them and release them after their own
write (``rollups.py``). If the write raises, the events stay unacked.

A batch is flushed when it holds ``max_size`` events (by the agent, which waits meanwhile) or
when its oldest event is ``max_seconds`` old (by a timer calling :meth:`MongoSink.flush_if_due`).
While a write waits for the database the agent waits too, so at most about two batches are held
in memory, and Faust pauses fetching once its own buffers are full.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from agents.sink import metrics
from agents.sink.batch import Ack, Acks, Batch
from agents.sink.documents import Entry
from agents.sink.mongo import InsertResult

__all__ = ["AfterWrite", "MongoSink", "Store", "release"]


class Store(Protocol):
    """The database calls a :class:`MongoSink` makes (:class:`~agents.sink.mongo.MongoStore`)."""

    async def insert(self, collection: str, entries: list[Entry]) -> InsertResult: ...

    async def record_batch(self, collection: str, result: InsertResult, seconds: float,
                           oldest: datetime | None) -> None: ...


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
    """Batches of one collection, written then passed on with their acks."""

    def __init__(self, store: Store, collection: str, ack: Ack, *, max_size: int,
                 max_seconds: float, after_write: AfterWrite = release) -> None:
        self.store = store
        self.collection = collection
        self.ack = ack
        self.after_write = after_write
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
            self.batch.written(len(entries), started)
            seconds = time.monotonic() - started
            metrics.batch_written(self.collection, result, seconds)
            await self.store.record_batch(self.collection, result, seconds, _oldest(entries))
            await self.after_write(entries, result, Acks(self.ack, events))
