"""The sink's agents (on the sink app, ``app.main.sink_app``; run them with ``txn sink -l info``):
``transactions_enriched`` -> collection ``transactions``, ``anomalies`` -> ``anomalies``,
``transactions_dlq`` -> ``dlq``. The rollups (``agents/rollups.py``) count the transactions
``store_transactions`` stored.

Each agent reads with acks off, turns each message into a document (``app.sink_docs``), and
holds it in a :class:`~app.sink_batch.Batch`; the batch is inserted (``app.mongo``, idempotent,
retried through an outage) and only then are its events acked, so Faust commits no offset
before the documents it covers are written. A message that cannot be stored becomes a
dead-letter record in ``dlq``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from faust import StreamT

from agents import rollups
from app import sink_docs as docs
from app.faust_internals.batch_consumer import direct_batches, read_directly
from app.main import sink_app
from app.mongo import Entry, InsertResult, MongoSink, connect
from app.settings import settings
from app.sink_batch import Batch
from app.topics import anomalies_raw, dlq_raw, enriched_raw
from tables.rollups import Countable, countable

__all__ = ["BATCHES", "mongo", "store_anomalies", "store_dlq", "store_transactions"]

log = logging.getLogger("app.sink")

#: The sink's consumer hands ``transactions_enriched`` over a fetch at a time, in batches of at
#: most FETCH_MAX messages, after waiting FETCH_SECONDS for more (the worker's values).
read_directly(sink_app, enriched_raw.get_topic_name())
FETCH_MAX = 5_000
FETCH_SECONDS = 0.005

#: Every batch of the running agents, flushed by :func:`flush_due_batches` when old enough.
BATCHES: list[Batch[Any]] = []
_mongo: list[MongoSink] = []


def mongo() -> MongoSink:
    """The sink's MongoDB writer, made on first use (inside the worker's event loop)."""
    if not _mongo:
        _mongo.append(MongoSink(connect(settings.mongo_url)[settings.mongo_db]))
    return _mongo[0]


def acker(stream: StreamT) -> Callable[[Sequence[Any]], Any]:
    async def ack(events: Sequence[Any]) -> None:
        for event in events:
            await stream.ack(event)
    return ack


def _oldest(entries: Sequence[Entry]) -> datetime | None:
    dates = [e.doc["timestamp"] for e in entries
             if e.doc is not None and isinstance(e.doc.get("timestamp"), datetime)]
    return min(dates) if dates else None


async def stored_here(entries: Sequence[Entry], result: InsertResult) -> list[Countable]:
    """The rollup items of the entries whose ``transactions`` document is theirs: inserted now,
    or by an earlier read of the same message (same ``processed_at``). A duplicate ``txn_id``
    stored from another message (the processor re-emitting it) is not counted again."""
    rejected = {id(e) for e, _ in result.rejected}
    kept = [(e, e.doc) for e in entries if e.doc is not None and id(e) not in rejected]
    if result.duplicates:
        stored = await mongo().stored_processed_at([doc["_id"] for _, doc in kept])
        kept = [(e, doc) for e, doc in kept if stored.get(doc["_id"]) == doc["processed_at"]]
    items = (countable(doc, e.partition, e.offset) for e, doc in kept)
    return [item for item in items if item is not None]


def _entry(message: Any, make_doc: Callable[[Any], dict[str, Any]]) -> Entry:
    raw = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
    try:
        return Entry(make_doc(message), raw, message.topic, message.partition, message.offset)
    except docs.PoisonMessage as exc:
        return Entry(None, raw, message.topic, message.partition, message.offset, str(exc))


async def _one_by_one(events: Any) -> AsyncIterator[tuple[list[Any], list[Any]]]:
    async for event in events.events():
        yield [event.message], [event]


async def _store(stream: StreamT, collection: str,
                 make_doc: Callable[[Any], dict[str, Any]], count: bool = False) -> None:
    """Store every message of ``stream`` into ``collection``, in batches (``count``: hand the
    stored transactions to the rollups, which ack the events after their next write).

    ``transactions_enriched`` comes straight from the consumer, a fetch at a time
    (:class:`~app.faust_internals.batch_consumer.BatchConsumer`, as the processing worker reads
    ``transactions``); the other topics, far smaller, through Faust's stream, an event at a
    time."""
    source: AsyncIterator[tuple[list[Any], list[Any]]]
    direct = direct_batches(stream, FETCH_MAX, FETCH_SECONDS) if count else None
    if direct is not None:
        consumer = sink_app.consumer

        async def ack(messages: Sequence[Any]) -> None:
            for message in messages:
                message.ack(consumer)

        source = ((messages, messages) async for messages in direct)
    else:
        events = stream.noack()  # type: ignore[attr-defined]
        ack = acker(events)  # type: ignore[assignment]
        source = _one_by_one(events)

    async def write(entries: list[Entry]) -> None:
        started = time.monotonic()
        result = await mongo().insert(collection, entries)
        await mongo().record_batch(collection, result, time.monotonic() - started,
                                   _oldest(entries))
        if count:
            rollups.hold(await stored_here(entries, result))

    async def ack_later(batch_events: Sequence[Any]) -> None:
        await rollups.hold_events(ack, batch_events)

    batch: Batch[Entry] = Batch(collection, write, ack_later if count else ack,
                                settings.sink_batch_size, settings.sink_batch_seconds)
    BATCHES.append(batch)
    try:
        async for messages, acked_by in source:
            await batch.add_many([_entry(m, make_doc) for m in messages], acked_by)
    finally:
        BATCHES.remove(batch)


@sink_app.agent(enriched_raw)
async def store_transactions(stream: StreamT) -> None:
    """``transactions_enriched`` -> ``transactions`` (``_id`` = ``txn_id``)."""
    await _store(stream, docs.TRANSACTIONS,
                 lambda message: docs.transaction_doc(docs.parse_json(message.value)),
                 count=True)


@sink_app.agent(anomalies_raw)
async def store_anomalies(stream: StreamT) -> None:
    """``anomalies`` -> ``anomalies`` (``_id`` = ``txn_id``)."""
    await _store(stream, docs.ANOMALIES,
                 lambda message: docs.anomaly_doc(docs.parse_json(message.value)))


def _dlq_doc(message: Any) -> dict[str, Any]:
    headers = {k: v if isinstance(v, bytes) else str(v).encode()
               for k, v in (message.headers.items() if isinstance(message.headers, dict)
                            else message.headers or [])}
    return docs.dlq_doc(message.value or b"", headers, message.topic, message.partition,
                        message.offset, message.timestamp)


@sink_app.agent(dlq_raw)
async def store_dlq(stream: StreamT) -> None:
    """``transactions_dlq`` -> ``dlq`` (one record per invalid input, with its reason)."""
    await _store(stream, docs.DLQ, _dlq_doc)


@sink_app.task
async def flush_due_batches() -> None:
    """The time bound of every batch: flush the ones whose oldest event is old enough."""
    while True:
        await asyncio.sleep(min(settings.sink_batch_seconds, 1.0) / 4)
        for batch in list(BATCHES):
            await batch.flush_if_due()


@sink_app.task
async def prepare_mongo() -> None:
    """Create the collections and indexes at start-up (retried while MongoDB is down)."""
    # Faust warns at every send past 100 buffered messages; the repartition and changelog
    # sends of the rollups pass that in bursts, so warn only past a larger buffer.
    sink_app.producer.buffer.max_messages = 2000
    await mongo().ready()
    log.info("sink ready at %s UTC: batches of %d documents or %.2f s",
             datetime.now(UTC).strftime("%H:%M:%S"), settings.sink_batch_size,
             settings.sink_batch_seconds)
