"""The stream-maintained aggregates: what each stored transaction adds, and where. Pure (no I/O).

Every aggregate is a document read by its ``_id`` (FerretDB serves only ``_id`` lookups without
a full scan), holding **parts**: ``[a, b, c, offset]`` lists, one per partition of
``transactions_enriched`` (``"p<partition>"``), where ``offset`` is the source offset of the
last transaction of that partition folded in. A transaction whose offset is not above its
part's is already counted, so a redelivery or a replay never counts twice; each part has one
writer (the process that reads its partition) and a reader sums the parts.

========================  =====================  =================================================
collection                ``_id``                part paths (``[a, b, c, offset]``)
========================  =====================  =================================================
``user_days``             user id                ``days.<YYYY-MM-DD>``: count, cents, anomalies
``users_by_day``          ``YYYY-MM-DD/NN``      ``users.<field>.p<n>``: count, cents, anomalies
``merchant_days``         ``YYYY-MM-DD``         ``merchants.<field>.p<n>``: count, cents, anomalies
``merchant_hours``        ``YYYY-MM-DDTHH``      ``merchants.<field>.p<n>``: same
``volume_hours``          ``YYYY-MM-DDTHH``      ``minutes.<MM>.p<n>``: count, cents, anomalies
``currency_days``         ``YYYY-MM-DD``         ``currencies.<CUR>.p<n>``: count, original cents,
                                                 reporting cents
``currency_hours``        ``YYYY-MM-DDTHH``      ``minutes.<MM>.<CUR>.p<n>``: same
========================  =====================  =================================================

``cents`` are integer cents of ``amount_reporting`` (the document's ``reporting_currency``);
original cents are of ``amount`` in that currency. Days, hours and minutes are UTC, of the
transaction's event time (``timestamp``). A user's transactions all come from one partition
(the topic is keyed by user), so ``user_days`` has one part per day, without a ``p<n>`` level.
``<field>`` is :func:`field_name` of the merchant id (each merchant also has ``id`` and
``category`` next to its parts) or of the user id (each user also has ``id``).

``users_by_day`` holds the same numbers as ``user_days``, grouped the other way: per UTC day,
the users of one of :data:`USER_GROUPS` groups (``NN``, :func:`user_group`). ``user_days``
serves one user's history with one lookup (the API); ``users_by_day`` serves every user's
recent days with a few lookups per day (dbt), since nothing keyed by user tells which users
changed without reading them all.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard
from urllib.parse import unquote

from app.contract import MAX_AMOUNT, cents

__all__ = ["COLLECTIONS", "CURRENCY_DAYS", "CURRENCY_HOURS", "EMPTY_OFFSET",
           "MAX_REPORTING_AMOUNT", "MERCHANT_DAYS", "MERCHANT_HOURS", "USERS_BY_DAY",
           "USER_DAYS", "USER_GROUPS", "VOLUME_HOURS", "Builder", "Countable", "Part", "Slot",
           "as_part", "at_path", "build", "countable", "day_id", "field_name", "fold",
           "hour_id", "parts_of", "slots", "sum_parts", "unfield", "user_group",
           "users_by_day_id"]

USER_DAYS = "user_days"
MERCHANT_DAYS = "merchant_days"
MERCHANT_HOURS = "merchant_hours"
VOLUME_HOURS = "volume_hours"
CURRENCY_DAYS = "currency_days"
CURRENCY_HOURS = "currency_hours"
USERS_BY_DAY = "users_by_day"
COLLECTIONS = (USER_DAYS, MERCHANT_DAYS, MERCHANT_HOURS, VOLUME_HOURS, CURRENCY_DAYS,
               CURRENCY_HOURS, USERS_BY_DAY)
#: Groups of users per day in ``users_by_day``: enough that a document stays small (10,000
#: users: ~160 per document), few enough that reading a day costs a few dozen lookups.
USER_GROUPS = 64

#: Largest ``amount_reporting`` counted (any valid amount converted is far below: 64-bit sums
#: of cents stay exact for 90 million of these).
MAX_REPORTING_AMOUNT = 1_000_000_000

#: ``[a, b, c, offset]`` of one partition's transactions in one place of an aggregate.
Part = list[int]
EMPTY_OFFSET = -1

#: Characters :func:`field_name` percent-encodes besides ``%``: a field name with a ``.`` is a
#: path, one starting with ``$`` an operator, and a NUL cannot be encoded.
_UNSAFE = frozenset(".$%") | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}


def field_name(value: str) -> str:
    """``value`` (a merchant id, a currency code) made safe as a MongoDB field name: ``%``,
    ``.``, ``$``, whitespace and unprintable characters become ``%XX`` (UTF-8, upper-case hex,
    as in URLs); everything else stays. The empty string, which FerretDB refuses as a field
    name, is ``%`` (never the result of encoding anything else). :func:`unfield` reverses it."""
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


def day_id(ts: datetime) -> str:
    """``YYYY-MM-DD``: the UTC day of ``ts``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%d")


def hour_id(ts: datetime) -> str:
    """``YYYY-MM-DDTHH``: the UTC hour of ``ts``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H")


def user_group(user_id: str) -> int:
    """The ``users_by_day`` group of a user: CRC-32 of its UTF-8 bytes modulo
    :data:`USER_GROUPS` (stable across processes and versions, unlike ``hash``)."""
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % USER_GROUPS


def users_by_day_id(day: str, group: int) -> str:
    """``YYYY-MM-DD/NN``: the ``users_by_day`` document of a day and a user group."""
    return f"{day}/{group:02d}"


@dataclass(frozen=True, slots=True)
class Countable:
    """What a stored transaction adds to the aggregates, and where it came from: ``cents`` of
    the reporting currency ``reporting_currency``, ``amount_cents`` of its own ``currency``;
    ``minute`` is the UTC minute of its event time."""

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
    return isinstance(amount, int | float) and not isinstance(amount, bool) \
        and math.isfinite(amount) and abs(amount) <= limit


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


@dataclass(frozen=True, slots=True)
class Slot:
    """One part an item adds to: where (``collection``, ``_id``, dotted ``path``), the three
    numbers it adds, the labels to ``$set`` with it, and the end of its time bucket (the cache
    forgets a slot some time after)."""

    collection: str
    id: str
    path: str
    add: tuple[int, int, int]
    labels: tuple[tuple[str, Any], ...]
    ends: datetime


def _end(start: datetime, step: timedelta) -> datetime:
    try:
        return start + step
    except OverflowError:  # the last hour or day of year 9999
        return datetime.max.replace(tzinfo=UTC)


def slots(item: Countable) -> list[Slot]:
    """Every part ``item`` adds to."""
    minute = item.minute.astimezone(UTC)
    day, hour, mm = day_id(minute), hour_id(minute), minute.strftime("%M")
    hour_start = minute.replace(minute=0)
    day_end = _end(hour_start.replace(hour=0), timedelta(days=1))
    hour_end = _end(hour_start, timedelta(hours=1))
    p, cur = f"p{item.partition}", field_name(item.currency)
    reporting = (("reporting_currency", item.reporting_currency),)
    counts = (1, item.cents, item.anomaly)
    merchant = field_name(item.merchant_id)
    labels = (*reporting, (f"merchants.{merchant}.id", item.merchant_id),
              (f"merchants.{merchant}.category", item.category))
    out = [
        Slot(MERCHANT_DAYS, day, f"merchants.{merchant}.{p}", counts, labels, day_end),
        Slot(MERCHANT_HOURS, hour, f"merchants.{merchant}.{p}", counts, labels, hour_end),
        Slot(VOLUME_HOURS, hour, f"minutes.{mm}.{p}", counts, reporting, hour_end),
        Slot(CURRENCY_DAYS, day, f"currencies.{cur}.{p}",
             (1, item.amount_cents, item.cents), (), day_end),
        Slot(CURRENCY_HOURS, hour, f"minutes.{mm}.{cur}.{p}",
             (1, item.amount_cents, item.cents), (), hour_end),
    ]
    if item.user_id is not None:
        out.append(Slot(USER_DAYS, item.user_id, f"days.{day}", counts, reporting, day_end))
        user = field_name(item.user_id)
        out.append(Slot(USERS_BY_DAY, users_by_day_id(day, user_group(item.user_id)),
                        f"users.{user}.{p}", counts,
                        (*reporting, ("day", day), (f"users.{user}.id", item.user_id)),
                        day_end))
    return out


def fold(part: Part, add: tuple[int, int, int], offset: int) -> bool:
    """Add an item at ``offset`` to ``part`` in place; False (nothing changed) when the part
    already counts it (its offset is not above the part's)."""
    if offset <= part[3]:
        return False
    part[0] += add[0]
    part[1] += add[1]
    part[2] += add[2]
    part[3] = offset
    return True


def at_path(doc: Mapping[str, Any] | None, path: str) -> Any:
    """The value at a dotted ``path`` of a document (None when absent)."""
    value: Any = doc
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def as_part(raw: Any) -> Part:
    """A stored part as a list of 4 ints (an empty part when it is not one)."""
    if isinstance(raw, list) and len(raw) == 4 and all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in raw):
        return [int(x) for x in raw]
    return [0, 0, 0, EMPTY_OFFSET]


def parts_of(value: Any) -> list[Part]:
    """The parts (``p<n>`` keys) of a stored map of parts."""
    if not isinstance(value, Mapping):
        return []
    return [as_part(v) for k, v in value.items()
            if isinstance(k, str) and k[:1] == "p" and k[1:].isdigit()]


def sum_parts(parts: Iterable[Part]) -> tuple[int, int, int]:
    """The three numbers of a place: the sum of its parts."""
    a = b = c = 0
    for part in parts:
        a, b, c = a + part[0], b + part[1], c + part[2]
    return a, b, c


class Builder:
    """The aggregate documents of the items added (in offset order per partition), exactly as
    the sink writes them: for seeding a database (benchmarks, tests)."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, item: Countable) -> None:
        for slot in slots(item):
            doc = self.docs.setdefault((slot.collection, slot.id), {"_id": slot.id})
            for path, value in (*slot.labels, (slot.path, None)):
                *parents, last = path.split(".")
                node = doc
                for key in parents:
                    node = node.setdefault(key, {})
                if value is not None:
                    node[last] = value
                else:
                    fold(node.setdefault(last, [0, 0, 0, EMPTY_OFFSET]), slot.add, item.offset)

    def documents(self) -> dict[str, list[dict[str, Any]]]:
        """The documents per collection."""
        out: dict[str, list[dict[str, Any]]] = {c: [] for c in COLLECTIONS}
        for (collection, _), doc in self.docs.items():
            out[collection].append(doc)
        return out


def build(items: Iterable[Countable]) -> dict[str, list[dict[str, Any]]]:
    """The aggregate documents of ``items`` (:class:`Builder`), per collection."""
    builder = Builder()
    for item in items:
        builder.add(item)
    return builder.documents()
