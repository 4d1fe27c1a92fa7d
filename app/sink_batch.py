"""A batch of items and the Kafka events they came from, written and then acked together.

The sink's agents read with acks off (``stream.noack()``): an event is acked only by
:meth:`Batch.flush`, after ``write`` returned, i.e. after the items are durably in MongoDB. Faust
commits a partition's offset only up to its first unacked event, so no offset ever covers an
item that is not written. A crash loses nothing: unacked events are read again, and the writes
are idempotent.

A batch is flushed when it holds ``max_size`` events (by the agent, which waits meanwhile) or
when its oldest event is ``max_seconds`` old (by a timer calling :meth:`flush_if_due`). While a
write waits for the database, the agent waits too, so at most about ``2 * max_size`` events are
held in memory, and Faust pauses fetching once its own buffers are full.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["Batch"]

T = TypeVar("T")


class Batch(Generic[T]):
    def __init__(self, name: str, write: Callable[[list[T]], Awaitable[Any]],
                 ack: Callable[[Sequence[Any]], Awaitable[Any]], max_size: int,
                 max_seconds: float) -> None:
        self.name = name
        self.write = write
        self.ack = ack
        self.max_size = max_size
        self.max_seconds = max_seconds
        self.items: list[T] = []
        self.events: list[Any] = []
        self.first_at: float | None = None
        self.flushed = 0
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self.events)

    async def add(self, item: T | None, event: Any) -> None:
        """Hold ``item`` (None: nothing to write, only ack ``event`` with the batch)."""
        if self.first_at is None:
            self.first_at = time.monotonic()
        if item is not None:
            self.items.append(item)
        self.events.append(event)
        if len(self.events) >= self.max_size:
            await self.flush()

    async def add_many(self, items: Sequence[T], events: Sequence[Any]) -> None:
        """Hold ``items`` and their ``events`` (the same length: one item per event), flushing
        every ``max_size`` events."""
        start = 0
        while start < len(events):
            if self.first_at is None:
                self.first_at = time.monotonic()
            end = start + self.max_size - len(self.events)
            self.items.extend(items[start:end])
            self.events.extend(events[start:end])
            start = end
            if len(self.events) >= self.max_size:
                await self.flush()

    def due(self) -> bool:
        return self.first_at is not None and \
            time.monotonic() - self.first_at >= self.max_seconds

    async def flush_if_due(self) -> None:
        if self.due():
            await self.flush()

    async def flush(self) -> None:
        """Write the held items, then ack their events. If the write raises, the events stay
        unacked (their offsets are never committed; they are read again after a restart)."""
        async with self._lock:
            if not self.events:
                return
            items, events = self.items, self.events
            self.items, self.events, self.first_at = [], [], None
            await self.write(items)
            await self.ack(events)
            self.flushed += len(events)
