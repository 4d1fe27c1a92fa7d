"""What the sink stores: Kafka messages turned into MongoDB documents and dead-letter records,
and the rollup numbers. Pure functions (no Faust, no I/O); ``docs/data-model.md`` describes
every collection.

A message that cannot be turned into a document raises :class:`PoisonMessage`; the sink then
stores its dead-letter record (:meth:`Entry.dead_letter`) instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from agents.sink.buckets import day_id
from agents.sink.exceptions import PoisonMessage
from app.contract import (
    DLQ_FAILED_AT,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    InvalidTransaction,
    from_cents,
    load_object,
    minute_of,
    parse_timestamp,
)

__all__ = [
    "ANOMALIES",
    "CURRENCY_MINUTE",
    "DLQ",
    "MERCHANT_MINUTE",
    "METRICS",
    "TRANSACTIONS",
    "VOLUME_MINUTE",
    "Entry",
    "Rollup",
    "anomaly_doc",
    "dead_letter_doc",
    "dlq_doc",
    "minute_id",
    "parse_json",
    "rollup_numbers",
    "sum_parts",
    "to_date",
    "transaction",
    "transaction_doc",
    "unpack_transaction",
]

# --- collection names (docs/data-model.md) --------------------------------------------------
TRANSACTIONS = "transactions"
ANOMALIES = "anomalies"
DLQ = "dlq"
MERCHANT_MINUTE = "merchant_minute"
VOLUME_MINUTE = "volume_minute"
#: Per original currency per minute: revenue in that currency (its own amounts).
CURRENCY_MINUTE = "currency_minute"
#: One document per batch the sink wrote (a time series on MongoDB, see ``mongo.py``).
METRICS = "sink_batches"

#: A rollup value: ``{"count": int, "cents": int, "anomalies": int}``. Revenue is kept in
#: integer cents (amounts have two decimals), so sums are exact whatever the order: cents of
#: the reporting currency in ``merchant_minute``/``volume_minute``, of the row's own
#: ``currency`` in ``currency_minute``.
Rollup = dict[str, int]


def parse_json(raw: bytes | str) -> dict[str, Any]:
    """The JSON object in a message value, or PoisonMessage."""
    return load_object(raw, PoisonMessage)


def to_date(value: Any, field: str = "timestamp") -> datetime:
    """An ISO-8601 string with a UTC offset as an aware UTC datetime, cut to milliseconds (the
    precision of a BSON date, so a stored date reads back equal)."""
    if not isinstance(value, str):
        raise PoisonMessage(f"{field} must be an ISO-8601 string")
    try:
        ts = parse_timestamp(value).astimezone(UTC)
    except InvalidTransaction as exc:
        raise PoisonMessage(f"{field}: {exc}") from None
    below_ms = ts.microsecond % 1000
    return ts - _MICROSECOND * below_ms if below_ms else ts  # replace() costs 3x as much


_MICROSECOND = timedelta(microseconds=1)


def minute_id(minute: datetime) -> str:
    """The text form of a minute in rollup ids: ``2026-11-25T23:14:00Z``."""
    return minute.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00Z")


def _check_reporting(value: Mapping[str, Any]) -> None:
    """The amount in the reporting currency the worker adds: ``amount_reporting`` a finite
    number and ``reporting_currency`` an ISO 4217 code, or PoisonMessage (a message from a
    worker that does not convert amounts cannot be added to the revenue figures)."""
    amount = value.get("amount_reporting")
    if amount is None:
        raise PoisonMessage("amount_reporting is missing: the amount in the reporting currency "
                            "is needed for every revenue figure")
    if isinstance(amount, bool) or not isinstance(amount, int | float) \
            or not math.isfinite(amount):
        raise PoisonMessage("amount_reporting must be a finite number")
    currency = value.get("reporting_currency")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isascii() \
            or not currency.isalpha() or not currency.isupper():
        raise PoisonMessage("reporting_currency is missing or not an ISO 4217 code")


def _with_buckets(value: dict[str, Any], dates: Iterable[str],
                  in_place: bool = False) -> dict[str, Any]:
    """``value`` with ``_id``, ``dates`` as dates, ``day`` and ``minute``: a copy, or ``value``
    itself when the caller owns it (``in_place``: the sink's copy per message cost more than
    parsing it)."""
    txn_id = value.get("txn_id")
    if not isinstance(txn_id, str) or not txn_id:
        raise PoisonMessage("txn_id is missing or not a string")
    _check_reporting(value)
    doc = value if in_place else {**value}
    doc["_id"] = txn_id
    for field in dates:
        doc[field] = to_date(value.get(field), field)
    doc["day"] = day_id(doc["timestamp"])
    doc["minute"] = minute_of(doc["timestamp"])
    return doc


def _transaction(value: dict[str, Any], text: str,
                 in_place: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    fields = _with_buckets(value, ("timestamp", "processed_at"), in_place)
    doc = {"_id": fields["_id"], "user_id": value.get("user_id"),
           "timestamp": fields["timestamp"], "txn": text}
    return doc, fields


def transaction(raw: bytes | str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An enriched message (parsed once) as its ``transactions`` document and the fields the
    aggregates count: every enriched field plus ``_id``, ``timestamp``/``processed_at`` as
    dates, ``day`` and ``minute`` (the checks of :func:`transaction_doc`)."""
    value = parse_json(raw)
    # orjson accepted the bytes, so they are valid UTF-8: the text is the message, byte for byte.
    return _transaction(value, raw if isinstance(raw, str) else raw.decode("utf-8"), True)


def transaction_doc(value: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    """A ``transactions`` document: ``_id`` = ``txn_id``, ``user_id``, ``timestamp`` (a date)
    and ``txn``, the enriched message's JSON ``text`` (by default ``value`` as JSON). A message
    without a ``txn_id``, the reporting amount or valid dates is PoisonMessage. FerretDB's cost
    is per field, so the other fields travel inside ``txn`` (docs/data-model.md)."""
    if text is None:
        text = orjson.dumps(value).decode("utf-8")
    return _transaction(value, text)[0]


def unpack_transaction(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The enriched transaction a stored ``transactions`` document holds (its ``txn``)."""
    value = orjson.loads(doc["txn"])
    if not isinstance(value, dict):
        raise ValueError(f"transaction {doc.get('_id')!r}: txn is not a JSON object")
    return value


def anomaly_doc(value: dict[str, Any]) -> dict[str, Any]:
    """An ``anomalies`` document: the anomaly's fields, dates, ``day`` and ``minute``."""
    return _with_buckets(value, ("timestamp", "detected_at"))


def _header(headers: Mapping[str, bytes], name: str) -> str | None:
    raw = headers.get(name)
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _kafka_time(timestamp: float | None) -> datetime:
    """A Kafka message's timestamp as a date; now when it has none or one that is no date
    (a producer may set any 64-bit number of milliseconds)."""
    now = datetime.now(UTC)
    try:
        when = now if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, ValueError, OSError):
        when = now
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def dlq_doc(raw: bytes, headers: Mapping[str, bytes], topic: str, partition: int,
            offset: int, timestamp: float | None) -> dict[str, Any]:
    """A ``dlq`` document from a ``transactions_dlq`` message. The id is the coordinates of the
    original message (headers ``dlq.topic/partition/offset``), so the worker sending the same
    input to the DLQ again after a replay does not add a record; without those headers, the
    DLQ message's own coordinates."""
    src_topic = _header(headers, DLQ_TOPIC)
    src_partition = _header(headers, DLQ_PARTITION)
    src_offset = _header(headers, DLQ_OFFSET)
    if src_topic and src_partition and src_offset and \
            src_partition.isdigit() and src_offset.isdigit():
        topic, partition, offset = src_topic, int(src_partition), int(src_offset)
    failed_at: datetime | None = None
    failed_at_text = _header(headers, DLQ_FAILED_AT)
    if failed_at_text:
        try:
            failed_at = to_date(failed_at_text, DLQ_FAILED_AT)
        except PoisonMessage:
            failed_at = None
    if failed_at is None:
        failed_at = _kafka_time(timestamp)
    return {
        "_id": f"{topic}:{partition}:{offset}",
        "reason": _header(headers, DLQ_REASON) or "unknown",
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "failed_at": failed_at,
        "original": raw.decode("utf-8", errors="replace"),
    }


def dead_letter_doc(raw: bytes, reason: str, topic: str, partition: int,
                    offset: int) -> dict[str, Any]:
    """The ``dlq`` record of a message the sink could not store (poison data): same shape as a
    DLQ document, ``stage`` = ``"sink"``, id = the message's own coordinates."""
    return {
        "_id": f"{topic}:{partition}:{offset}",
        "reason": f"sink: {reason}"[:1000],
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "failed_at": to_date(datetime.now(UTC).isoformat()),
        "original": raw.decode("utf-8", errors="replace"),
        "stage": "sink",
    }


@dataclass(frozen=True)
class Entry:
    """One message on its way to a collection: the document (None when the message is poison),
    the original bytes and coordinates (for its dead-letter record), why it is poison, and the
    fields the aggregates count when the document does not hold them (a transaction's)."""

    doc: dict[str, Any] | None
    raw: bytes
    topic: str
    partition: int
    offset: int
    error: str = ""
    fields: dict[str, Any] | None = None

    def dead_letter(self, reason: str) -> dict[str, Any]:
        return dead_letter_doc(self.raw, reason, self.topic, self.partition, self.offset)


# --- rollups ----------------------------------------------------------------------------------
def sum_parts(parts: Iterable[Sequence[int]]) -> Rollup:
    """The totals of a rollup row from its parts (``[count, cents, anomalies, offset]``)."""
    total: Rollup = {"count": 0, "cents": 0, "anomalies": 0}
    for part in parts:
        total["count"] += int(part[0])
        total["cents"] += int(part[1])
        total["anomalies"] += int(part[2])
    return total


def rollup_numbers(value: Rollup) -> dict[str, Any]:
    """A rollup value as a row's stored numbers: ``count``, ``revenue`` (from integer cents,
    two decimals), ``anomalies``."""
    return {"count": value["count"], "revenue": from_cents(value["cents"]),
            "anomalies": value["anomalies"]}
