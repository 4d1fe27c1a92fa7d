"""The data contract (``docs/contract.md``, ``schemas/``) in code: topic names, fixed value lists
and the validator that decides what goes to the DLQ.

Pure Python, no Faust import: the producer, the worker, the tests and the API share it. The
currencies come from the rates table (:mod:`app.rates`), as do the money helpers
:func:`cents` and :func:`from_cents`, re-exported here.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from app.rates import CURRENCIES, cents, from_cents

__all__ = [
    "ANOMALIES",
    "ANOMALY_FIELDS",
    "CATEGORIES",
    "CURRENCIES",
    "DLQ",
    "DLQ_FAILED_AT",
    "DLQ_HEADERS",
    "DLQ_HEADROOM_BYTES",
    "DLQ_MAX_KEY_BYTES",
    "DLQ_OFFSET",
    "DLQ_ORIGINAL_SHA256",
    "DLQ_ORIGINAL_SIZE",
    "DLQ_PARTITION",
    "DLQ_REASON",
    "DLQ_TOPIC",
    "ENRICHED",
    "ENRICHED_FIELDS",
    "FIELDS",
    "InvalidTransaction",
    "KAFKA_TIMESTAMP_TOLERANCE_SECONDS",
    "MAX_AMOUNT",
    "MAX_ID_LENGTH",
    "PAYMENT_METHODS",
    "STATUSES",
    "TOPICS",
    "TOPIC_CONFIG",
    "TOPIC_RETENTION_BYTES",
    "TRANSACTIONS",
    "cents",
    "dlq_topic_config",
    "from_cents",
    "load_object",
    "minute_of",
    "parse_timestamp",
    "validate",
]

# --- topics (names before the optional TOPIC_PREFIX) ----------------------------------------
TRANSACTIONS = "transactions"
ENRICHED = "transactions_enriched"
ANOMALIES = "anomalies"
DLQ = "transactions_dlq"
TOPICS = (TRANSACTIONS, ENRICHED, ANOMALIES, DLQ)
#: The size each partition of a topic keeps before Kafka deletes its oldest segments (1 GiB).
TOPIC_RETENTION_BYTES = 2**30
#: Every topic carries the transaction's event time as its Kafka timestamp (CreateTime, which the
#: worker checks against the payload). Kafka 4 rejects a record more than an hour ahead of the
#: broker's clock by default, and event time runs ahead with the producer's ``--time-scale``,
#: ``--rate 0`` or a later ``--start``: no upper limit. Retention is by size, never by time,
#: because Kafka's time retention deletes a segment once its newest timestamp is older than
#: ``retention.ms``, so a backfill of old events would be deleted before it is processed.
TOPIC_CONFIG = {
    "message.timestamp.after.max.ms": str(2**63 - 1),
    "retention.ms": "-1",
    "retention.bytes": str(TOPIC_RETENTION_BYTES),
}
#: A dead letter's value is the original's first ``DLQ_MAX_PAYLOAD_BYTES`` (a setting); its key
#: is the original's first ``DLQ_MAX_KEY_BYTES`` (a valid key, a user_id of at most 64
#: characters, is at most 256 bytes); the headers are short. The DLQ topic takes records of the
#: payload limit plus this much, so a dead letter always fits.
DLQ_MAX_KEY_BYTES = 1024
DLQ_HEADROOM_BYTES = 64 * 1024


#: The DLQ topic takes record batches of at least this size: the worker sends batches of up
#: to 512 KiB (``producer_max_batch_size``), several dead letters each.
DLQ_MIN_BATCH_BYTES = 1024 * 1024


def dlq_topic_config(max_payload_bytes: int) -> dict[str, str]:
    """The config of ``transactions_dlq``: :data:`TOPIC_CONFIG` and a ``max.message.bytes``
    that fits a dead letter whose value is at most ``max_payload_bytes``, and the worker's
    record batches of several."""
    limit = max(max_payload_bytes, DLQ_MIN_BATCH_BYTES) + DLQ_HEADROOM_BYTES
    return {**TOPIC_CONFIG, "max.message.bytes": str(limit)}


#: The headers of a ``transactions_dlq`` message (its value and key are the original's,
#: truncated to ``DLQ_MAX_PAYLOAD_BYTES`` and :data:`DLQ_MAX_KEY_BYTES`).
DLQ_REASON = "dlq.reason"  # why it was refused
DLQ_TOPIC = "dlq.topic"  # where the original message was: topic,
DLQ_PARTITION = "dlq.partition"  # partition (decimal)
DLQ_OFFSET = "dlq.offset"  # and offset (decimal)
DLQ_FAILED_AT = "dlq.failed_at"  # when it was refused (RFC 3339, UTC)
DLQ_ORIGINAL_SIZE = "dlq.original_size"  # the original value's size in bytes (decimal)
DLQ_ORIGINAL_SHA256 = "dlq.original_sha256"  # SHA-256 of the whole original value (hex)
DLQ_HEADERS = (DLQ_REASON, DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET, DLQ_FAILED_AT,
               DLQ_ORIGINAL_SIZE, DLQ_ORIGINAL_SHA256)

# --- fixed value lists ----------------------------------------------------------------------
CATEGORIES = (
    "electronics", "grocery", "fashion", "home_garden", "health_beauty", "sports_outdoors",
    "toys_games", "books_media", "travel", "restaurants", "automotive", "digital_goods",
)
PAYMENT_METHODS = ("credit_card", "debit_card", "paypal", "apple_pay", "google_pay",
                   "bank_transfer", "gift_card")
STATUSES = ("approved", "declined", "pending", "refunded")

MAX_AMOUNT = 1_000_000
#: A ``transactions`` message's Kafka timestamp (CreateTime) must be its payload's timestamp
#: within this many seconds.
KAFKA_TIMESTAMP_TOLERANCE_SECONDS = 1.0
MAX_ID_LENGTH = 64
MAX_CITY_LENGTH = 128

#: Field name -> JSON type of a transaction, in contract order.
FIELDS: dict[str, type] = {
    "txn_id": str,
    "user_id": str,
    "amount": float,
    "currency": str,
    "timestamp": str,
    "merchant_id": str,
    "merchant_category": str,
    "payment_method": str,
    "status": str,
    "location": dict,
}

#: Fields added by the stream processor (``transactions_enriched``). The statistics and the daily
#: spend are in the reporting currency (:data:`app.rates.REPORTING_CURRENCY`).
ENRICHED_FIELDS: dict[str, Any] = {
    "amount_reporting": float,
    "reporting_currency": str,
    "user_txn_count": int,
    "user_running_mean": float,
    "user_running_std": float,
    "z_score": (float, type(None)),
    "is_anomaly": bool,
    "user_daily_spend": float,
    "processed_at": str,
}

#: Fields of an ``anomalies`` record.
ANOMALY_FIELDS = ("txn_id", "user_id", "amount", "currency", "amount_reporting",
                  "reporting_currency", "merchant_id", "merchant_category", "timestamp",
                  "z_score", "mean_prev", "std_prev", "n_prev", "detected_at")

_FIELD_SET = frozenset(FIELDS)
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: RFC 3339 as the schema's ``date_time`` states it (the calendar is checked by the parser).
_RFC3339_LOCAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                            r"(\.[0-9]{1,9})?")
_RFC3339 = re.compile(_RFC3339_LOCAL.pattern + r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")
_CURRENCY = re.compile(r"[A-Z]{3}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_CATEGORY_SET = frozenset(CATEGORIES)
_PAYMENT_SET = frozenset(PAYMENT_METHODS)
_STATUS_SET = frozenset(STATUSES)


class InvalidTransaction(ValueError):
    """The message breaks the contract; ``str(exc)`` is the reason recorded in the DLQ."""


def minute_of(ts: datetime) -> datetime:
    """The UTC minute ``ts`` falls in: the buckets of the per-minute rollups."""
    ts = ts.astimezone(UTC)
    return ts - timedelta(0, ts.second, ts.microsecond)  # a third of replace()'s cost


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 timestamp (with its UTC offset) that is a date in UTC too, or
    InvalidTransaction."""
    if not _RFC3339.fullmatch(value):
        if _RFC3339_LOCAL.fullmatch(value):
            raise InvalidTransaction("timestamp has no UTC offset")
        raise InvalidTransaction(f"timestamp {value[:40]!r} is not RFC 3339")
    try:
        ts = datetime.fromisoformat(value)
        ts.astimezone(UTC)  # 0001-01-01T00:00+01:00 or 9999-12-31T23:59-01:00: no UTC date
    except ValueError:
        raise InvalidTransaction(f"timestamp {value[:40]!r} is not a valid date") from None
    except OverflowError:
        raise InvalidTransaction(f"timestamp {value[:40]!r} is out of range in UTC") from None
    return ts


def _text(txn: dict[str, Any], field: str, max_len: int = MAX_ID_LENGTH) -> str:
    value = txn[field]
    if not isinstance(value, str):
        raise InvalidTransaction(f"{field} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidTransaction(f"{field} is empty")
    if len(value) > max_len:
        raise InvalidTransaction(f"{field} is longer than {max_len} characters")
    return value


def load_object(raw: bytes | str, error: type[ValueError] = InvalidTransaction) -> dict[str, Any]:
    """The JSON object in a message value, or ``error`` with the reason (shared with the sink,
    which raises its own PoisonMessage)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise error(f"expected a JSON object, got {type(value).__name__}")
    return value


def validate(raw: bytes | str) -> dict[str, Any]:
    """Parse and check one ``transactions`` message. Returns the transaction as a dict, or raises
    :class:`InvalidTransaction` whose message is the reason."""
    txn = load_object(raw)
    if txn.keys() != _FIELD_SET:  # the usual case (exactly the fields) needs no lists
        missing = [f for f in FIELDS if f not in txn]
        if missing:
            raise InvalidTransaction(f"missing field(s): {', '.join(missing)}")
        extra = sorted(set(txn) - _FIELD_SET)
        if extra:
            raise InvalidTransaction(f"unexpected field(s): {', '.join(extra)[:200]}")

    txn_id = txn["txn_id"]  # opaque: its form is checked, never how it was made
    if not isinstance(txn_id, str) or not _HEX64.fullmatch(txn_id):
        raise InvalidTransaction("txn_id must be 64 lowercase hex characters")
    _text(txn, "user_id")
    _text(txn, "merchant_id")

    amount = txn["amount"]
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise InvalidTransaction(f"amount must be a number, got {type(amount).__name__}")
    if not math.isfinite(amount) or not 0 < amount <= MAX_AMOUNT:
        raise InvalidTransaction(f"amount {amount!r} is not in (0, {MAX_AMOUNT}]")
    hundredths = amount * 100  # at most 1e8: a float's rounding error stays far below 1e-6
    if hundredths < 0.5 or abs(hundredths - round(hundredths)) > 1e-6:
        raise InvalidTransaction(f"amount {amount!r} is not a whole number of cents")

    currency = txn["currency"]
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise InvalidTransaction("currency must be an ISO 4217 code (three upper-case letters)")
    if currency not in CURRENCIES:
        raise InvalidTransaction(f"currency {currency!r} is not in the rates table")
    if not isinstance(txn["timestamp"], str):
        raise InvalidTransaction("timestamp must be a string")
    parse_timestamp(txn["timestamp"])
    if _text(txn, "merchant_category") not in _CATEGORY_SET:
        raise InvalidTransaction(f"merchant_category {txn['merchant_category'][:40]!r} is unknown")
    if _text(txn, "payment_method") not in _PAYMENT_SET:
        raise InvalidTransaction(f"payment_method {txn['payment_method'][:40]!r} is unknown")
    if _text(txn, "status") not in _STATUS_SET:
        raise InvalidTransaction(f"status {txn['status'][:40]!r} is not one of {STATUSES}")

    location = txn["location"]
    if not isinstance(location, dict) or set(location) != {"city", "country"}:
        raise InvalidTransaction('location must be an object {"city": ..., "country": ...}')
    _text(location, "city", MAX_CITY_LENGTH)
    country = location["country"]
    if not isinstance(country, str) or not _COUNTRY.fullmatch(country):
        raise InvalidTransaction(
            "location.country must be ISO 3166-1 alpha-2 (two upper-case letters)")
    return txn
