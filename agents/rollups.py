"""The rollups (on the sink app; ``txn sink``): per merchant per minute, and overall per minute.

The enriched stream is repartitioned by ``merchant_id`` (``group_by``); each transaction adds to
its merchant's 1-minute window in ``tables.rollups.merchant_minute`` (once: ``rollup_seen``).
Batches of windows touched are written to MongoDB as absolute values (``$max`` of the window's
current totals, never ``$inc``), then ``volume_minute`` of each touched minute is set to the sum
of that minute's merchant rows; only then are the batch's events acked. A replay therefore
rewrites the same numbers.

Lag between a transaction and its rollup row: the repartition hop plus at most
``FLUSH_SECONDS`` plus one write (docs/sink.md has the measured numbers).
"""

from __future__ import annotations

from datetime import datetime

from faust import StreamT

from agents.sink import BATCHES, acker, mongo
from app import sink_docs as docs
from app.settings import settings
from app.sink_app import enriched_raw, sink_app
from app.sink_batch import Batch
from tables.rollups import merchant_key, merchant_minute, rollup_seen

__all__ = ["FLUSH_EVENTS", "FLUSH_SECONDS", "rollups", "write_rollups"]

#: A rollup batch is written every FLUSH_SECONDS (or FLUSH_EVENTS events): each write upserts
#: every window touched since the last one, one upsert per merchant and minute, whatever the
#: number of transactions; upserts are slow on FerretDB (~hundreds/s), so they are batched
#: over a longer time than the inserts.
FLUSH_SECONDS = 5.0
FLUSH_EVENTS = 10 * settings.sink_batch_size

#: (merchant_id, merchant_category, minute, window value)
Touched = tuple[str, str, datetime, docs.Rollup]


async def write_rollups(touched: list[Touched]) -> None:
    """Upsert each touched window's latest value, then the touched minutes' totals."""
    latest: dict[tuple[str, datetime], Touched] = {}
    for item in touched:
        latest[item[0], item[2]] = item  # values only grow: the last one is the newest
    rows = [docs.merchant_minute_doc(m, category, minute, value)
            for m, category, minute, value in latest.values()]
    await mongo().upsert_rollups(rows, {minute for _, minute in latest})


@sink_app.agent(enriched_raw)
async def rollups(stream: StreamT[bytes]) -> None:
    """Count each enriched transaction once in its merchant's minute; write batches."""
    by_merchant = stream.group_by(merchant_key, name="merchant").noack()  # type: ignore[attr-defined]
    batch: Batch[Touched] = Batch("rollups", write_rollups, acker(by_merchant),
                                  FLUSH_EVENTS, FLUSH_SECONDS)
    BATCHES.append(batch)
    try:
        async for event in by_merchant.events():
            try:
                txn = docs.parse_json(event.value)
                merchant, txn_id = txn["merchant_id"], txn["txn_id"]
                minute = docs.minute_of(docs.to_date(txn.get("timestamp")))
                amount, is_anomaly = float(txn["amount"]), bool(txn["is_anomaly"])
                category = str(txn["merchant_category"])
            except (docs.PoisonMessage, KeyError, TypeError, ValueError):
                await batch.add(None, event)  # not countable; the sink dead-letters it
                continue
            if not rollup_seen[txn_id].value(event):
                window = merchant_minute[merchant]
                merchant_minute[merchant] = docs.add_to_rollup(
                    window.value(event), amount, is_anomaly)
                rollup_seen[txn_id] = True
            value = merchant_minute[merchant].value(event)
            await batch.add((merchant, category, minute, value), event)
    finally:
        BATCHES.remove(batch)
