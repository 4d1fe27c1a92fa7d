"""The rollup state of the sink (pure, no Faust, no I/O): per merchant per minute, and overall
per minute, counted from the transactions the sink stored (``agents/rollups.py`` feeds it and
writes its rows to MongoDB through ``app.mongo``).

A row (``merchant_minute`` or ``volume_minute``) is made of **parts**, one per partition of
``transactions_enriched``: ``[count, cents, anomalies, offset]``, where ``offset`` is the source
offset of the last transaction of that partition folded into the part. A transaction whose
offset is not above its part's offset is already in it, so a message read again (a redelivery
after a crash, a replay of the topic) is never counted twice. A partition is read by one sink
process at a time, so each part has one writer; the row's totals are the sum of its parts.

Only transactions the sink actually stored are fed in (a duplicate ``txn_id`` that another
message already stored is not), so the rollups count exactly the ``transactions`` collection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app import sink_docs as docs

__all__ = ["CACHE_MINUTES", "Countable", "Part", "RollupState", "Row", "countable", "part_of"]

#: Rows whose minute is this far behind the newest minute seen leave the memory (they are
#: read back from MongoDB if a late transaction touches them again).
CACHE_MINUTES = 30

#: ``[count, cents, anomalies, offset]`` of one partition's transactions in a row.
Part = list[int]
EMPTY_OFFSET = -1


@dataclass(frozen=True, slots=True)
class Countable:
    """What a stored transaction adds to the rollups, and where it came from."""

    merchant_id: str
    category: str
    minute: datetime
    cents: int
    anomaly: int
    partition: int
    offset: int


def countable(doc: Mapping[str, Any], partition: int, offset: int) -> Countable | None:
    """The rollup contribution of a stored ``transactions`` document (None when it has no
    usable merchant or amount: it is stored but not counted)."""
    merchant, category, amount = doc.get("merchant_id"), doc.get("merchant_category"), \
        doc.get("amount")
    if not isinstance(merchant, str) or not isinstance(amount, int | float) \
            or isinstance(amount, bool):
        return None
    return Countable(merchant, str(category), doc["minute"], round(amount * 100),
                     1 if doc.get("is_anomaly") is True else 0, partition, offset)


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
        return {"count": sum(p[0] for p in self.parts.values()),
                "cents": sum(p[1] for p in self.parts.values()),
                "anomalies": sum(p[2] for p in self.parts.values())}


_Target = tuple[str, str, dict[str, Any]]  # (collection, _id, labels)


def _ids(item: Countable) -> tuple[_Target, _Target]:
    minute_text = docs.minute_id(item.minute)
    return ((docs.MERCHANT_MINUTE, f"{item.merchant_id}|{minute_text}",
             {"merchant_id": item.merchant_id, "merchant_category": item.category,
              "minute": item.minute}),
            (docs.VOLUME_MINUTE, minute_text, {"minute": item.minute}))


class RollupState:
    """The rows this process knows (a cache of MongoDB's; MongoDB is the durable copy)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}
        self.newest: datetime | None = None

    def missing(self, items: Iterable[Countable]) -> dict[tuple[str, str], dict[str, Any]]:
        """The rows (``(collection, _id)``: labels) ``items`` touch that the cache lacks."""
        wanted: dict[tuple[str, str], dict[str, Any]] = {}
        for item in items:
            for collection, _id, labels in _ids(item):
                if (collection, _id) not in self.rows:
                    wanted[collection, _id] = labels
        return wanted

    def load(self, key: tuple[str, str], labels: dict[str, Any],
             parts: Mapping[str, Any] | None) -> None:
        """Put a row read from MongoDB (``parts`` None: no such row yet) into the cache."""
        self.rows[key] = Row(key[0], labels, {
            str(p): part_of(parts, int(p)) for p in (parts or {}) if str(p).isdigit()})

    def apply(self, items: Iterable[Countable]) -> dict[tuple[str, str], tuple[Row, set[str]]]:
        """Fold ``items`` (in partition order) into copies of their rows; returns the changed
        rows and which parts changed, for the caller to write and then :meth:`commit`. Every
        row touched must be in the cache (:meth:`missing`, :meth:`load`)."""
        changed: dict[tuple[str, str], tuple[Row, set[str]]] = {}
        for item in items:
            key = str(item.partition)
            for collection, _id, labels in _ids(item):
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
                part[1] += item.cents
                part[2] += item.anomaly
                part[3] = item.offset
                parts.add(key)
        return {k: v for k, v in changed.items() if v[1]}

    def commit(self, changed: Mapping[tuple[str, str], tuple[Row, set[str]]]) -> None:
        """The changed rows were written: keep them, and forget rows long behind."""
        for key, (row, _) in changed.items():
            self.rows[key] = row
            minute = row.labels["minute"]
            if self.newest is None or minute > self.newest:
                self.newest = minute
        if self.newest is not None:
            oldest = self.newest - timedelta(minutes=CACHE_MINUTES)
            stale = [k for k, row in self.rows.items() if row.labels["minute"] < oldest]
            for key in stale:
                del self.rows[key]

    def forget(self) -> None:
        """Drop every cached row (after a rebalance another process may have written parts)."""
        self.rows.clear()
