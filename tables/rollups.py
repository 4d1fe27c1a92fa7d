"""The rollup tables of the sink app (:mod:`app.sink_app`): 1-minute tumbling windows in event
time (the transaction's ``timestamp``), filled by ``agents/rollups.py`` from the enriched stream
after a ``group_by`` on ``merchant_id``.

- ``merchant_minute[merchant_id]``: ``{"count", "cents", "anomalies"}`` of the merchant's
  transactions in the window (see :func:`app.sink_docs.add_to_rollup`).
- ``rollup_seen[txn_id]``: True once a transaction is counted. A transaction read again (a
  redelivery after a crash, a replay of the topic, the processor emitting it twice) is not
  counted twice. A transaction always has the same merchant, so it always reaches the same
  partition, where its ``rollup_seen`` entry is.

Both tables keep a window ``EXPIRES`` past the newest event time of their partition, then drop
it; the MongoDB rows stay.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from app import sink_docs as docs
from app.settings import settings
from app.sink_app import sink_app

__all__ = ["EXPIRES", "WINDOW", "event_time", "merchant_key", "merchant_minute", "rollup_seen"]

WINDOW = timedelta(minutes=1)
EXPIRES = timedelta(minutes=10)


def merchant_key(value: bytes) -> str:
    """The repartition key of an enriched message: its ``merchant_id`` ("" when unreadable;
    the rollup agent skips such messages, the sink dead-letters them)."""
    try:
        merchant = docs.parse_json(value).get("merchant_id")
    except docs.PoisonMessage:
        return ""
    return merchant if isinstance(merchant, str) else ""


def event_time(event: Any) -> float:
    """The windows' clock: the transaction's ``timestamp`` (event time), in epoch seconds."""
    return docs.to_date(docs.parse_json(event.value).get("timestamp")).timestamp()


merchant_minute = sink_app.Table(
    "merchant-minute", default=dict, partitions=settings.topic_partitions,
    help="count, revenue (cents) and anomalies per merchant per minute",
).tumbling(WINDOW, expires=EXPIRES).relative_to(event_time)  # type: ignore[attr-defined]

rollup_seen = sink_app.Table(
    "rollup-seen", default=bool, partitions=settings.topic_partitions,
    help="transactions already counted in merchant_minute",
).tumbling(WINDOW, expires=EXPIRES).relative_to(event_time)  # type: ignore[attr-defined]
