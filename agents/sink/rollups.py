"""The rollups: per merchant per minute (``merchant_minute``), overall per minute
(``volume_minute``), both with revenue in the reporting currency (``amount_reporting``,
labelled ``reporting_currency``), and per original currency per minute (``currency_minute``,
revenue in that currency's own amounts), counted from the transactions the sink stored. A
step after the ``transactions`` insert (:meth:`Rollups.add` is that writer's ``after_write``):
it takes the stored batch's items and its acks, and releases the acks only after the rollup
rows that count those items are written.

A row is made of **parts**, one per partition of ``transactions_enriched``:
``[count, cents, anomalies, offset]``, where ``offset`` is the source offset of the last
transaction of that partition folded into the part. A transaction whose offset is not above its
part's offset is already in it, so a message read again (a redelivery after a crash, a replay of
the topic) is never counted twice. A partition is read by one sink process at a time, so each
part has one writer; the row's totals are the sum of its parts.

Only the transactions whose document is this message's are counted (a duplicate ``txn_id``
another message stored is not), so the rollups count exactly the ``transactions`` collection.
Lag between a transaction and its rollup row: its insert batch plus the pause
(:func:`pause_after`) plus one write (docs/sink.md).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeGuard

from agents.sink import documents as docs
from agents.sink import metrics
from agents.sink.batch import Acks
from agents.sink.documents import Entry
from agents.sink.mongo import InsertResult, MongoStore, RowWrite
from app.contract import MAX_AMOUNT, cents
from app.settings import settings

__all__ = ["CACHE_MINUTES", "FLUSH_EVENTS", "FLUSH_SECONDS", "MAX_REPORTING_AMOUNT",
           "WRITE_SHARE", "Countable", "Part", "RollupState", "Rollups", "Row", "countable",
           "part_of", "pause_after"]

#: Rows whose minute is this far behind the newest minute seen leave the memory (they are
#: read back from MongoDB if a late transaction touches them again).
CACHE_MINUTES = 30
#: Rollup rows are written FLUSH_SECONDS after the previous write ended: each write upserts
#: every row changed since the last one once, whatever the number of transactions, so a slow
#: write just makes the next one cover more events.
FLUSH_SECONDS = 5.0
#: Past this many held events the inserts wait for a rollup write (bounds the memory).
FLUSH_EVENTS = 50 * settings.sink_batch_size
#: At most this share of the time goes to rollup writes, so that under load the rollups leave
#: the database to the inserts (an upsert costs FerretDB far more than an insert).
WRITE_SHARE = 0.2

#: Largest ``amount_reporting`` counted (any valid amount converted is far below: 64-bit sums
#: of cents stay exact for 90 million of these).
MAX_REPORTING_AMOUNT = 1_000_000_000

#: ``[count, cents, anomalies, offset]`` of one partition's transactions in a row.
Part = list[int]
EMPTY_OFFSET = -1


def pause_after(write_seconds: float) -> float:
    """Seconds from the end of a rollup write to the start of the next one."""
    return max(FLUSH_SECONDS, write_seconds * (1 / WRITE_SHARE - 1))


@dataclass(frozen=True, slots=True)
class Countable:
    """What a stored transaction adds to the rollups, and where it came from: ``cents`` of
    the reporting currency ``reporting_currency``, ``amount_cents`` of its own ``currency``."""

    merchant_id: str
    category: str
    minute: datetime
    cents: int
    anomaly: int
    partition: int
    offset: int
    currency: str
    amount_cents: int
    reporting_currency: str


def _usable(amount: Any, limit: float) -> TypeGuard[float]:
    return isinstance(amount, int | float) and not isinstance(amount, bool) \
        and math.isfinite(amount) and abs(amount) <= limit


def countable(doc: Mapping[str, Any], partition: int, offset: int) -> Countable | None:
    """The rollup contribution of a stored ``transactions`` document. None when it has no
    usable merchant or amounts (e.g. an amount beyond the contract's ``MAX_AMOUNT`` that no
    64-bit sum could hold), or its ``reporting_currency`` is not this sink's
    ``REPORTING_CURRENCY`` (amounts in two currencies cannot be added): it is stored but not
    counted."""
    merchant, amount, reporting = doc.get("merchant_id"), doc.get("amount"), \
        doc.get("amount_reporting")
    if not isinstance(merchant, str) or not _usable(amount, MAX_AMOUNT) \
            or not _usable(reporting, MAX_REPORTING_AMOUNT) \
            or doc.get("reporting_currency") != settings.reporting_currency:
        return None
    return Countable(merchant, str(doc.get("merchant_category")), doc["minute"],
                     cents(reporting), 1 if doc.get("is_anomaly") is True else 0, partition,
                     offset, str(doc.get("currency")), cents(amount),
                     settings.reporting_currency)


def part_of(parts: Mapping[str, Any] | None, partition: int) -> Part:
    """A copy of the stored part of ``partition`` (an empty one when there is none)."""
    raw = (parts or {}).get(str(partition))
    if isinstance(raw, list) and len(raw) == 4:
        return [int(x) for x in raw]
    return [0, 0, 0, EMPTY_OFFSET]


@dataclass
class Row:
    """One rollup row: its labels and every part known to this process."""

    collection: str
    labels: dict[str, Any]
    parts: dict[str, Part]

    def totals(self) -> docs.Rollup:
        return docs.sum_parts(self.parts.values())


_Key = tuple[str, str]  # (collection, _id)
_Target = tuple[str, str, dict[str, Any], int]  # (collection, _id, labels, cents it adds)
_Changed = dict[_Key, tuple[Row, set[str]]]  # row copies and which of their parts changed


def _ids(item: Countable) -> tuple[_Target, _Target, _Target]:
    minute_text = docs.minute_id(item.minute)
    return ((docs.MERCHANT_MINUTE, f"{item.merchant_id}|{minute_text}",
             {"merchant_id": item.merchant_id, "merchant_category": item.category,
              "minute": item.minute, "reporting_currency": item.reporting_currency},
             item.cents),
            (docs.VOLUME_MINUTE, minute_text,
             {"minute": item.minute, "reporting_currency": item.reporting_currency},
             item.cents),
            (docs.CURRENCY_MINUTE, f"{item.currency}|{minute_text}",
             {"currency": item.currency, "minute": item.minute}, item.amount_cents))


class RollupState:
    """The rows this process knows (a cache of MongoDB's; MongoDB is the durable copy). Pure:
    no I/O."""

    def __init__(self) -> None:
        self.rows: dict[_Key, Row] = {}
        self.newest: datetime | None = None

    def missing(self, items: Iterable[Countable]) -> dict[_Key, dict[str, Any]]:
        """The rows (``(collection, _id)``: labels) ``items`` touch that the cache lacks."""
        wanted: dict[_Key, dict[str, Any]] = {}
        for item in items:
            for collection, _id, labels, _ in _ids(item):
                if (collection, _id) not in self.rows:
                    wanted[collection, _id] = labels
        return wanted

    def load(self, key: _Key, labels: dict[str, Any], parts: Mapping[str, Any] | None) -> None:
        """Put a row read from MongoDB (``parts`` None: no such row yet) into the cache."""
        self.rows[key] = Row(key[0], labels, {
            str(p): part_of(parts, int(p)) for p in (parts or {}) if str(p).isdigit()})

    def apply(self, items: Iterable[Countable]) -> _Changed:
        """Fold ``items`` (in partition order) into copies of their rows; returns the changed
        rows and which parts changed, for the caller to write and then :meth:`commit`. Every
        row touched must be in the cache (:meth:`missing`, :meth:`load`)."""
        changed: _Changed = {}
        for item in items:
            key = str(item.partition)
            for collection, _id, labels, amount in _ids(item):
                if (collection, _id) not in changed:
                    cached = self.rows[collection, _id]
                    changed[collection, _id] = (
                        Row(collection, labels, {p: list(v) for p, v in cached.parts.items()}),
                        set())
                row, parts = changed[collection, _id]
                part = row.parts.setdefault(key, [0, 0, 0, EMPTY_OFFSET])
                if item.offset <= part[3]:
                    continue  # already counted
                part[0] += 1
                part[1] += amount
                part[2] += item.anomaly
                part[3] = item.offset
                parts.add(key)
        return {k: v for k, v in changed.items() if v[1]}

    def commit(self, changed: Mapping[_Key, tuple[Row, set[str]]]) -> None:
        """The changed rows were written: keep them, and forget rows long behind."""
        for key, (row, _) in changed.items():
            self.rows[key] = row
            minute = row.labels["minute"]
            if self.newest is None or minute > self.newest:
                self.newest = minute
        # (in year 1, 30 minutes before the newest minute may precede datetime.min: keep all)
        if self.newest is not None and self.newest.year > 1:
            oldest = self.newest - timedelta(minutes=CACHE_MINUTES)
            stale = [k for k, row in self.rows.items() if row.labels["minute"] < oldest]
            for key in stale:
                del self.rows[key]

    def forget(self) -> None:
        """Drop every cached row (after a rebalance another process may have written parts)."""
        self.rows.clear()


def _shared() -> bool:
    return False


class Rollups:
    """The rollup step of one sink process: holds the stored items and their batches' acks,
    and on :meth:`flush` writes the changed rows, then releases the acks."""

    def __init__(self, store: MongoStore, exclusive: Callable[[], bool] = _shared,
                 flush_events: int = FLUSH_EVENTS) -> None:
        """``exclusive``: whether this process reads every partition of the enriched topic
        (then no other process writes parts of its rows)."""
        self.store = store
        self.exclusive = exclusive
        self.flush_events = flush_events
        self.state = RollupState()
        self.items: list[Countable] = []
        self.acks: list[Acks] = []
        self.held = 0  # events in ``acks``
        self._lock = asyncio.Lock()

    async def add(self, entries: list[Entry], result: InsertResult, acks: Acks) -> None:
        """A batch just stored: its items are counted at the next flush, its events acked
        after it (the caller waits for that flush when too many events are held)."""
        # Read first, then append: a flush during the read swaps ``self.items`` for a new
        # list, and items appended to the list it took would never be counted.
        items = await self.stored_here(entries, result)
        self.items.extend(items)
        self.acks.append(acks)
        self.held += len(acks)
        if self.held >= self.flush_events:
            await self.flush()

    async def stored_here(self, entries: Sequence[Entry],
                          result: InsertResult) -> list[Countable]:
        """The items of the entries whose ``transactions`` document is theirs: inserted now,
        or by an earlier read of the same message (same ``processed_at``)."""
        rejected = {id(e) for e, _ in result.rejected}
        kept = [(e, e.doc) for e in entries if e.doc is not None and id(e) not in rejected]
        if result.duplicates:
            stored = await self.store.stored_processed_at([doc["_id"] for _, doc in kept])
            kept = [(e, doc) for e, doc in kept if stored.get(doc["_id"]) == doc["processed_at"]]
        items = (countable(doc, e.partition, e.offset) for e, doc in kept)
        return [item for item in items if item is not None]

    async def flush(self) -> None:
        """Write the held items' rows, then release the held acks."""
        async with self._lock:
            items, acks = self.items, self.acks
            self.items, self.acks, self.held = [], [], 0
            try:
                if items:
                    await self.write(items, self.exclusive())
            except BaseException:
                # Not written (a data error; outages are retried inside): keep everything
                # held, so nothing is acked past it and a later flush tries again.
                self.items[:0] = items
                self.acks[:0] = acks
                self.held += sum(len(a) for a in acks)
                raise
            for batch in acks:
                await batch.release()

    async def write(self, items: list[Countable], exclusive: bool) -> None:
        """Fold ``items`` into their rows and write the changed rows (absolute values)."""
        missing = self.state.missing(items)
        if missing:
            stored = await self.store.rollup_parts(list(missing))
            for key, labels in missing.items():
                self.state.load(key, labels, stored.get(key))
        changed = self.state.apply(items)
        rows: list[RowWrite] = [
            (collection, _id, row.labels, {p: row.parts[p] for p in parts}, row.totals())
            for (collection, _id), (row, parts) in changed.items()]
        started = time.monotonic()
        await self.store.write_rollup_rows(rows, exclusive)
        metrics.rollup_written({c: sum(1 for row in rows if row[0] == c)
                                for c in {row[0] for row in rows}}, time.monotonic() - started)
        self.state.commit(changed)

    async def flush_forever(self) -> None:
        """Flush at the rollups' pace: :data:`FLUSH_SECONDS` after the previous write ended,
        longer when writes get slow (:func:`pause_after`)."""
        took = 0.0
        while True:
            await asyncio.sleep(pause_after(took))
            started = time.monotonic()
            await self.flush()
            took = time.monotonic() - started

    def forget(self, revoked: Collection[int]) -> None:
        """After a rebalance: read every row again (another process may write parts of them),
        and drop the items of the ``revoked`` partitions (Faust commits nothing for a partition
        it revoked; the partition's next reader counts them)."""
        if revoked:
            self.items = [i for i in self.items if i.partition not in revoked]
        self.state.forget()
