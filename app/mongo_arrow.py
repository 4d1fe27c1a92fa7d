"""MongoDB documents as Arrow tables for the dbt plugin (:mod:`app.mongo_dbt`): a source's
schema from its ``fields`` map, whole collections read in batches, nested maps flattened into
rows, and the ``_id`` s of day and hour documents."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from agents.sink.aggregates import USER_GROUPS, users_by_day_id

__all__ = ["ARROW_TYPES", "BATCH_SIZE", "Level", "MongoPluginError", "arrow_schema",
           "day_id", "day_range", "days_of", "docs_table", "flatten", "levels_of",
           "load_collection", "unnest_schema", "window_ids"]

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


# --- nested maps into rows ---------------------------------------------------------------------
#: One ``unnest`` level: kind ("map" or "parts"), the map's field (maps only), the key column,
#: the (name, type) fields taken from each entry, the names of the array values (last level).
Level = tuple[str, str | None, str, list[tuple[str, str]], list[str]]


def levels_of(unnest: Sequence[Mapping[str, Any]]) -> list[Level]:
    levels: list[Level] = []
    for i, level in enumerate(unnest):
        values = [str(v) for v in level.get("values") or []]
        fields = [(str(k), str(v)) for k, v in (level.get("fields") or {}).items()]
        if "map" in level and level.get("key"):
            kind, field, key = "map", str(level["map"]), str(level["key"])
        elif "parts" in level:
            kind, field, key = "parts", None, str(level["parts"])
        else:
            kind = ""
        if not kind or (values and i != len(unnest) - 1) or any(
                t not in ARROW_TYPES for _, t in fields):
            raise MongoPluginError(
                f"unnest level {dict(level)}: use {{map: <field>, key: <column>, fields: "
                "{name: type}} or {parts: <column>}, with 'values' only on the last level")
        levels.append((kind, field, key, fields, values))
    return levels


def unnest_schema(fields: Mapping[str, str], unnest: Sequence[Mapping[str, Any]]) -> pa.Schema:
    """The columns of a flattened source: the top-level ``fields``, then per level its key
    column (a map's key: string; a part's partition number: bigint), its ``fields`` and the
    last level's ``values`` (bigint)."""
    columns = list(arrow_schema(fields))
    for kind, _, key, level_fields, values in levels_of(unnest):
        columns.append(pa.field(key, pa.string() if kind == "map" else pa.int64()))
        columns += [pa.field(name, ARROW_TYPES[t]) for name, t in level_fields]
        columns += [pa.field(name, pa.int64()) for name in values]
    return pa.schema(columns)


def _walk(node: Any, levels: list[Level], depth: int) -> Iterator[tuple[Any, ...]]:
    if depth == len(levels):
        yield ()
        return
    kind, field, _, fields, values = levels[depth]
    if not isinstance(node, Mapping):
        return
    if kind == "map":
        entries: Any = (node.get(field) or {}).items()
    else:  # the partition parts "p<n>" of the object
        entries = ((int(k[1:]), v) for k, v in node.items() if k[:1] == "p" and k[1:].isdigit())
    for key, value in entries:
        if values:
            if not isinstance(value, (list, tuple)):
                raise MongoPluginError(f"expected an array of {values}, got {value!r}")
            row = tuple(value[:len(values)])
            yield (key, *row, *(None,) * (len(values) - len(row)))
            continue
        head = (key, *((value.get(name) if isinstance(value, Mapping) else None)
                       for name, _ in fields))
        for tail in _walk(value, levels, depth + 1):
            yield head + tail


def flatten(docs: Sequence[Mapping[str, Any]], fields: Mapping[str, str],
            unnest: Sequence[Mapping[str, Any]], name: str = "?") -> pa.Table:
    """Documents with nested maps as flat rows: one row per leaf of the ``unnest`` path, each
    row repeating the document's ``fields`` and the keys and ``fields`` of the levels above.

    ``{map: merchants, key: merchant_key, fields: {id: string}}`` walks the object in field
    ``merchants``: one row per entry, the entry's key in column ``merchant_key``, its ``id`` in
    column ``id``. ``{parts: partition, values: [txn_count, cents]}`` walks the keys ``p<n>``
    of the current object: one row per part, ``n`` in column ``partition``, the part's array in
    columns ``txn_count``, ``cents`` (bigint; a shorter array leaves nulls, extra items are
    ignored). A document without the map gives no row. A value of the wrong type raises
    :class:`MongoPluginError` naming the collection.
    """
    schema = unnest_schema(fields, unnest)
    levels = levels_of(unnest)
    top = list(fields)
    rows = [(*(doc.get(f) for f in top), *leaf) for doc in docs for leaf in _walk(doc, levels, 0)]
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    try:
        arrays = [pa.array(list(col), type=field.type)
                  for col, field in zip(columns, schema, strict=True)]
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise MongoPluginError(f"collection {name!r}: a document does not fit the source's "
                               f"fields and unnest ({schema.names}): {exc}") from exc
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
           unnest: Sequence[Mapping[str, Any]], name: str) -> pa.Table:
    if unnest:
        return flatten(docs, fields, unnest, name)
    schema = arrow_schema(fields)
    try:
        array = pa.array(list(docs), type=pa.struct(list(schema)))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise MongoPluginError(f"collection {name!r}: a document does not fit the "
                               f"source's fields {dict(fields)}: {exc}") from exc
    return pa.Table.from_batches([pa.RecordBatch.from_struct_array(array)], schema=schema)
