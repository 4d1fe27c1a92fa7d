"""The anomalies' time index: what ``GET /anomalies`` reads instead of sorting the ``anomalies``
collection (FerretDB 1.24 sorts and filters by reading the whole collection; it serves only
``_id`` lookups without a scan). Pure builders and readers, and :class:`AnomalyIndex`, the
``anomalies`` writer's step after each durable insert.

- ``anomaly_minutes``, ``_id`` ``YYYY-MM-DDTHH:MM``: ``items``, ``{<field>: "<compact JSON of the
  anomaly's API fields>"}``, ``<field>`` being :func:`~agents.sink.aggregates.field_name` of the
  ``txn_id``;
- ``anomaly_days``, ``_id`` ``YYYY-MM-DD``: ``minutes``, ``{"HHMM": 1}`` for the minutes of the
  day that hold anomalies; and ``_id`` ``YYYY-MM``: ``days``, ``{"DD": 1}`` for its days that do.

Minutes and days are UTC, of the anomaly's event time (``timestamp``). Each anomaly is one text
value, not a sub-document: FerretDB's cost grows with the number of values in a document, so a
minute of hundreds of anomalies stays cheap to read. Every write is a ``$set`` of absolute
values (upsert), so a redelivered batch writes the same values again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from agents.sink import documents as docs
from agents.sink.aggregates import field_name
from agents.sink.batch import Acks
from agents.sink.documents import Entry
from agents.sink.mongo import AggregateWrite, InsertResult
from app.contract import ANOMALY_FIELDS

__all__ = [
    "API_FIELDS",
    "DAYS",
    "MINUTES",
    "PATHS_PER_STATEMENT",
    "AnomalyIndex",
    "IndexStore",
    "day_id",
    "index_documents",
    "index_writes",
    "item",
    "item_text",
    "listed",
    "minute_id",
    "month_id",
    "parse_items",
]

MINUTES = "anomaly_minutes"
#: Day documents (``YYYY-MM-DD``) and month documents (``YYYY-MM``) share this collection.
DAYS = "anomaly_days"
#: ``$set`` paths per update statement at most (a batch's minute is split beyond that).
PATHS_PER_STATEMENT = 500

#: An anomaly's fields in the API: the contract's, the amount in the reporting currency after
#: ``currency``.
API_FIELDS = tuple(dict.fromkeys([
    *ANOMALY_FIELDS[:ANOMALY_FIELDS.index("currency") + 1], "amount_reporting",
    "reporting_currency", *ANOMALY_FIELDS[ANOMALY_FIELDS.index("currency") + 1:]]))
_INT64 = 2**63


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def minute_id(ts: datetime) -> str:
    """``YYYY-MM-DDTHH:MM``: the ``anomaly_minutes`` document of ``ts``'s UTC minute."""
    return _iso(ts)[:16]


def day_id(ts: datetime) -> str:
    return _iso(ts)[:10]


def month_id(ts: datetime) -> str:
    return _iso(ts)[:7]


def _plain(value: Any) -> Any:
    """A value JSON (and orjson) can hold: dates as ISO text, non-finite floats as null,
    integers beyond 64 bits as floats, anything else that is not a scalar as text."""
    if isinstance(value, datetime):
        return _iso(value)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def item(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An ``anomalies`` document as the API answers it: :data:`API_FIELDS`, dates as ISO-8601
    UTC with milliseconds, ``txn_id`` from ``_id`` when missing."""
    out = {f: _plain(doc.get(f)) for f in API_FIELDS}
    if out["txn_id"] is None:
        out["txn_id"] = _plain(doc.get("_id"))
    return out


def item_text(doc: Mapping[str, Any]) -> str:
    """:func:`item` as compact JSON text: the value stored for the anomaly in its minute."""
    return orjson.dumps(item(doc)).decode()


def _chunks(paths: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(paths)
    return [{k: paths[k] for k in keys[i:i + PATHS_PER_STATEMENT]}
            for i in range(0, len(keys), PATHS_PER_STATEMENT)]


def index_writes(stored: Iterable[Mapping[str, Any]]) -> list[AggregateWrite]:
    """The upserts that index ``stored`` anomalies (documents with ``_id`` and a ``timestamp``
    date; others are left out): minutes first, then days, then months, so that a reader who
    finds a minute listed finds its document."""
    minutes: dict[str, dict[str, Any]] = {}
    days: dict[str, dict[str, Any]] = {}
    months: dict[str, dict[str, Any]] = {}
    for doc in stored:
        ts, txn_id = doc.get("timestamp"), doc.get("_id")
        if not isinstance(ts, datetime) or not isinstance(txn_id, str):
            continue
        minute = minute_id(ts)
        minutes.setdefault(minute, {})[f"items.{field_name(txn_id)}"] = item_text(doc)
        days.setdefault(minute[:10], {})[f"minutes.{minute[11:13]}{minute[14:16]}"] = 1
        months.setdefault(minute[:7], {})[f"days.{minute[8:10]}"] = 1
    writes: list[AggregateWrite] = []
    for collection, found in ((MINUTES, minutes), (DAYS, days), (DAYS, months)):
        for _id in sorted(found):
            writes += [(collection, _id, chunk, []) for chunk in _chunks(found[_id])]
    return writes


def index_documents(stored: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The documents :func:`index_writes` makes from nothing, whole (per collection): what
    seeds of a test or benchmark database insert."""
    made: dict[tuple[str, str], dict[str, Any]] = {}
    for collection, _id, fields, _ in index_writes(stored):
        doc = made.setdefault((collection, _id), {"_id": _id})
        for path, value in fields.items():
            head, _, key = path.partition(".")
            doc.setdefault(head, {})[key] = value
    out: dict[str, list[dict[str, Any]]] = {MINUTES: [], DAYS: []}
    for (collection, _), doc in made.items():
        out[collection].append(doc)
    return out


# --- reading ------------------------------------------------------------------------------------
def listed(doc: Mapping[str, Any] | None, field: str, digits: int) -> list[str]:
    """The keys of a day's ``minutes`` (``HHMM``, ``digits`` 4) or a month's ``days`` (``DD``,
    2), newest first; anything else stored there is ignored."""
    found = doc.get(field) if doc is not None else None
    if not isinstance(found, Mapping):
        return []
    return sorted((k for k in found if isinstance(k, str) and len(k) == digits and k.isdigit()),
                  reverse=True)


def parse_items(doc: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The anomalies of a minute document, newest first (``timestamp`` desc, then ``txn_id``
    desc); a value that is not such JSON is left out."""
    found = doc.get("items") if doc is not None else None
    out = []
    for text in found.values() if isinstance(found, Mapping) else ():
        try:
            value = orjson.loads(text) if isinstance(text, str) else None
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and isinstance(value.get("timestamp"), str) \
                and isinstance(value.get("txn_id"), str):
            out.append(value)
    out.sort(key=lambda a: (a["timestamp"], a["txn_id"]), reverse=True)
    return out


# --- the sink's step ------------------------------------------------------------------------------
class IndexStore(Protocol):
    """The database calls of the step (:class:`~agents.sink.mongo.MongoStore`)."""

    async def aggregate_docs(self, collection: str, ids: list[str],
                             projection: dict[str, Any]) -> dict[str, dict[str, Any]]: ...

    async def write_aggregates(self, writes: list[AggregateWrite]) -> None: ...


class AnomalyIndex:
    """The ``anomalies`` writer's ``after_write``: indexes the stored batch, then releases its
    acks (an anomaly is acked only once the API can find it)."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store

    async def __call__(self, entries: list[Entry], result: InsertResult, acks: Acks) -> None:
        refused = {id(e) for e, _ in result.rejected}
        stored = [e.doc for e in entries if e.doc is not None and id(e) not in refused]
        if result.duplicates:
            stored = await self._as_stored(stored)
        writes = index_writes(stored)
        if writes:
            await self.store.write_aggregates(writes)
        await acks.release()

    async def _as_stored(self, batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The stored versions of a batch that met duplicates: a redelivery, or another message
        with the same ``txn_id``, whose stored document (not this one) is what gets indexed."""
        ids = list(dict.fromkeys(str(d["_id"]) for d in batch if "_id" in d))
        found = await self.store.aggregate_docs(
            docs.ANOMALIES, ids, dict.fromkeys(("_id", *API_FIELDS), 1))
        return list(found.values())
