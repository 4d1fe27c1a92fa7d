"""What a ``transactions`` message must pass before the worker folds it, and the dead letter
of one that does not (docs/contract.md):

- the contract (:func:`app.contract.validate`), a key equal to the ``user_id``, and a Kafka
  timestamp equal to the payload's (:func:`valid`);
- the event-time rules (:class:`Clock`): not further ahead of the wall clock than
  ``FUTURE_EVENT_TOLERANCE_SECONDS``, not more than ``LATE_EVENT_GRACE_DAYS`` before its
  partition's stream time.

Each refusal is an :class:`~app.contract.InvalidTransaction` whose message is the reason.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, NamedTuple

from faust.types import Message

from app.contract import (
    DLQ_FAILED_AT,
    DLQ_MAX_KEY_BYTES,
    DLQ_OFFSET,
    DLQ_ORIGINAL_SHA256,
    DLQ_ORIGINAL_SIZE,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    KAFKA_TIMESTAMP_TOLERANCE_SECONDS,
    InvalidTransaction,
    parse_timestamp,
    validate,
)
from app.settings import settings
from app.topics import dlq_topic
from tables import user_tables, windows

__all__ = ["Clock", "Out", "dlq_message", "valid"]

DLQ = dlq_topic.get_topic_name()


class Out(NamedTuple):
    """One message to publish, already serialised."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int
    timestamp: float | None
    headers: list[tuple[str, bytes]] | None = None


def dlq_message(msg: Message, reason: str, failed_at: str) -> Out:
    """The dead letter of ``msg``: its value cut to ``DLQ_MAX_PAYLOAD_BYTES`` and its key to
    ``DLQ_MAX_KEY_BYTES`` (no valid key is that long), so that it always fits the DLQ topic
    (:func:`app.contract.dlq_topic_config`); the headers say why, where the original was, and
    the whole original value's size and SHA-256."""
    value: bytes | None = msg.value
    original = value or b""
    headers = [(DLQ_REASON, reason[:1000].encode()), (DLQ_TOPIC, str(msg.topic).encode()),
               (DLQ_PARTITION, str(msg.partition).encode()),
               (DLQ_OFFSET, str(msg.offset).encode()), (DLQ_FAILED_AT, failed_at.encode()),
               (DLQ_ORIGINAL_SIZE, str(len(original)).encode()),
               (DLQ_ORIGINAL_SHA256, hashlib.sha256(original).hexdigest().encode())]
    key = msg.key[:DLQ_MAX_KEY_BYTES] if msg.key is not None else None
    if value is not None:
        value = value[:settings.dlq_max_payload_bytes]
    return Out(DLQ, key, value, msg.partition, msg.timestamp, headers)


def valid(msg: Message) -> tuple[dict[str, Any], float]:
    """The transaction in ``msg`` and its event time (epoch seconds), or InvalidTransaction."""
    txn = validate(msg.value or b"")  # a null value (tombstone) is "not valid JSON"
    if msg.key != txn["user_id"].encode():
        raise InvalidTransaction("message key is not the transaction's user_id")
    event_time = parse_timestamp(txn["timestamp"]).timestamp()
    kafka_time = msg.timestamp
    if kafka_time is None or abs(kafka_time - event_time) > KAFKA_TIMESTAMP_TOLERANCE_SECONDS:
        raise InvalidTransaction(
            f"Kafka timestamp {_iso(kafka_time)} is not the payload's timestamp "
            f"{txn['timestamp'][:40]} (within {KAFKA_TIMESTAMP_TOLERANCE_SECONDS:g} s)")
    return txn, event_time


def _iso(epoch_seconds: float | None) -> str:
    if epoch_seconds is None:
        return "(none)"
    try:
        return datetime.fromtimestamp(epoch_seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return repr(epoch_seconds)


class Clock:
    """The event-time rules of one batch (docs/contract.md): each partition's stream time as it
    runs through the batch in partition order, and the wall clock of the batch."""

    def __init__(self, wall_clock: float) -> None:
        self.wall_clock = wall_clock
        self.grace_days = settings.late_event_grace_days
        self.tolerance = settings.future_event_tolerance_seconds
        self.stream_times: dict[int, float] = {}  # partition -> stream time, as it advances

    def admit(self, msg: Message, txn: dict[str, Any], event_time: float) -> None:
        """Advance the partition's stream time to ``event_time``, or InvalidTransaction if the
        event is from the future or late. A message the user's value already holds (a replay
        after a crash) is never late: it was judged when it was folded."""
        partition = msg.partition
        stream_time = self.stream_times.get(partition)
        if stream_time is None:
            stream_time = user_tables.get_stream_time(partition)
        if windows.is_future(event_time, self.wall_clock, self.tolerance):
            raise InvalidTransaction(
                f"future event: timestamp {txn['timestamp']} is "
                f"{event_time - self.wall_clock:.0f} s ahead of the clock "
                f"(FUTURE_EVENT_TOLERANCE_SECONDS={self.tolerance})")
        if (windows.is_late(event_time, stream_time, self.grace_days)
                and user_tables.get_user(txn["user_id"], partition).offset < msg.offset):
            raise InvalidTransaction(
                f"late event: timestamp {txn['timestamp']} is more than "
                f"LATE_EVENT_GRACE_DAYS={self.grace_days} days before the partition's stream "
                f"time {_iso(stream_time)}")
        self.stream_times[partition] = max(stream_time, event_time)
