"""The stream-maintained aggregates: what each stored transaction adds, and where. Pure (no I/O).

Every aggregate is a document read by its ``_id`` (FerretDB serves only ``_id`` lookups without
a full scan). Its numbers are **packed**: one field per partition of ``transactions_enriched``,
``p<partition>``, holding the JSON text ``[offset, {key: [a, b, c(, label)]}]``, where
``offset`` is the source offset of the last transaction of that partition folded into the
document, and the object holds that partition's numbers per key (a merchant, a minute, a user).
A transaction whose offset is not above its document's partition offset is already counted, so
a redelivery or a replay never counts twice; each partition field has one writer (the process
that reads the partition), which rewrites it whole, and a reader sums the partitions
(:func:`totals`).

Packed, because FerretDB's cost is per stored value: a merchant day of 1,000 merchants as
nested ``[a, b, c, offset]`` lists per partition is ~34,000 values (~0.2 s to read, ~0.3 s to
update), and the same numbers as 8 JSON texts take ~10 ms either way (docs/data-model.md).

========================  =====================  ==============================================
collection                ``_id``                key: ``[a, b, c(, label)]``
========================  =====================  ==============================================
``users_by_day``          ``YYYY-MM-DD/NN``      user id: count, cents, anomalies
``merchant_days``         ``YYYY-MM-DD``         merchant id: count, cents, anomalies, category
``merchant_hours``        ``YYYY-MM-DDTHH``      same
``volume_hours``          ``YYYY-MM-DDTHH``      ``MM`` (minute): count, cents, anomalies
``currency_days``         ``YYYY-MM-DD``         currency: count, original cents, reporting cents
``currency_hours``        ``YYYY-MM-DDTHH``      ``MM/<currency>``: same
========================  =====================  ==============================================

``cents`` are integer cents of ``amount_reporting`` (the document's ``reporting_currency``,
a plain field next to the parts); original cents are of ``amount`` in that currency. Days,
hours and minutes are UTC, of the transaction's event time (``timestamp``).

``users_by_day`` holds the users of one of :data:`USER_GROUPS` groups (``NN``,
:func:`user_group`) for one UTC day: a user's history is one lookup per day (the API's trends),
and every user's recent days a few lookups per day (dbt), with a constant number of documents
written per flush whatever the number of users.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple, TypeGuard
from urllib.parse import unquote

import orjson

from agents.sink.buckets import buckets, day_id, hour_id
from app.contract import MAX_AMOUNT, cents

__all__ = ["COLLECTIONS", "CURRENCY_DAYS", "CURRENCY_HOURS", "EMPTY_OFFSET",
           "MAX_REPORTING_AMOUNT", "MERCHANT_DAYS", "MERCHANT_HOURS", "USERS_BY_DAY",
           "USER_GROUPS", "VOLUME_HOURS", "Builder", "Countable", "Packed", "Slot", "Total",
           "build", "countable", "day_id", "field_name", "hour_id", "pack", "packed", "slots",
           "total_of", "totals", "unfield", "unpack", "user_group", "users_by_day_id"]

MERCHANT_DAYS = "merchant_days"
MERCHANT_HOURS = "merchant_hours"
VOLUME_HOURS = "volume_hours"
CURRENCY_DAYS = "currency_days"
CURRENCY_HOURS = "currency_hours"
USERS_BY_DAY = "users_by_day"
COLLECTIONS = (MERCHANT_DAYS, MERCHANT_HOURS, VOLUME_HOURS, CURRENCY_DAYS, CURRENCY_HOURS,
               USERS_BY_DAY)
#: Groups of users per day in ``users_by_day``: enough that a document stays small (10,000
#: users: ~160 per document), few enough that reading a day costs a few dozen lookups.
USER_GROUPS = 64

#: Largest ``amount_reporting`` counted (any valid amount converted is far below: 64-bit sums
#: of cents stay exact for 90 million of these).
MAX_REPORTING_AMOUNT = 1_000_000_000

#: The offset of a partition that counted nothing yet.
EMPTY_OFFSET = -1

#: Characters :func:`field_name` percent-encodes besides ``%``: a field name with a ``.`` is a
#: path, one starting with ``$`` an operator, and a NUL cannot be encoded.
_UNSAFE = frozenset(".$%") | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}


def field_name(value: str) -> str:
    """``value`` (a transaction id) made safe as a MongoDB field name: ``%``, ``.``, ``$``,
    whitespace and unprintable characters become ``%XX`` (UTF-8, upper-case hex, as in URLs);
    everything else stays. The empty string, which FerretDB refuses as a field name, is ``%``
    (never the result of encoding anything else). :func:`unfield` reverses it."""
    if not value:
        return "%"
    return "".join("".join(f"%{b:02X}" for b in ch.encode()) if _unsafe(ch) else ch
                   for ch in value)


def _unsafe(ch: str) -> bool:
    # FerretDB trims whitespace (any Unicode space) off a path's segments, so a name with one
    # at an end could become empty or another name: spaces and unprintable characters too.
    return ch in _UNSAFE or ch.isspace() or not ch.isprintable()


def unfield(name: str) -> str:
    """The value :func:`field_name` made ``name`` from."""
    return "" if name == "%" else unquote(name, errors="strict")


def user_group(user_id: str) -> int:
    """The ``users_by_day`` group of a user: CRC-32 of its UTF-8 bytes modulo
    :data:`USER_GROUPS` (stable across processes and versions, unlike ``hash``)."""
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % USER_GROUPS


def users_by_day_id(day: str, group: int) -> str:
    """``YYYY-MM-DD/NN``: the ``users_by_day`` document of a day and a user group."""
    return f"{day}/{group:02d}"


class Countable(NamedTuple):
    """What a stored transaction adds to the aggregates, and where it came from: ``cents`` of
    the reporting currency ``reporting_currency``, ``amount_cents`` of its own ``currency``;
    ``minute`` is the UTC minute of its event time. A tuple: the sink makes one per stored
    transaction."""

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
    user_id: str | None = None


def _usable(amount: Any, limit: float) -> TypeGuard[float]:
    # A JSON number is exactly an int or a float (a bool is neither); NaN fails both bounds.
    return type(amount) in (int, float) and -limit <= amount <= limit


def countable(doc: Mapping[str, Any], partition: int, offset: int,
              reporting_currency: str) -> Countable | None:
    """The contribution of a stored ``transactions`` document. None when it has no usable
    merchant or amounts (e.g. an amount beyond the contract's ``MAX_AMOUNT`` that no 64-bit sum
    could hold), or its ``reporting_currency`` is not ``reporting_currency`` (amounts in two
    currencies cannot be added): it is stored but not counted."""
    merchant, amount, reporting = doc.get("merchant_id"), doc.get("amount"), \
        doc.get("amount_reporting")
    if not isinstance(merchant, str) or not _usable(amount, MAX_AMOUNT) \
            or not _usable(reporting, MAX_REPORTING_AMOUNT) \
            or doc.get("reporting_currency") != reporting_currency:
        return None
    user = doc.get("user_id")
    return Countable(merchant, str(doc.get("merchant_category")), doc["minute"],
                     cents(reporting), 1 if doc.get("is_anomaly") is True else 0, partition,
                     offset, str(doc.get("currency")), cents(amount), reporting_currency,
                     user if isinstance(user, str) else None)


class Slot(NamedTuple):
    """One place an item adds to: the document (``collection``, ``_id``), the ``key`` in its
    partition's object, the three numbers it adds, the entry's ``label`` (a merchant's
    category) if any, the plain fields to ``$set`` with the document, and the end of its time
    bucket (the cache forgets a document some time after). A tuple: the sink makes six per
    stored transaction."""

    collection: str
    id: str
    key: str
    add: tuple[int, int, int]
    label: str | None
    fields: tuple[tuple[str, Any], ...]
    ends: datetime


@lru_cache(maxsize=8)
def _reporting(currency: str) -> tuple[tuple[str, Any], ...]:
    return (("reporting_currency", currency),)


def slots(item: Countable) -> list[Slot]:
    """Every place ``item`` adds to."""
    b = buckets(item.minute)
    reporting = _reporting(item.reporting_currency)
    counts = (1, item.cents, item.anomaly)
    money = (1, item.amount_cents, item.cents)
    out = [
        Slot(MERCHANT_DAYS, b.day, item.merchant_id, counts, item.category, reporting,
             b.day_end),
        Slot(MERCHANT_HOURS, b.hour, item.merchant_id, counts, item.category, reporting,
             b.hour_end),
        Slot(VOLUME_HOURS, b.hour, b.mm, counts, None, reporting, b.hour_end),
        Slot(CURRENCY_DAYS, b.day, item.currency, money, None, reporting, b.day_end),
        Slot(CURRENCY_HOURS, b.hour, f"{b.mm}/{item.currency}", money, None, reporting,
             b.hour_end),
    ]
    if item.user_id is not None:
        out.append(Slot(USERS_BY_DAY, users_by_day_id(b.day, user_group(item.user_id)),
                        item.user_id, counts, None, (*reporting, ("day", b.day)), b.day_end))
    return out


@dataclass(slots=True)
class Packed:
    """One partition's numbers in one document: the offset of the last transaction folded in
    and ``[a, b, c(, label)]`` per key."""

    offset: int = EMPTY_OFFSET
    places: dict[str, list[Any]] = field(default_factory=dict)

    def copy(self) -> Packed:
        return Packed(self.offset, {k: list(v) for k, v in self.places.items()})

    def fold(self, slot: Slot, offset: int) -> bool:
        """Add the item at ``offset`` to ``slot``'s key; False (nothing changed) when this
        partition of the document already counts it (its offset is not above the document's).
        """
        if offset <= self.offset:
            return False
        entry = self.places.get(slot.key)
        if entry is None:
            entry = self.places[slot.key] = [0, 0, 0] if slot.label is None \
                else [0, 0, 0, slot.label]
        entry[0] += slot.add[0]
        entry[1] += slot.add[1]
        entry[2] += slot.add[2]
        self.offset = offset
        return True


def pack(part: Packed) -> str:
    """The stored text of a partition's numbers."""
    try:
        return orjson.dumps([part.offset, part.places]).decode()
    except TypeError:  # a key with a lone surrogate, which orjson refuses: escaped JSON
        return json.dumps([part.offset, part.places], separators=(",", ":"))


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _loads(raw: Any) -> tuple[int, dict[str, Any]] | None:
    """(offset, entries) of a stored partition's text, not yet checked entry by entry; None
    when ``raw`` is not such a text."""
    value: Any = None
    if isinstance(raw, str | bytes):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:  # a lone surrogate escaped by :func:`pack`, which orjson refuses
                value = json.loads(raw)
            except ValueError:
                value = None
    if not (isinstance(value, list) and len(value) == 2 and _number(value[0])
            and isinstance(value[1], dict)):
        return None
    return int(value[0]), value[1]


def _entry(entry: Any) -> list[Any] | None:
    """A key's numbers as stored, checked (None: not numbers this code wrote)."""
    if isinstance(entry, list) and len(entry) in (3, 4) and all(map(_number, entry[:3])):
        return [int(entry[0]), int(entry[1]), int(entry[2]), *entry[3:]]
    return None


def unpack(raw: Any) -> Packed:
    """A stored partition's numbers (empty when ``raw`` is not one: nothing is counted from a
    value this code did not write)."""
    loaded = _loads(raw)
    if loaded is None:
        return Packed()
    places: dict[str, list[Any]] = {}
    for key, entry in loaded[1].items():
        if (checked := _entry(entry)) is not None:
            places[key] = checked
    return Packed(loaded[0], places)


def packed(doc: Mapping[str, Any] | None) -> dict[int, Packed]:
    """partition -> its numbers, of a stored aggregate document (the ``p<n>`` fields)."""
    return {n: unpack(v) for n, v in _part_texts(doc).items()}


def _part_texts(doc: Mapping[str, Any] | None) -> dict[int, Any]:
    """partition -> the stored value of its ``p<n>`` field."""
    if doc is None:
        return {}
    return {int(k[1:]): v for k, v in doc.items()
            if isinstance(k, str) and k[:1] == "p" and k[1:].isdigit()}


@dataclass(slots=True)
class Total:
    """A key's numbers summed over the partitions, and its label (None when it has none)."""

    a: int = 0
    b: int = 0
    c: int = 0
    label: Any = None

    def add(self, entry: list[Any]) -> None:
        """Add a checked entry's numbers; its label, if this total has none yet."""
        self.a += entry[0]
        self.b += entry[1]
        self.c += entry[2]
        if self.label is None and len(entry) > 3:
            self.label = entry[3]


def total_of(doc: Mapping[str, Any] | None, key: str) -> Total:
    """``totals(doc).get(key, Total())``, checking only ``key``'s entries: a reader that
    wants one key of a document (a user's day in ``users_by_day``) skips the others."""
    out = Total()
    for raw in _part_texts(doc).values():
        loaded = _loads(raw)
        entry = None if loaded is None else _entry(loaded[1].get(key))
        if entry is not None:
            out.add(entry)
    return out


def totals(doc: Mapping[str, Any] | None) -> dict[str, Total]:
    """key -> its numbers summed over every partition of a stored aggregate document."""
    out: dict[str, Total] = {}
    for part in packed(doc).values():
        for key, entry in part.places.items():
            total = out.get(key)
            if total is None:
                total = out[key] = Total()
            total.add(entry)
    return out


class Builder:
    """The aggregate documents of the items added (in offset order per partition), exactly as
    the sink writes them: for seeding a database (benchmarks, tests)."""

    def __init__(self) -> None:
        self.fields: dict[tuple[str, str], dict[str, Any]] = {}
        self.parts: dict[tuple[str, str], dict[int, Packed]] = {}

    def add(self, item: Countable) -> None:
        for slot in slots(item):
            doc = (slot.collection, slot.id)
            self.fields.setdefault(doc, {}).update(slot.fields)
            self.parts.setdefault(doc, {}).setdefault(item.partition, Packed()).fold(
                slot, item.offset)

    def documents(self) -> dict[str, list[dict[str, Any]]]:
        """The documents per collection."""
        out: dict[str, list[dict[str, Any]]] = {c: [] for c in COLLECTIONS}
        for (collection, _id), fields in self.fields.items():
            parts = {f"p{n}": pack(part) for n, part in sorted(self.parts[(collection, _id)]
                                                                   .items())}
            out[collection].append({"_id": _id, **fields, **parts})
        return out


def build(items: Iterable[Countable]) -> dict[str, list[dict[str, Any]]]:
    """The aggregate documents of ``items`` (:class:`Builder`), per collection."""
    builder = Builder()
    for item in items:
        builder.add(item)
    return builder.documents()
