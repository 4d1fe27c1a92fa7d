"""The processing agent: ``transactions`` -> statistics, anomaly rule -> ``transactions_enriched``,
``anomalies``; invalid messages -> ``transactions_dlq``.

It works on batches of messages (:func:`batches`: the worker's consumer,
:mod:`app.faust_internals.batch_consumer`, hands ``transactions`` over a fetch at a time) and,
for each batch:

1. checks every message (:mod:`agents.admit`: the contract, key == ``user_id``, the Kafka
   timestamp, late and future events against each partition's stream time); refused ones
   become DLQ messages (the original bytes, cut to ``DLQ_MAX_PAYLOAD_BYTES``; ``dlq.*`` headers);
2. per user, in partition order, converts the amount to the reporting currency
   (:mod:`app.rates`) and applies the contract's rule (docs/contract.md,
   :mod:`tables.welford`) and the day windows (:mod:`tables.windows`) to the user's value,
   skipping what it already holds (it remembers the source offset of the last transaction in
   it: :mod:`tables.records`) and any transaction whose ``txn_id`` another message already
   folded (the ``txn-ids`` table: a replay);
3. publishes the enriched, anomaly and DLQ messages and waits until Kafka acknowledged them;
4. writes the new table values (local store) and publishes their changelog messages, waiting
   until Kafka acknowledged them too (while the next batch runs: :func:`process`);
5. only then acks the batch's messages (so their offsets can be committed).

Steps 3-5 in this order are the crash guarantee (docs/stream-processing.md): whatever is
committed is in the changelogs, whatever a table holds was published, and a replayed message
is never folded twice. The worker is crash-only: only a data error (an
:class:`~app.contract.InvalidTransaction`) makes a dead letter; if anything else fails in
steps 1-4 (a RocksDB read, a bug, a send) the process exits at once, so nothing of the batch
is acked or committed and the restarted worker does it again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, NoReturn

import orjson
from faust.types import EventT, Message

from agents.admit import Clock, Out, dlq_message, valid
from agents.counters import Counters, dlq_kind
from agents.enrich import enrich
from app.contract import TOPIC_CONFIG, InvalidTransaction
from app.faust_internals.batch_consumer import direct_batches, in_flight, read_directly
from app.faust_internals.idempotent_producer import produce_idempotently
from app.faust_internals.record_batches import KafkaOutput, Sent, acknowledged
from app.main import app
from app.producer.kafka import set_topic_configs
from app.settings import settings
from app.topics import DLQ_CONFIG, anomalies_topic, dlq_topic, enriched_topic, transactions_topic
from tables import txn_ids, user_tables, windows
from tables.changelog import Change, changes_persisted
from tables.records import NO_OFFSET, UserState

__all__ = ["BATCH_MAX", "BATCH_SECONDS", "Counters", "Folded", "Out", "UserWrites", "batches",
           "counters", "process", "process_batch", "start_batch", "stream_batches"]

log = logging.getLogger(__name__)

#: A batch holds at most this many messages (the stream buffer, ``stream_buffer_maxsize``,
#: holds 4,096)...
BATCH_MAX = 5_000
#: ...and, after its first message, waits this long for more (the latency a quiet stream
#: adds). Under load batches grow anyway: messages queue up while a batch is published.
BATCH_SECONDS = 0.005

#: The worker's garbage collector thresholds (Python's default: 700, 10, 10).
GC_THRESHOLDS = (10_000, 20, 20)


TRANSACTIONS = transactions_topic.get_topic_name()
ENRICHED = enriched_topic.get_topic_name()
ANOMALIES = anomalies_topic.get_topic_name()
DLQ = dlq_topic.get_topic_name()

#: The worker's producer is idempotent; its consumer hands over ``transactions`` a fetch at a time.
produce_idempotently(app)
read_directly(app, TRANSACTIONS)


#: What this worker did since it started (tests put a fresh one here).
counters = Counters()


#: Where a batch goes; unit tests put a recorder here.
output: Any = KafkaOutput(app)


class UserWrites(NamedTuple):
    """What folding one user's messages of a batch leaves to write back."""

    partition: int
    user_id: str
    user: UserState | None  # None: unchanged
    folded: dict[bytes, int]  # txn-ids key -> source offset


def _fold_user(user_id: str, items: list[tuple[Message, dict[str, Any], float]], now: str,
               stream_time: float, out: list[Out]) -> UserWrites:
    """Apply one user's transactions of the batch, in partition order, and return what to
    write back. A transaction whose ``txn_id`` another message already folded is skipped."""
    threshold, min_history = settings.anomaly_z_threshold, settings.anomaly_min_history
    partition = items[0][0].partition  # a user's messages share one partition
    user = before = user_tables.get_user(user_id, partition)
    days = {day: (total, count) for day, total, count in user.days}
    folded: dict[bytes, int] = {}
    rewrite_user = False
    for msg, txn, event_time in items:
        offset = msg.offset
        id_key = txn_ids.key_of(txn["txn_id"], event_time)
        first = folded[id_key] if id_key in folded else txn_ids.folded_at(id_key, partition)
        if offset <= user.offset:
            # Redelivered (after a crash or a rebalance): the value already holds it, folded or
            # skipped as a duplicate, so it was published. Write the value and the id back
            # anyway, in case the local store was ahead of the changelog.
            counters.replayed += 1
            rewrite_user = True
            if first is None or first == offset:
                folded[id_key] = offset
            continue
        if first is not None and first != offset:
            # Another message folded this id. The value remembers the offset, so a redelivery
            # of this message is a replay above, not a second duplicate (a user with nothing
            # folded gets no value: it stays unknown).
            counters.duplicates += 1
            if user.offset != NO_OFFSET:
                user = user._replace(offset=offset)
            continue
        folded[id_key] = offset
        day = windows.day_of(event_time)
        day_cents, day_count = days.get(day, (0, 0))
        done = enrich(txn, user.stats, day_cents, now, threshold, min_history)
        days[day] = (day_cents + done.amount_cents, day_count + 1)
        user = UserState(done.stats, done.z, offset, user.days)
        counters.processed += 1
        out.append(Out(ENRICHED, msg.key, orjson.dumps(done.value), msg.partition,
                       msg.timestamp))
        counters.enriched += 1
        if done.anomaly is not None:
            out.append(Out(ANOMALIES, msg.key, orjson.dumps(done.anomaly), msg.partition,
                           msg.timestamp))
            counters.anomalies += 1
    if user is not before:
        oldest = windows.oldest_kept_day(stream_time, settings.late_event_grace_days)
        kept = windows.kept_days(((d, c, n) for d, (c, n) in days.items()), oldest)
        user = user._replace(days=kept)
    changed = user if (user is not before or rewrite_user) else None
    return UserWrites(partition, user_id, changed, folded)


class _Generation:
    """The consumer generation of the last batch: a new one means a rebalance happened."""

    current: int | None = None


def _on_generation(generation: int | None) -> None:
    """Before a batch: after a rebalance (partitions moved, tables recovered) forget what is
    cached about the stores."""
    if generation != _Generation.current:
        user_tables.forget_users()
        txn_ids.forget_expiry()
        _Generation.current = generation
    user_tables.bound_users()


class Folded(NamedTuple):
    """What a batch leaves to publish and to write."""

    out: list[Out]
    writes: list[UserWrites]
    stream_times: dict[int, float]  # partition -> its stream time after the batch


def _fold_batch(messages: Sequence[Message]) -> Folded:
    """Steps 1-2 of the module docstring: the messages to publish and the table values to
    write. Only a data error makes a dead letter; any other exception propagates."""
    _on_generation(app.consumer_generation_id)
    wall_clock = datetime.now(UTC)
    now = wall_clock.isoformat()
    clock = Clock(wall_clock.timestamp())
    out: list[Out] = []
    by_user: dict[str, list[tuple[Message, dict[str, Any], float]]] = {}
    for msg in messages:  # in partition order: the stream times advance as they did
        try:
            txn, event_time = valid(msg)
            clock.admit(msg, txn, event_time)
        except InvalidTransaction as exc:
            reason = str(exc)
            out.append(dlq_message(msg, reason, now))
            counters.dlq += 1
            kind = dlq_kind(reason)
            counters.dlq_kinds[kind] = counters.dlq_kinds.get(kind, 0) + 1
            continue
        by_user.setdefault(txn["user_id"], []).append((msg, txn, event_time))
    stream_times = clock.stream_times
    writes = [_fold_user(user_id, items, now, stream_times[items[0][0].partition], out)
              for user_id, items in by_user.items()]
    return Folded(out, writes, stream_times)


async def start_batch(messages: Sequence[Message]) -> Awaitable[None]:
    """Process one batch up to handing its changelog messages to the producer (steps 1-4 of
    the module docstring, without waiting for the changelog's acknowledgements). Returns an
    awaitable that completes once Kafka acknowledged them: only then may the messages be
    acked. Anything but a data error ends the process (:func:`_not_durable`): a failed read of
    a table must not turn valid transactions into dead letters."""
    started = time.perf_counter()
    try:
        batch = _fold_batch(messages)
    except BaseException:
        counters.errors += 1
        _not_durable(len(messages), "failed")
    try:
        await output.publish(batch.out)
        changes: list[Change] = []
        folded: dict[int, dict[bytes, int]] = {}
        for w in batch.writes:
            if w.user is not None:
                changes.append(user_tables.put_user(w.user_id, w.user, w.partition))
            folded.setdefault(w.partition, {}).update(w.folded)
        # After the users: a recovered stream time never runs ahead of the recovered users.
        changes.extend(user_tables.put_stream_time(partition, stream_time)
                       for partition, stream_time in batch.stream_times.items()
                       if stream_time != user_tables.get_stream_time(partition))
        changes.extend(txn_ids.put_folded(entries, partition)
                       for partition, entries in folded.items() if entries)
        sent = await output.send(changes)
        _expire_txn_ids(batch.stream_times)
    except BaseException:
        _not_durable(len(messages))
    counters.batches += 1
    return _changelog_acknowledged(sent, len(messages), started)


def _expire_txn_ids(stream_times: dict[int, float]) -> None:
    """Forget the ids older than the dedupe horizon, per partition, by its stream time (never
    ahead of the wall clock by more than a day, whatever FUTURE_EVENT_TOLERANCE_SECONDS)."""
    ceiling = datetime.now(UTC).timestamp() + windows.DAY_SECONDS
    for partition, stream_time in stream_times.items():
        if stream_time != windows.NO_STREAM_TIME:
            stream_day = windows.day_of(min(stream_time, ceiling))
            txn_ids.expire(partition, stream_day, settings.dedupe_horizon_days)


async def _changelog_acknowledged(sent: Sequence[Sent], n_messages: int,
                                  started: float) -> None:
    try:
        persisted: dict[tuple[str, int], int] = {}
        for md in await acknowledged(sent):
            tp = (md.topic, md.partition)
            persisted[tp] = max(md.offset, persisted.get(tp, -1))
        changes_persisted(persisted)
    except BaseException:
        _not_durable(n_messages)
    counters.batch_seconds.observe(time.perf_counter() - started)


def _not_durable(n_messages: int, what: str = "could not be made durable") -> NoReturn:
    # Acking this batch now would commit offsets of messages whose results are not in Kafka.
    # Crash instead: the restarted worker replays it (and skips what is already done).
    _crash(f"batch of {n_messages} messages {what}: exiting without acking it")


def _crash(what: str) -> NoReturn:
    """Log ``what`` with the exception being handled and end the process (exit 70)."""
    log.critical("%s", what, exc_info=True)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(70)


async def process_batch(messages: Sequence[Message]) -> None:
    """Process one batch completely; returns when it is safe to ack it."""
    await (await start_batch(messages))


async def declare_outputs() -> None:
    """Create the output topics (``TOPIC_PARTITIONS`` partitions) before anything is sent; the
    DLQ's records may be larger than the broker's default limit (``DLQ_MAX_PAYLOAD_BYTES``).
    Topics that already existed get the contract's config too (``TOPIC_CONFIG``: no time
    retention, which would delete a backfill's old-dated records before they are read)."""
    for topic in (enriched_topic, anomalies_topic):
        await topic.derive(config=TOPIC_CONFIG).maybe_declare()
    await dlq_topic.derive(config=DLQ_CONFIG).maybe_declare()
    if isinstance(output, KafkaOutput):  # not in unit tests, which have no broker
        configs = {TRANSACTIONS: TOPIC_CONFIG, ENRICHED: TOPIC_CONFIG, ANOMALIES: TOPIC_CONFIG,
                   DLQ: DLQ_CONFIG}
        await asyncio.to_thread(set_topic_configs, settings.kafka_bootstrap_servers, configs)


async def stream_batches(stream: Any) -> AsyncIterator[list[Message]]:
    """The same from a Faust stream's channel (``agent.test_context()``, whose channel is not
    the topic)."""
    channel = aiter(stream.channel)
    queue = channel.queue
    while True:
        events: list[EventT[Any]] = [await queue.get()]
        if BATCH_SECONDS:
            await asyncio.sleep(BATCH_SECONDS)
        while len(events) < BATCH_MAX and not queue.empty():
            events.append(queue.get_nowait())
        batch = in_flight([e.message for e in events], stream.app)
        if batch:
            yield batch


def batches(stream: Any) -> AsyncIterator[list[Message]]:
    """The agent's batches: straight from the consumer when the worker runs
    :class:`~app.faust_internals.batch_consumer.BatchConsumer` on the topic, else from the
    stream."""
    direct = direct_batches(stream, BATCH_MAX, BATCH_SECONDS)
    return direct if direct is not None else stream_batches(stream)


async def _ack_when_durable(durable: Awaitable[None], messages: Sequence[Message],
                            consumer: Any) -> None:
    await durable
    for message in messages:
        message.ack(consumer)


@app.agent(transactions_topic)
async def process(stream: Any) -> None:
    """The processing agent (one per worker; partitions are split across workers).

    A batch's changelog acknowledgements are awaited while the next batch is collected,
    computed and published (its messages are acked after that, in a task), so a batch waits
    for one produce round trip, not two. Sends stay in order in every partition, and at most
    two batches are in flight.
    """
    try:
        await declare_outputs()
    except Exception:
        # Faust's supervisor would restart the agent, which then waits for nothing: the worker
        # would run without processing. Crash-only: exit, so it starts again from scratch.
        _crash("the output topics could not be declared or configured")
    # Faust's many long-lived objects out of the garbage collector's way, and fewer young
    # collections: the collector was a large share of the batch code's CPU.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    consumer = stream.app.consumer
    finishing: asyncio.Future[None] | None = None
    async for messages in batches(stream):
        durable = await start_batch(messages)
        if finishing is not None:
            await finishing  # the previous batch's changelog: sent before this one's
        finishing = asyncio.ensure_future(_ack_when_durable(durable, messages, consumer))
