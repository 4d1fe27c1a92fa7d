"""``agents.sink.writer``: a batch is written at its size or age, and its events are acked only
after the write (or handed, unacked, to the step after it)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from agents.sink.batch import Acks
from agents.sink.documents import Entry
from agents.sink.mongo import InsertResult
from agents.sink.writer import MongoSink


def entries(offsets: Sequence[int]) -> list[Entry]:
    return [Entry({"_id": str(o)}, b"{}", "t", 0, o) for o in offsets]


class Store:
    """A database that records what was written, and the acks, checking the order."""

    def __init__(self) -> None:
        self.written: list[list[int]] = []
        self.acked: list[int] = []
        self.records: list[tuple[str, int]] = []
        self.fail = 0

    async def insert(self, collection: str, batch: list[Entry]) -> InsertResult:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("database broken")
        self.written.append([e.offset for e in batch])
        return InsertResult(inserted=len(batch))

    async def record_batch(self, collection: str, result: InsertResult, seconds: float,
                           oldest: datetime | None) -> None:
        self.records.append((collection, result.inserted))

    async def ack(self, events: Sequence[Any]) -> None:
        assert sum(map(len, self.written)) >= len(self.acked) + len(events)
        self.acked.extend(events)


def sink(store: Store, max_size: int, max_seconds: float = 60, **kwargs: Any) -> MongoSink:
    return MongoSink(store, "t", store.ack, max_size=max_size, max_seconds=max_seconds,
                     **kwargs)


async def test_flushes_at_size_and_acks_after_the_write() -> None:
    store = Store()
    writer = sink(store, max_size=3)
    for i in range(7):
        await writer.add(entries([i]), [i])
    assert store.written == [[0, 1, 2], [3, 4, 5]] and store.acked == [0, 1, 2, 3, 4, 5]
    assert len(writer) == 1 and not writer.batch.due()
    await writer.flush()
    assert store.acked == list(range(7)) and store.records == [("t", 3), ("t", 3), ("t", 1)]


async def test_time_bound() -> None:
    store = Store()
    writer = sink(store, max_size=100, max_seconds=0.05)
    await writer.add(entries([5]), [5])
    await writer.flush_if_due()
    assert store.acked == []
    await asyncio.sleep(0.06)
    await writer.flush_if_due()
    assert store.written == [[5]] and store.acked == [5]


async def test_a_failed_write_acks_nothing() -> None:
    store = Store()
    store.fail = 1
    writer = sink(store, max_size=2)
    await writer.add(entries([1]), [1])
    with pytest.raises(RuntimeError):
        await writer.add(entries([2]), [2])
    assert store.acked == []


async def test_a_non_transient_failure_keeps_the_batch() -> None:
    """The batch used to empty its lists before the write: an OperationFailure from
    insert_many dropped it. Now it holds every entry until the write returned."""

    class Refusing(Store):
        async def insert(self, collection: str, batch: list[Entry]) -> InsertResult:
            if self.fail:
                self.fail -= 1
                raise OperationFailure("not authorized on txn_analytics", code=13)
            return await super().insert(collection, batch)

    store = Refusing()
    store.fail = 1
    writer = sink(store, max_size=3)
    with pytest.raises(OperationFailure):
        await writer.add(entries([1, 2, 3]), [1, 2, 3])
    assert [e.offset for e in writer.batch.items] == [1, 2, 3] and writer.batch.events == [1, 2, 3]
    assert store.acked == [] and store.written == [] and store.records == []
    await writer.flush()  # (the process exits instead; this shows nothing was dropped)
    assert store.written == [[1, 2, 3]] and store.acked == [1, 2, 3] and not writer.batch


async def test_add_flushes_every_max_size_events() -> None:
    store = Store()
    writer = sink(store, max_size=4)
    await writer.add(entries([1, 2, 3]), [1, 2, 3])
    await writer.add(entries(range(4, 12)), list(range(4, 12)))
    assert store.written == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert store.acked == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [e.offset for e in writer.batch.items] == [9, 10, 11] and len(writer) == 3


async def test_the_step_after_the_write_owns_the_acks() -> None:
    store = Store()
    handed: list[tuple[list[int], int, Acks]] = []

    async def after_write(batch: list[Entry], result: InsertResult, acks: Acks) -> None:
        handed.append(([e.offset for e in batch], result.inserted, acks))

    writer = sink(store, max_size=2, after_write=after_write)
    await writer.add(entries([1, 2]), ["e1", "e2"])
    assert store.written == [[1, 2]] and store.acked == []
    [(offsets, inserted, acks)] = handed
    assert (offsets, inserted, list(acks.events)) == ([1, 2], 2, ["e1", "e2"])
    await acks.release()
    assert store.acked == ["e1", "e2"]
