"""The sink's agents and tasks on the sink app (``app.main.sink_app``; ``txn sink -l info``):
``transactions_enriched`` -> ``transactions`` (then the rollups), ``anomalies`` ->
``anomalies`` (then their time index), ``transactions_dlq`` -> ``dlq``. Only wiring: each
agent turns its messages into :class:`~agents.sink.documents.Entry` items and adds them, with
the events to ack, to its :class:`~agents.sink.writer.MongoSink`.

A message whose conversion fails on its data (:data:`~agents.sink.exceptions.DATA_ERRORS`)
becomes an entry without a document, written as a dead-letter record with its reason and
coordinates. Every agent, task and handler here runs in
:func:`~agents.sink.crash.crash_only`: any other exception ends the process without acking.

The processing app imports this module too (it autodiscovers ``agents``): it only declares
agents and tasks on ``sink_app``, which the processing worker never starts, and connects
nothing (:func:`sink` makes the objects on first use, inside the sink worker's event loop).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faust import StreamT

from agents.sink import documents as docs
from agents.sink import metrics
from agents.sink.anomaly_index import AnomalyIndex
from agents.sink.batch import Ack
from agents.sink.crash import crash_only
from agents.sink.documents import Entry
from agents.sink.exceptions import DATA_ERRORS, PoisonMessage
from agents.sink.mongo import MongoStore, connect
from agents.sink.rollups import Rollups
from agents.sink.writer import AfterWrite, MongoSink, release
from app.faust_internals.batch_consumer import direct_batches, read_directly
from app.main import sink_app
from app.settings import settings
from app.topics import anomalies_raw, dlq_raw, enriched_raw

__all__ = ["Exclusive", "Sink", "flush_due_batches", "flush_rollups", "forget_rows",
           "prepare_mongo", "serve_metrics", "sink", "store_anomalies", "store_dlq",
           "store_transactions", "watch"]

log = logging.getLogger("app.sink")

#: The sink's consumer hands ``transactions_enriched`` over a fetch at a time, in batches of at
#: most FETCH_MAX messages, after waiting FETCH_SECONDS for more (the worker's values). The
#: broker holds its fetches until FETCH_MIN_BYTES are there or FETCH_WAIT_MS passed: the sink's
#: batches last SINK_BATCH_SECONDS anyway, and at 1k/s a fetch as soon as anything arrived
#: meant hundreds of tiny fetches a second, CPU for the sink and the broker.
FETCH_MAX = 5_000
FETCH_SECONDS = 0.005
FETCH_WAIT_MS = 200
FETCH_MIN_BYTES = 256 * 1024
read_directly(sink_app, enriched_raw.get_topic_name(), FETCH_WAIT_MS, FETCH_MIN_BYTES)


class Exclusive:
    """Whether this process reads every partition of ``transactions_enriched`` (then no other
    process writes parts of its rollup rows); logged when it changes."""

    def __init__(self) -> None:
        self._seen: tuple[int, int | None] = (-1, None)

    def __call__(self) -> bool:
        try:
            topic = enriched_raw.get_topic_name()
            consumer = sink_app.consumer
            mine = {tp.partition for tp in consumer.assignment() if tp.topic == topic}
            total = consumer.topic_partitions(topic)
        except Exception:  # noqa: BLE001 - no consumer (tests): assume shared, the safe side
            return False
        exclusive = total is not None and total > 0 and len(mine) >= total
        if (len(mine), total) != self._seen:
            self._seen = (len(mine), total)
            log.info("rollups: this process reads %d of %s partitions of %s: %s", len(mine),
                     total, topic, "it alone writes their rows" if exclusive
                     else "rows are shared, their totals are re-read after each write")
        return exclusive


@dataclass
class Sink:
    """The objects of one sink process: the database, the rollups and the running writers."""

    store: MongoStore
    rollups: Rollups
    writers: list[MongoSink] = field(default_factory=list)


@functools.cache
def sink() -> Sink:
    """The sink's objects, made on first use (inside the worker's event loop)."""
    store = MongoStore(connect(settings.mongo_url)[settings.mongo_db])
    return Sink(store, Rollups(store, Exclusive()))


#: Makes a message's document from the message and its value (bytes); or the document and the
#: fields the aggregates count, when the document does not hold them (``docs.transaction``).
MakeDoc = Callable[[Any, bytes], dict[str, Any] | tuple[dict[str, Any], dict[str, Any]]]


def _entry(message: Any, make_doc: MakeDoc) -> Entry:
    """The message's entry; without a document when its data cannot become one (the
    reason is then its dead-letter record's)."""
    value = message.value
    raw = value if isinstance(value, bytes) else b"" if value is None else bytes(value)
    try:
        made = make_doc(message, raw)
    except DATA_ERRORS as exc:
        reason = str(exc) if isinstance(exc, PoisonMessage) else \
            f"{type(exc).__name__}: {exc}"
        return Entry(None, raw, message.topic, message.partition, message.offset, reason)
    doc, fields = made if isinstance(made, tuple) else (made, None)
    return Entry(doc, raw, message.topic, message.partition, message.offset, fields=fields)


async def _one_by_one(events: Any) -> AsyncIterator[tuple[list[Any], list[Any]]]:
    async for event in events.events():
        yield [event.message], [event]


def _source(stream: StreamT[Any], direct: bool
            ) -> tuple[AsyncIterator[tuple[list[Any], list[Any]]], Ack]:
    """The messages of ``stream`` with the events that ack them, and how to ack those.
    ``direct``: straight from the consumer, a fetch at a time
    (:class:`~app.faust_internals.batch_consumer.BatchConsumer`, as the processing worker
    reads ``transactions``); otherwise through Faust's stream with acks off, an event at a
    time."""
    batches = direct_batches(stream, FETCH_MAX, FETCH_SECONDS) if direct else None
    if batches is not None:
        consumer = sink_app.consumer

        async def ack_messages(messages: Sequence[Any]) -> None:
            for message in messages:
                message.ack(consumer)

        return ((messages, messages) async for messages in batches), ack_messages
    events = stream.noack()  # type: ignore[attr-defined]

    async def ack_events(acked: Sequence[Any]) -> None:
        for event in acked:
            await events.ack(event)

    return _one_by_one(events), ack_events


async def _store(stream: StreamT[Any], collection: str, make_doc: MakeDoc,
                 count: bool = False, after: AfterWrite | None = None) -> None:
    """Store every message of ``stream`` into ``collection`` (``count``: the rollups take
    each stored batch and its acks; ``after``: this step does)."""
    parts = sink()
    source, ack = _source(stream, direct=count)
    after_write: AfterWrite = after or (parts.rollups.add if count else release)
    writer = MongoSink(parts.store, collection, ack, max_size=settings.sink_batch_size,
                       max_seconds=settings.sink_batch_seconds, after_write=after_write)
    parts.writers.append(writer)
    try:
        async for messages, acked_by in source:
            await writer.add([_entry(m, make_doc) for m in messages], acked_by)
    finally:
        parts.writers.remove(writer)


@sink_app.agent(enriched_raw)
@crash_only
async def store_transactions(stream: StreamT[Any]) -> None:
    """``transactions_enriched`` -> ``transactions`` (``_id`` = ``txn_id``), then rollups."""
    await _store(stream, docs.TRANSACTIONS, lambda message, raw: docs.transaction(raw),
                 count=True)


@sink_app.agent(anomalies_raw)
@crash_only
async def store_anomalies(stream: StreamT[Any]) -> None:
    """``anomalies`` -> ``anomalies`` (``_id`` = ``txn_id``), then their time index."""
    await _store(stream, docs.ANOMALIES,
                 lambda message, raw: docs.anomaly_doc(docs.parse_json(raw)),
                 after=AnomalyIndex(sink().store))


def _dlq_doc(message: Any, raw: bytes) -> dict[str, Any]:
    pairs = message.headers.items() if isinstance(message.headers, dict) \
        else message.headers or []
    headers = {str(k): v if isinstance(v, bytes) else str(v).encode()
               for k, v in pairs if v is not None}
    return docs.dlq_doc(raw, headers, message.topic, message.partition, message.offset,
                        message.timestamp)


@sink_app.agent(dlq_raw)
@crash_only
async def store_dlq(stream: StreamT[Any]) -> None:
    """``transactions_dlq`` -> ``dlq`` (one record per invalid input, with its reason)."""
    await _store(stream, docs.DLQ, _dlq_doc)


@crash_only
async def flush_due_batches() -> None:
    """The time bound of every batch: flush the ones whose oldest event is old enough."""
    while True:
        await asyncio.sleep(min(settings.sink_batch_seconds, 1.0) / 4)
        for writer in list(sink().writers):
            await writer.flush_if_due()


@crash_only
async def flush_rollups() -> None:
    """The rollups' time bound (and their share of the database's time)."""
    await sink().rollups.flush_forever()


@crash_only
async def prepare_mongo() -> None:
    """Create the collections and indexes at start-up (retried while MongoDB is down)."""
    await sink().store.ready()
    metrics.ready()
    log.info("sink ready at %s UTC: batches of %d documents or %.2f s",
             datetime.now(UTC).strftime("%H:%M:%S"), settings.sink_batch_size,
             settings.sink_batch_seconds)


@crash_only
async def serve_metrics() -> None:
    """``/metrics``, ``/health`` and ``/ready`` on ``BIND_HOST:SINK_METRICS_PORT`` (0: none).
    A port in use is logged, not fatal: the sink's data path does not need it."""
    if not settings.sink_metrics_port:
        return
    try:
        metrics.serve(settings.bind_host, settings.sink_metrics_port)
    except OSError as exc:
        log.error("sink metrics not served on %s:%d: %s", settings.bind_host,
                  settings.sink_metrics_port, exc)
        return
    log.info("sink metrics on http://%s:%d/metrics (/health, /ready)", settings.bind_host,
             settings.sink_metrics_port)


def lag() -> dict[str, int]:
    """Messages not yet committed per topic, over the assigned partitions this process has
    committed (a partition it committed nothing for yet is left out)."""
    consumer = sink_app.consumer
    committed = sink_app.monitor.tp_committed_offsets or {}
    found: dict[str, int] = {}
    for tp in consumer.assignment():
        end, done = consumer.highwater(tp), committed.get(tp)
        if end is not None and done is not None:
            found[tp.topic] = found.get(tp.topic, 0) + max(0, end - done)
    return found


@crash_only
async def watch() -> None:
    """Every second: the event loop runs (``/health``); every 5 s: the consumer lag."""
    ticks = 0
    while True:
        metrics.beat()
        if ticks % 5 == 0:
            try:
                metrics.set_lag(lag())
            except Exception as exc:  # noqa: BLE001 - a metric must never stop the sink
                log.debug("consumer lag not read: %r", exc)
        ticks += 1
        await asyncio.sleep(1.0)


# Registered by call, not as decorators: Faust's ``task`` decorator is untyped.
sink_app.task(flush_due_batches)
sink_app.task(flush_rollups)
sink_app.task(prepare_mongo)
sink_app.task(serve_metrics)
sink_app.task(watch)


@sink_app.on_partitions_revoked.connect
@crash_only
async def forget_rows(sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any) -> None:
    """After a rebalance another process may write parts of the rows cached here, and the
    items of revoked partitions are no longer this process's to count."""
    revoked = args[0] if args else kwargs.get("revoked") or ()
    topic = enriched_raw.get_topic_name()
    sink().rollups.forget({tp.partition for tp in revoked if tp.topic == topic})
