"""MongoDB documents as Arrow tables for the dbt plugin (:mod:`app.mongo_dbt`): a source's
schema from its ``fields`` map, whole collections read in batches, the sink's packed aggregate
documents unpacked into rows, and the ``_id`` s of day and hour documents."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from agents.sink.aggregates import USER_GROUPS, totals, users_by_day_id

__all__ = ["ARROW_TYPES", "BATCH_SIZE", "PACKED_VALUES", "MongoPluginError", "arrow_schema",
           "day_id", "day_range", "days_of", "docs_table", "load_collection", "packed_schema",
           "packed_spec", "unpack_rows", "window_ids"]

#: Field types a source may declare in its ``fields`` map, and their Arrow types.
#: Timestamps are BSON dates: UTC, naive in Arrow and DuckDB.
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "double": pa.float64(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us"),
}
BATCH_SIZE = 20_000


class MongoPluginError(Exception):
    """A source or a mart is configured wrongly, or a document does not fit its source."""


def arrow_schema(fields: Mapping[str, str]) -> pa.Schema:
    """The Arrow schema of a source's ``fields`` map (``{"amount": "double", ...}``)."""
    if not fields:
        raise MongoPluginError("a mongo source needs a non-empty 'fields' map (name: type)")
    unknown = {name: kind for name, kind in fields.items() if kind not in ARROW_TYPES}
    if unknown:
        raise MongoPluginError(f"unknown field types {unknown}; use one of {sorted(ARROW_TYPES)}")
    return pa.schema([(name, ARROW_TYPES[kind]) for name, kind in fields.items()])


def load_collection(collection: Any, fields: Mapping[str, str],
                    batch_size: int = BATCH_SIZE) -> pa.Table:
    """Every document of ``collection``, projected on ``fields``, as an Arrow table.

    A missing field is null; a value of the wrong type raises :class:`MongoPluginError`
    naming the collection (no silent coercion of bad data).
    """
    schema = arrow_schema(fields)
    struct = pa.struct(list(schema))
    projection: dict[str, Any] = {name: 1 for name in fields}
    projection.setdefault("_id", 0)
    cursor = collection.find({}, projection, batch_size=batch_size)
    batches = []
    try:
        while docs := list(itertools.islice(cursor, batch_size)):
            try:
                array = pa.array(docs, type=struct)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise MongoPluginError(
                    f"collection {collection.full_name!r}: a document does not fit the "
                    f"source's fields {dict(fields)}: {exc}") from exc
            batches.append(pa.RecordBatch.from_struct_array(array))
    finally:
        cursor.close()
    return pa.Table.from_batches(batches, schema=schema)


# --- packed aggregate documents into rows -----------------------------------------------------
#: The numbers a packed entry holds (``[a, b, c(, label)]``, agents/sink/aggregates.py).
PACKED_VALUES = 3


def packed_spec(spec: Mapping[str, Any]) -> tuple[str, list[str], str | None]:
    """The key column, the value columns and the label column (or None) of a ``packed`` spec
    (``{key: merchant_id, values: [txn_count, cents, anomaly_count], label: category}``)."""
    key, values, label = spec.get("key"), spec.get("values"), spec.get("label")
    names = [*values] if isinstance(values, list) else []
    columns = [key, *names] + ([label] if label is not None else [])
    if not isinstance(key, str) or not key or not 1 <= len(names) <= PACKED_VALUES \
            or not all(isinstance(c, str) and c for c in columns) \
            or len(set(columns)) != len(columns) or set(spec) - {"key", "values", "label"}:
        raise MongoPluginError(
            f"packed {dict(spec)}: use {{key: <column>, values: [1 to {PACKED_VALUES} "
            "columns], label: <column> (optional)}, all names distinct")
    return key, [str(n) for n in names], label


def packed_schema(fields: Mapping[str, str], spec: Mapping[str, Any]) -> pa.Schema:
    """The columns of a packed source: the top-level ``fields``, the key (string), the
    ``values`` (bigint) and the ``label`` (string)."""
    key, values, label = packed_spec(spec)
    columns = [*arrow_schema(fields), pa.field(key, pa.string()),
               *(pa.field(name, pa.int64()) for name in values)]
    if label is not None:
        columns.append(pa.field(label, pa.string()))
    schema = pa.schema(columns)
    if len(set(schema.names)) != len(schema.names):
        raise MongoPluginError(f"packed {dict(spec)}: a column is also in 'fields' "
                               f"({list(fields)})")
    return schema


def unpack_rows(docs: Sequence[Mapping[str, Any]], fields: Mapping[str, str],
                spec: Mapping[str, Any], name: str = "?") -> pa.Table:
    """Packed aggregate documents (agents/sink/aggregates.py: ``p<partition>`` fields holding
    ``[offset, {key: [a, b, c(, label)]}]``) as rows: one per document and key, its numbers
    summed over the partitions (:func:`~agents.sink.aggregates.totals`).

    Each row repeats the document's ``fields``; the key goes in column ``spec["key"]``, the
    sums ``a``, ``b``, ``c`` in the ``values`` columns (the first one, two or three of them),
    the entry's label (a merchant's category) in ``label``. A partition field that is not a
    packed text the sink wrote counts nothing; a document without one gives no row. A top
    field or a label of the wrong type raises :class:`MongoPluginError` naming the collection.
    """
    schema = packed_schema(fields, spec)
    _, values, label = packed_spec(spec)
    top = list(fields)
    rows = []
    for doc in docs:
        head = tuple(doc.get(f) for f in top)
        for key, total in totals(doc).items():
            numbers = (total.a, total.b, total.c)[:len(values)]
            rows.append((*head, key, *numbers, *((total.label,) if label else ())))
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    try:
        arrays = [pa.array(list(col), type=field.type)
                  for col, field in zip(columns, schema, strict=True)]
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise MongoPluginError(f"collection {name!r}: a document does not fit the source's "
                               f"fields and packed spec ({schema.names}): {exc}") from exc
    return pa.Table.from_arrays(arrays, schema=schema)


# --- incremental reads: a mirror of the source, refreshed for the recent days -----------------
def day_id(value: date) -> str:
    return value.isoformat()


def day_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def window_ids(first: date, last: date, by: str) -> list[str]:
    """The ``_id`` s of the day (``YYYY-MM-DD``), hour (``YYYY-MM-DDTHH``) or day-and-user-group
    (``YYYY-MM-DD/NN``, the sink's ``users_by_day``) documents from day ``first`` to day
    ``last``, both included."""
    days = [day_id(d) for d in day_range(first, last)]
    if by == "hour_ids":
        return [f"{d}T{h:02d}" for d in days for h in range(24)]
    if by == "day_group_ids":
        return [users_by_day_id(d, g) for d in days for g in range(USER_GROUPS)]
    return days


def days_of(table: pa.Table, column: str) -> pa.ChunkedArray:
    values = table.column(column)
    if pa.types.is_timestamp(values.type):
        return pc.strftime(values, "%Y-%m-%d")
    return pc.utf8_slice_codeunits(values.cast(pa.string()), 0, 10)


def docs_table(docs: Sequence[Mapping[str, Any]], fields: Mapping[str, str],
               packed: Mapping[str, Any] | None, name: str) -> pa.Table:
    if packed:
        return unpack_rows(docs, fields, packed, name)
    schema = arrow_schema(fields)
    try:
        array = pa.array(list(docs), type=pa.struct(list(schema)))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise MongoPluginError(f"collection {name!r}: a document does not fit the "
                               f"source's fields {dict(fields)}: {exc}") from exc
    return pa.Table.from_batches([pa.RecordBatch.from_struct_array(array)], schema=schema)
