"""``agents.sink.batch``: what a batch holds, when it is full or due, and its acks."""

from __future__ import annotations

import time

from agents.sink.batch import Acks, Batch


def test_a_batch_is_full_at_max_size_and_empty_once_written() -> None:
    batch: Batch[int] = Batch(max_size=3, max_seconds=60)
    assert not batch and batch.room() == 3 and not batch.due()
    batch.extend([1, 2], ["e1", "e2"])
    assert len(batch) == 2 and batch.room() == 1 and not batch.full()
    batch.extend([3], ["e3"])
    assert batch.full()
    assert batch.head() == ([1, 2, 3], ["e1", "e2", "e3"])
    assert len(batch) == 3  # held until written: a failed write drops nothing
    batch.written(3, time.monotonic())
    assert not batch and batch.first_at is None and batch.room() == 3


def test_what_came_during_a_write_stays_held() -> None:
    batch: Batch[int] = Batch(max_size=10, max_seconds=60)
    batch.extend([1, 2], ["e1", "e2"])
    items, events = batch.head()
    started = time.monotonic()
    batch.extend([3], ["e3"])  # during the write
    batch.written(len(items), started)
    assert (batch.items, batch.events, batch.first_at) == ([3], ["e3"], started)


def test_a_batch_is_due_when_its_oldest_event_is_old_enough() -> None:
    batch: Batch[int] = Batch(max_size=100, max_seconds=0.05)
    batch.extend([1], [1])
    first = batch.first_at
    time.sleep(0.03)
    batch.extend([2], [2])
    assert batch.first_at == first and not batch.due()
    time.sleep(0.03)
    assert batch.due()


async def test_acks_release_their_events() -> None:
    acked: list[object] = []

    async def ack(events: object) -> None:
        acked.extend(events)

    acks = Acks(ack, ["e1", "e2"])
    assert len(acks) == 2 and not acked
    await acks.release()
    assert acked == ["e1", "e2"]
