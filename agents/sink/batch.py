"""A batch: items and the Kafka events they came from, held until they are written together,
and :class:`Acks`, the events' acknowledgement that travels with the batch.

The sink's agents read with acks off: an event is acked only when its batch's :class:`Acks`
are released, after the items are durably in MongoDB (``writer.py``), or after the rollup rows
that count them are written too (``rollups.py``). Faust commits a partition's offset only up to
its first unacked event, so no offset ever covers an item that is neither stored nor
dead-lettered; a crash loses nothing, since unacked events are read again and the writes are
idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Ack", "Acks", "Batch"]

T = TypeVar("T")

#: Acks Kafka events (Faust events or messages) of the agent that read them.
Ack = Callable[[Sequence[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Acks:
    """The events of one written batch and how to ack them."""

    ack: Ack
    events: Sequence[Any]

    def __len__(self) -> int:
        return len(self.events)

    async def release(self) -> None:
        await self.ack(self.events)


class Batch(Generic[T]):
    """Items and their events (one item per event), full at ``max_size`` events, due when its
    oldest event is ``max_seconds`` old. No I/O: the writer writes :meth:`head` and removes
    what it wrote with :meth:`written`, so a write that fails drops nothing."""

    def __init__(self, max_size: int, max_seconds: float) -> None:
        self.max_size = max_size
        self.max_seconds = max_seconds
        self.items: list[T] = []
        self.events: list[Any] = []
        self.first_at: float | None = None

    def __len__(self) -> int:
        return len(self.events)

    def room(self) -> int:
        """How many more events fit."""
        return self.max_size - len(self.events)

    def extend(self, items: Sequence[T], events: Sequence[Any]) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.items.extend(items)
        self.events.extend(events)

    def full(self) -> bool:
        return len(self.events) >= self.max_size

    def due(self) -> bool:
        return self.first_at is not None and \
            time.monotonic() - self.first_at >= self.max_seconds

    def head(self) -> tuple[list[T], list[Any]]:
        """Copies of the items and events held, to write. They stay held until
        :meth:`written` removes them: if the write fails, the batch still holds them."""
        return list(self.items), list(self.events)

    def written(self, n: int, started: float) -> None:
        """The first ``n`` items (a :meth:`head` taken at ``started``, a ``time.monotonic()``)
        are written: they leave the batch. Items added during the write stay, counted as old
        as the write."""
        del self.items[:n]
        del self.events[:n]
        self.first_at = started if self.events else None
