"""``agents.sink.batch``: what a batch holds, when it is full or due, and its acks."""

from __future__ import annotations

import time

from agents.sink.batch import Acks, Batch


def test_a_batch_is_full_at_max_size_and_take_empties_it() -> None:
    batch: Batch[int] = Batch(max_size=3, max_seconds=60)
    assert not batch and batch.room() == 3 and not batch.due()
    batch.extend([1, 2], ["e1", "e2"])
    assert len(batch) == 2 and batch.room() == 1 and not batch.full()
    batch.extend([3], ["e3"])
    assert batch.full()
    assert batch.take() == ([1, 2, 3], ["e1", "e2", "e3"])
    assert not batch and batch.first_at is None and batch.room() == 3


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
