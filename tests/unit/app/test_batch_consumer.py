"""The worker's consumer keeps Faust's offset bookkeeping able to commit across its seek to
the committed offsets (no broker: the seek's answer is given)."""

from __future__ import annotations

from faust.types import TP

from agents import processor  # installs the worker's transport
from app.faust_internals.batch_consumer import BatchConsumer
from app.main import app

TPS = (TP(processor.TRANSACTIONS, 0), TP(processor.TRANSACTIONS, 1))


def consumer(read: dict[TP, int | None]) -> BatchConsumer:
    """The worker's consumer, whose seek reads ``read`` as the broker's committed offsets."""
    made = app.transport.create_consumer(callback=lambda message: None,
                                         on_partitions_revoked=lambda revoked: None,
                                         on_partitions_assigned=lambda assigned: None)
    assert isinstance(made, BatchConsumer)

    async def seek_to_committed() -> dict[TP, int | None]:
        return read

    made.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    return made


def ack(c: BatchConsumer, tp: TP, offsets: range) -> None:
    for offset in offsets:
        c._acked[tp].append(offset)
        c._acked_index[tp].add(offset)


async def test_a_commit_that_landed_during_the_seek_is_not_set_back() -> None:
    """Records fetched just before the seek were committed up to 18,846 while it read 14,132
    (the stall seen in CI: Faust's seek set 14,132 and never committed again)."""
    tp = TPS[0]
    c = consumer({tp: 14_132})
    c._committed_offset[tp] = 18_846
    ack(c, tp, range(18_846, 18_986))  # processed after that commit
    await c.perform_seek()
    assert c._committed_offset[tp] == 18_846
    assert c._read_offset[tp] == 14_132  # fetched again from there: replays, acks ignored
    assert c._new_offset(tp) == 18_986


async def test_the_seek_takes_the_committed_offsets_read_otherwise() -> None:
    """A newer committed offset, a first one, none yet (0) and none at all are Faust's."""
    c = consumer({TPS[0]: 500, TPS[1]: 0, TP(processor.TRANSACTIONS, 2): None})
    c._committed_offset[TPS[0]] = 100
    await c.perform_seek()
    assert c._committed_offset[TPS[0]] == 500 and c._read_offset[TPS[0]] == 500
    assert c._committed_offset[TPS[1]] is None and c._read_offset[TPS[1]] == 0
    assert TP(processor.TRANSACTIONS, 2) not in c._committed_offset
    ack(c, TPS[0], range(500, 510))
    assert c._new_offset(TPS[0]) == 510


def test_a_committed_offset_set_back_stalls_fausts_commits() -> None:
    """Why the first test matters: with the committed offset set back, the acks after the
    commit lead nowhere (Faust commits up to the first offset never acked)."""
    tp = TPS[0]
    c = consumer({tp: 14_132})
    c._committed_offset[tp] = 14_132
    ack(c, tp, range(18_846, 18_986))
    assert c._new_offset(tp) is None
