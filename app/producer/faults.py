"""The deliberately invalid messages (``--bad-rate``): each kind is one fault the DLQ handles.

Two families: the contract's faults (:data:`BAD_KINDS`: the validator refuses the message
itself) and the event-time faults (:data:`TIME_KINDS`: a valid transaction at a time the
worker refuses, its Kafka timestamp equal to its payload's, as the contract requires)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from app.contract import MAX_ID_LENGTH

#: The contract's faults: :func:`app.contract.validate` refuses each of them.
BAD_KINDS = ("bad_json", "missing_field", "wrong_type", "negative_amount", "bad_currency",
             "oversize_string")
#: The event-time faults: ``late_event`` is :data:`LATE_BY_MS` before the run's event time (a
#: dead letter once its partition has newer events, so not as a partition's first message);
#: ``future_event`` is :data:`FUTURE_BY_MS` ahead of the later of its event time and the wall
#: clock when the factory was made.
TIME_KINDS = ("late_event", "future_event")
#: Every kind, the default of ``txn produce --bad-kinds``.
ALL_KINDS = BAD_KINDS + TIME_KINDS
LATE_BY_MS = 40 * 86_400_000
FUTURE_BY_MS = 86_400_000


def iso_ms(ts_ms: int) -> str:
    """``2026-11-25T23:00:13.042+00:00`` for epoch milliseconds (the producer's form)."""
    second, ms = divmod(ts_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{ms:03d}+00:00"


def fault_time(kind: str, ts_ms: int, clock_ms: int) -> int:
    """The event time (and Kafka timestamp) of a message of ``kind`` whose sequence number's
    event time is ``ts_ms``; ``clock_ms`` is the wall clock the factory was made at."""
    if kind == "late_event":
        return ts_ms - LATE_BY_MS
    if kind == "future_event":
        return max(ts_ms, clock_ms) + FUTURE_BY_MS
    return ts_ms


def corrupt(kind: str, content: dict[str, Any], canonical: bytes, txn_id: str,
            pick: int, ts_ms: int | None = None) -> bytes:
    """One invalid message of ``kind``; every other field stays right (the id too, when the
    message still has one), so the validator's reason is exactly the intended fault. ``pick``
    (a random number) chooses among the variants of the kind; ``ts_ms`` is the event time of a
    time fault (:func:`fault_time`)."""
    bad = dict(content)
    if kind == "bad_json":
        good = b'{"txn_id":"' + txn_id.encode() + b'",' + canonical[1:]
        return good[: len(good) // 2]
    if kind == "missing_field":
        del bad[("amount", "currency", "timestamp", "merchant_id", "status", "location")[pick % 6]]
    elif kind == "wrong_type":
        bad["amount"] = f"{content['amount']:.2f}"
    elif kind == "negative_amount":
        bad["amount"] = -content["amount"]
    elif kind == "bad_currency":
        bad["currency"] = ("usd", "EURO", "U$", "12X")[pick % 4]
    elif kind == "oversize_string":
        bad["merchant_id"] = content["merchant_id"] + "_" + "x" * (MAX_ID_LENGTH + pick % 200)
    elif kind in TIME_KINDS and ts_ms is not None:
        bad["timestamp"] = iso_ms(ts_ms)
    else:
        raise ValueError(f"unknown kind of bad message: {kind}")
    return orjson.dumps({"txn_id": txn_id, **bad})
