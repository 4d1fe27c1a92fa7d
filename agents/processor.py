"""The processing agent: ``transactions`` -> statistics, anomaly rule -> ``transactions_enriched``,
``anomalies``; invalid messages -> ``transactions_dlq``.

It works on batches (``stream.take_events``) and, for each batch:

1. validates every message (:func:`app.contract.validate`, plus key == ``user_id``); invalid ones
   become DLQ messages (original bytes, ``dlq.*`` headers);
2. per user, in partition order, applies DESIGN.md's rule (:mod:`tables.welford`) to the state
   read from the tables, skipping what a table already holds (each value remembers the source
   offset of the last transaction in it: :mod:`tables.records`);
3. publishes the enriched, anomaly and DLQ messages and waits until Kafka acknowledged them;
4. writes the new table values (local store) and publishes their changelog messages, waiting
   until Kafka acknowledged them too;
5. returns, and only then are the events acked (so their offsets can be committed).

Steps 3-5 in this order are the crash guarantee (docs/stream-processing.md): whatever is
committed is in the changelogs, whatever a table holds was published, and a replayed message
is never folded twice. If steps 3-4 fail the process exits at once, so nothing of the batch is
committed and the restarted worker does it again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import orjson
from faust.types import EventT

from app.contract import ANOMALY_FIELDS, InvalidTransaction, parse_timestamp, validate
from app.main import app
from app.settings import settings
from app.topics import anomalies_topic, dlq_topic, enriched_topic, transactions_topic
from tables import state
from tables.records import DaySpend, UserState, cents
from tables.welford import is_anomaly, update, z_score

__all__ = ["Acked", "BATCH_MAX", "BATCH_SECONDS", "Counters", "KafkaOutput", "Out", "counters",
           "process", "process_batch"]

log = logging.getLogger(__name__)

#: A batch holds at most this many messages...
BATCH_MAX = 5_000
#: ...and waits at most this long for them (the latency a quiet stream adds). Bigger batches
#: mean fewer table writes (one per user and day per batch) and fewer acknowledgement waits.
BATCH_SECONDS = 0.2

#: Outputs carry the transaction's event time as their Kafka timestamp, like ``transactions``;
#: Kafka 4 would reject one more than an hour ahead of its clock (a producer with a time scale).
OUTPUT_TOPIC_CONFIG = {"message.timestamp.after.max.ms": str(2**63 - 1)}

ENRICHED = enriched_topic.get_topic_name()
ANOMALIES = anomalies_topic.get_topic_name()
DLQ = dlq_topic.get_topic_name()


@dataclass
class Counters:
    """What this worker did since it started (``GET /metrics``)."""

    processed: int = 0  # valid transactions folded into the statistics
    replayed: int = 0  # redelivered messages the tables already held (after a crash)
    enriched: int = 0
    anomalies: int = 0
    dlq: int = 0
    errors: int = 0  # unexpected processing errors (the message went to the DLQ)
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


counters = Counters()


class Out(NamedTuple):
    """One message to publish, already serialised."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    timestamp: float | None
    headers: list[tuple[str, bytes]] | None = None


class Acked(NamedTuple):
    """Kafka acknowledged a topic partition's messages up to ``offset`` (the last one's)."""

    topic: str
    partition: int
    offset: int


class KafkaOutput:
    """Publishes through the app's producer and waits for Kafka's acknowledgements.

    A batch of the worker holds thousands of messages; sending them one by one
    (``app.producer.send``: a coroutine, a future and Faust's hooks per message) cost more CPU
    than anything the worker computes. So the messages of each topic partition go into
    aiokafka record batches (``create_batch`` / ``send_batch``, in order) and one future per
    record batch is awaited.
    """

    async def publish(self, messages: Sequence[Out | state.Change]) -> list[Acked]:
        """Send ``messages`` (in order per partition); return, per record batch, the offset of
        its last message once all are acknowledged."""
        producer = cast(Any, app.producer)._ensure_producer()  # the aiokafka producer Faust started
        by_partition: dict[tuple[str, int], list[Out | state.Change]] = {}
        for m in messages:
            by_partition.setdefault((m.topic, m.partition), []).append(m)  # type: ignore[arg-type]
        sent: list[tuple[str, int, int, Awaitable[Any]]] = []  # (topic, partition, n, future)
        for (topic, partition), batch_messages in by_partition.items():
            batch, count = producer.create_batch(), 0
            for m in batch_messages:
                timestamp_ms = int(m.timestamp * 1000) if m.timestamp else None
                while batch.append(key=m.key, value=m.value, timestamp=timestamp_ms,
                                   headers=m.headers or []) is None:  # full: send it
                    future = await producer.send_batch(batch, topic, partition=partition)
                    sent.append((topic, partition, count, future))
                    batch, count = producer.create_batch(), 0
                count += 1
            future = await producer.send_batch(batch, topic, partition=partition)
            sent.append((topic, partition, count, future))
        # a record batch's metadata holds the offset of its first message
        return [Acked(topic, partition, (await future).offset + count - 1)
                for topic, partition, count, future in sent]


#: Where a batch goes; unit tests put a recorder here.
output: Any = KafkaOutput()


def dlq_message(event: EventT, reason: str, failed_at: str) -> Out:
    msg = event.message
    headers = [("dlq.reason", reason.encode()), ("dlq.topic", str(msg.topic).encode()),
               ("dlq.partition", str(msg.partition).encode()),
               ("dlq.offset", str(msg.offset).encode()), ("dlq.failed_at", failed_at.encode())]
    return Out(DLQ, msg.key, msg.value, msg.partition, msg.timestamp, headers)


def _valid(event: EventT) -> dict[str, Any]:
    msg = event.message
    txn = validate(msg.value or b"")  # a null value (tombstone) is "not valid JSON"
    if msg.key != txn["user_id"].encode():
        raise InvalidTransaction("message key is not the transaction's user_id")
    return txn


def _fold_user(user_id: str, items: list[tuple[EventT, dict[str, Any]]], now: str,
               out: list[Out]) -> tuple[UserState | None, dict[Any, DaySpend]]:
    """Apply one user's transactions of the batch, in partition order. Returns the user's new
    state (None if unchanged) and the day windows to write back."""
    threshold, min_history = settings.anomaly_z_threshold, settings.anomaly_min_history
    partition = items[0][0].message.partition  # a user's messages share one partition
    user = before = state.get_user(user_id, partition)
    days: dict[Any, DaySpend] = {}
    dirty_days: dict[Any, DaySpend] = {}
    rewrite_user = False
    for event, txn in items:
        msg = event.message
        offset = msg.offset
        amount = txn["amount"]
        key = state.day_key(user_id, parse_timestamp(txn["timestamp"]).timestamp())
        day = days[key] if key in days else state.get_day(key, partition)
        new_stats, new_day = offset > user.offset, offset > day.offset
        if not (new_stats and new_day):
            # Redelivered after a crash: a table already holds it, so it was published.
            # Write the values back anyway, in case the local store was ahead of the changelog.
            counters.replayed += 1
            rewrite_user = True
            dirty_days[key] = day
        if not (new_stats or new_day):
            days[key] = day
            continue
        prev = user.stats
        z = z_score(prev, amount, min_history)
        anomaly = is_anomaly(z, threshold)
        if new_stats:
            user = UserState(update(prev, amount), z, offset)
            counters.processed += 1
        if new_day:
            day = DaySpend(day.cents + cents(amount), day.count + 1, offset)
        days[key] = dirty_days[key] = day
        if not (new_stats and new_day):
            continue
        stats = user.stats
        enriched = {**txn, "user_txn_count": stats.count, "user_running_mean": stats.mean,
                    "user_running_std": stats.std, "z_score": z, "is_anomaly": anomaly,
                    "user_daily_spend": day.amount, "processed_at": now}
        out.append(Out(ENRICHED, msg.key, orjson.dumps(enriched), msg.partition,
                       msg.timestamp))
        counters.enriched += 1
        if anomaly:
            values = {**txn, "z_score": z, "mean_prev": prev.mean, "std_prev": prev.std,
                      "n_prev": prev.count, "detected_at": now}
            record = {f: values[f] for f in ANOMALY_FIELDS}
            out.append(Out(ANOMALIES, msg.key, orjson.dumps(record), msg.partition,
                           msg.timestamp))
            counters.anomalies += 1
    changed = user if (user is not before or rewrite_user) else None
    return changed, dirty_days


async def process_batch(events: Sequence[EventT]) -> None:
    """Process one batch (see the module docstring). Returns when it is safe to ack it."""
    now = datetime.now(UTC).isoformat()
    out: list[Out] = []
    by_user: dict[str, list[tuple[EventT, dict[str, Any]]]] = {}
    for event in events:
        try:
            txn = _valid(event)
        except InvalidTransaction as exc:
            out.append(dlq_message(event, str(exc), now))
            counters.dlq += 1
            continue
        by_user.setdefault(txn["user_id"], []).append((event, txn))

    writes: list[tuple[EventT, str, UserState | None, dict[Any, DaySpend]]] = []
    for user_id, items in by_user.items():
        results: list[Out] = []
        try:
            user, days = _fold_user(user_id, items, now, results)
        except Exception as exc:  # a bug must not stop the stream: park the messages
            log.exception("processing error for user %r", user_id)
            counters.errors += len(items)
            counters.dlq += len(items)
            out.extend(dlq_message(e, f"processing error: {exc!r}"[:500], now)
                       for e, _ in items)
            continue
        out.extend(results)
        writes.append((items[0][0], user_id, user, days))

    try:
        await output.publish(out)
        changes: list[state.Change] = []
        for event, user_id, user, days in writes:
            partition = event.message.partition
            if user is not None:
                changes.append(state.put_user(user_id, user, partition))
            changes.extend(state.put_day(key, day, partition) for key, day in days.items())
        acked = await output.publish(changes)
        persisted: dict[tuple[str, int], int] = {}
        for md in acked:
            if md is not None:
                tp = (md.topic, md.partition)
                persisted[tp] = max(md.offset, persisted.get(tp, -1))
        state.changes_persisted(persisted)
    except BaseException:
        # Acking this batch now would commit offsets whose results may not be in Kafka.
        # Crash instead: the restarted worker replays it (and skips what is already done).
        log.critical("batch of %d messages could not be made durable: exiting", len(events),
                     exc_info=True)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(70)
    counters.batches += 1


async def declare_outputs() -> None:
    """Create the output topics (``TOPIC_PARTITIONS`` partitions) before anything is sent."""
    for topic in (enriched_topic, anomalies_topic, dlq_topic):
        await topic.derive(config=OUTPUT_TOPIC_CONFIG).maybe_declare()


@app.agent(transactions_topic)
async def process(stream: Any) -> None:
    """The processing agent (one per worker; partitions are split across workers)."""
    await declare_outputs()
    async for events in stream.take_events(BATCH_MAX, within=BATCH_SECONDS):
        await process_batch(events)
