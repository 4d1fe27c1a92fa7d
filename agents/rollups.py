"""The rollups (on the sink app; ``txn sink``): per merchant per minute, and overall per minute.

No stream of their own: ``store_transactions`` (``agents/sink.py``) hands over each batch it
stored, as :class:`~tables.rollups.Countable` items (only the transactions whose document is
this message's: a duplicate ``txn_id`` another message stored is not counted), and holds the
batch's events here instead of acking them. Every ``FLUSH_SECONDS`` (or ``FLUSH_EVENTS`` held
events) :func:`flush` folds the items into their rows (:class:`tables.rollups.RollupState`:
per row, one part per source partition with the offset of its last transaction, so a message
read again is never counted twice), writes the changed rows to ``merchant_minute`` and
``volume_minute`` (absolute values), and only then acks the held events.

Lag between a transaction and its rollup row: its insert batch plus at most ``FLUSH_SECONDS``
plus one write (docs/sink.md has the measured numbers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agents import sink
from app.main import sink_app
from app.settings import settings
from app.topics import enriched_raw
from tables.rollups import Countable, RollupState

__all__ = ["FLUSH_EVENTS", "FLUSH_SECONDS", "STATE", "WRITE_SHARE", "flush", "hold",
           "pause_after", "write_rollups"]

log = logging.getLogger("app.sink")

#: Rollup rows are written FLUSH_SECONDS after the previous write ended: each write upserts
#: every row changed since the last one, once, whatever the number of transactions; upserts are
#: slow on FerretDB (~100-300/s), so a slow write just makes the next one cover more events.
#: Past FLUSH_EVENTS held events (about 1 KB of memory each) the inserts wait for a write.
FLUSH_SECONDS = 5.0
FLUSH_EVENTS = 50 * settings.sink_batch_size
#: ...and at most this share of the time goes to rollup writes: after a write of ``t`` seconds
#: the next one waits ``max(FLUSH_SECONDS, t * (1 / WRITE_SHARE - 1))``. An upsert costs
#: FerretDB about 15 inserts (docs/sink.md), so under load the rollups back off and leave the
#: database to the inserts; their rows then cover more transactions each.
WRITE_SHARE = 0.2


def pause_after(write_seconds: float) -> float:
    """Seconds from the end of a rollup write to the start of the next one."""
    return max(FLUSH_SECONDS, write_seconds * (1 / WRITE_SHARE - 1))

STATE = RollupState()
Ack = Callable[[Sequence[Any]], Awaitable[Any]]
_items: list[Countable] = []
_events: list[tuple[Ack, Sequence[Any]]] = []
_held = [0]
_seen: list[tuple[int, int | None]] = [(-1, None)]
_lock = asyncio.Lock()


def _exclusive() -> bool:
    """Whether this process reads every partition of the enriched topic (then no other
    process writes parts of its rows). Logged when it changes."""
    try:
        topic = enriched_raw.get_topic_name()
        consumer = sink_app.consumer
        mine = {tp.partition for tp in consumer.assignment() if tp.topic == topic}
        total = consumer.topic_partitions(topic)
    except Exception:  # noqa: BLE001 - no consumer (tests): assume shared, the safe side
        return False
    exclusive = total is not None and total > 0 and len(mine) >= total
    if (len(mine), total) != _seen[0]:
        _seen[0] = (len(mine), total)
        log.info("rollups: this process reads %d of %s partitions of %s: %s", len(mine), total,
                 topic, "it alone writes their rows" if exclusive
                 else "rows are shared, their totals are re-read after each write")
    return exclusive


async def write_rollups(items: list[Countable], exclusive: bool) -> None:
    """Fold ``items`` into their rows and write the changed rows (absolute values)."""
    missing = STATE.missing(items)
    if missing:
        stored = await sink.mongo().rollup_parts(list(missing))
        for key, labels in missing.items():
            STATE.load(key, labels, stored.get(key))
    changed = STATE.apply(items)
    rows = [(collection, _id, row.labels, {p: row.parts[p] for p in parts}, row.totals())
            for (collection, _id), (row, parts) in changed.items()]
    await sink.mongo().write_rollup_rows(rows, exclusive)
    STATE.commit(changed)


async def flush() -> None:
    """Write the held items' rows, then ack the held events."""
    async with _lock:
        items, events = list(_items), list(_events)
        _items.clear()
        _events.clear()
        _held[0] = 0
        try:
            if items:
                await write_rollups(items, _exclusive())
        except BaseException:
            # Not written (a data error; outages are retried inside): keep everything held, so
            # nothing is acked past it and a later flush tries again.
            _items[:0] = items
            _events[:0] = events
            _held[0] += sum(len(batch) for _, batch in events)
            raise
        for ack, batch in events:
            await ack(batch)


def hold(items: list[Countable]) -> None:
    """Items of a batch just stored (counted at the next flush)."""
    _items.extend(items)


async def hold_events(ack: Ack, events: Sequence[Any]) -> None:
    """Events of a batch just stored: acked after the next rollup write (the caller waits for
    that write when too many events are held)."""
    _events.append((ack, events))
    _held[0] += len(events)
    if _held[0] >= FLUSH_EVENTS:
        await flush()


@sink_app.task
async def flush_rollups() -> None:
    """The rollups' time bound (and their share of the database's time: :func:`pause_after`)."""
    took = 0.0
    while True:
        await asyncio.sleep(pause_after(took))
        started = time.monotonic()
        await flush()
        took = time.monotonic() - started


@sink_app.on_partitions_revoked.connect
async def forget_rows(sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any) -> None:
    """After a rebalance another process may write parts of the rows cached here: read them
    again. Items of revoked partitions are dropped (their events are not acked here; the
    partition's new reader counts them)."""
    revoked = args[0] if args else kwargs.get("revoked") or ()
    topic = enriched_raw.get_topic_name()
    lost = {tp.partition for tp in revoked if tp.topic == topic}
    if lost:
        _items[:] = [i for i in _items if i.partition not in lost]
    STATE.forget()
