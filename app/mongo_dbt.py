"""The dbt-duckdb plugin that connects dbt to MongoDB (or FerretDB).

dbt runs on DuckDB (there is no working dbt adapter for MongoDB). This plugin is named in
``dbt/profiles.yml`` (``module: app.mongo_dbt``, ``alias: mongo``) and does two things:

* **Sources** (``load``): a source with ``plugin: mongo`` and a ``fields`` map
  (``name: type``) is read with one ``find`` whose projection names only those fields. Each
  batch of documents (decoded by pymongo's C extension) becomes an Arrow record batch through
  Arrow's own dict-to-struct converter, so no Python code runs per document. dbt-duckdb then
  copies the Arrow table into DuckDB. A collection is read once per dbt invocation, so every
  model and test of one ``dbt build`` sees the same snapshot.
* **Marts** (``store``): a model materialized ``external`` with ``plugin: mongo`` is written
  by dbt-duckdb to a Parquet file, then this plugin replaces the MongoDB collection of the same
  name with its rows (``_id`` = the model's ``mongo_key`` columns joined by ``|``), so that
  readers never see a missing or half-written collection; see :func:`replace_collection`.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pymongo
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import SourceConfig, TargetConfig
from dbt_common.invocation import get_invocation_id
from pymongo.database import Database
from pymongo.errors import OperationFailure

__all__ = [
    "ARROW_TYPES",
    "MongoPluginError",
    "Plugin",
    "arrow_schema",
    "load_collection",
    "replace_collection",
    "supports_drop_target",
    "to_documents",
]

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
WRITE_CHUNK = 50  # statements per update command (see _sync)
TMP_MARK = "__tmp_"
NOT_IMPLEMENTED = 238  # MongoDB error code that FerretDB returns for `dropTarget: true`


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


def to_documents(table: pa.Table, key: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of a mart as MongoDB documents, ``_id`` = the ``key`` columns joined by ``|``.

    Rows whose columns are all null are dropped: dbt-duckdb writes one such row for an empty
    model. Dates become ``YYYY-MM-DD`` strings and decimals doubles (BSON has neither).
    """
    missing = [name for name in key if name not in table.column_names]
    if not key or missing:
        raise MongoPluginError(f"mongo_key {list(key)} must name columns of the mart "
                               f"({table.column_names})")
    if table.num_rows:
        valid = [pc.is_valid(column) for column in table.columns]
        keep = valid[0]
        for mask in valid[1:]:
            keep = pc.or_(keep, mask)
        table = table.filter(keep)
    for i, field in enumerate(table.schema):
        if pa.types.is_date(field.type):
            table = table.set_column(i, field.name, pc.strftime(table.column(i), "%Y-%m-%d"))
        elif pa.types.is_decimal(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.float64()))
    docs: list[dict[str, Any]] = table.to_pylist()
    for doc in docs:
        doc["_id"] = "|".join(str(doc[name]) for name in key)
    ids = {doc["_id"] for doc in docs}
    if len(ids) != len(docs):
        raise MongoPluginError(f"mongo_key {list(key)} is not unique in the mart")
    return docs


def supports_drop_target(db: Database[Any]) -> bool:
    """Whether the server can rename a collection over an existing one (MongoDB can,
    FerretDB 1.24 answers NotImplemented). Probed with names that do not exist: no effect."""
    probe = f"{db.name}.__probe{TMP_MARK}{uuid.uuid4().hex[:8]}"
    try:
        db.client.admin.command("renameCollection", probe, to=probe + "_to", dropTarget=True)
    except OperationFailure as exc:
        return exc.code != NOT_IMPLEMENTED
    return True  # pragma: no cover - renaming a collection that does not exist succeeded


def _write_new(db: Database[Any], name: str, docs: list[dict[str, Any]]) -> str:
    """Write ``docs`` into a fresh temporary collection; return its name."""
    tmp = f"{name}{TMP_MARK}{uuid.uuid4().hex[:8]}"
    if docs:
        db[tmp].insert_many(docs, ordered=False)
    else:
        db.create_collection(tmp)
    return tmp


def replace_collection(db: Database[Any], name: str, docs: list[dict[str, Any]],
                       drop_target: bool | None = None) -> str:
    """Make collection ``name`` hold exactly ``docs``; readers never see it missing or half
    written. Returns how: ``"created"``, ``"renamed"`` or ``"synced"``.

    * No collection yet: the documents go into a temporary collection that is then renamed
      to ``name`` (a rename is atomic), so the collection appears complete.
    * It exists and the server supports ``renameCollection`` with ``dropTarget`` (MongoDB):
      the same, replacing the old collection in one step.
    * It exists on FerretDB 1.24 (no ``dropTarget``, no transactions): the collection is
      synced in place. New and changed rows are upserted by ``_id``, then rows that are no
      longer in the mart are deleted. A reader during the sync sees every row that is in both
      the old and the new mart, each row either old or new: never a missing or emptied
      collection, but for a moment a mix of the two versions.
    """
    for stale in db.list_collection_names(filter={"name": {"$regex": f"^{name}{TMP_MARK}"}}):
        db.drop_collection(stale)  # left over by an interrupted run
    if not db.list_collection_names(filter={"name": name}):
        tmp = _write_new(db, name, docs)
        try:
            db[tmp].rename(name)
            return "created"
        except OperationFailure:  # someone created it meanwhile: replace it below
            db.drop_collection(tmp)
    if drop_target is None:
        drop_target = supports_drop_target(db)
    if drop_target:  # pragma: no cover - MongoDB only; FerretDB 1.24 has no dropTarget
        tmp = _write_new(db, name, docs)
        db[tmp].rename(name, dropTarget=True)
        return "renamed"
    _sync(db[name], docs)
    return "synced"


def _sync(collection: Any, docs: list[dict[str, Any]]) -> None:
    current = {doc["_id"]: doc for doc in collection.find({})}
    changed = [pymongo.ReplaceOne({"_id": doc["_id"]}, doc, upsert=True)
               for doc in docs if current.get(doc["_id"]) != doc]
    # FerretDB 1.24 keeps every statement of one `update` command open until the command ends
    # and has 100 SQLite connections per database: a command of ~100 statements never returns.
    for start in range(0, len(changed), WRITE_CHUNK):
        collection.bulk_write(changed[start:start + WRITE_CHUNK], ordered=False)
    new_ids = {doc["_id"] for doc in docs}
    gone = [key for key in current if key not in new_ids]
    if gone:
        collection.delete_many({"_id": {"$in": gone}})


class Plugin(BasePlugin):
    """dbt-duckdb's plugin interface: ``load`` for sources, ``store`` for marts."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        for name in ("mongo_url", "mongo_db"):
            if not plugin_config.get(name):
                raise MongoPluginError(f"the mongo plugin needs '{name}' in its profile config")
        self._client: pymongo.MongoClient[Any] = pymongo.MongoClient(
            plugin_config["mongo_url"], serverSelectionTimeoutMS=10_000)
        self._db = self._client[plugin_config["mongo_db"]]
        self._loaded: dict[tuple[str, str], pa.Table] = {}
        self._drop_target: bool | None = None

    def load(self, source_config: SourceConfig) -> pa.Table:
        # dbt-duckdb's SourceConfig.get is untyped
        name = source_config.get("collection") or source_config.identifier  # type: ignore[no-untyped-call]
        fields = source_config.get("fields")  # type: ignore[no-untyped-call]
        if not isinstance(fields, Mapping):
            raise MongoPluginError(f"source {source_config.name}.{source_config.identifier} "
                                   "needs a 'fields' map (name: type) in its config")
        cache_key = (get_invocation_id(), name)
        if cache_key not in self._loaded:
            self._loaded = {cache_key: table for cache_key, table in self._loaded.items()
                            if cache_key[0] == get_invocation_id()}
            self._loaded[cache_key] = load_collection(self._db[name], fields)
        return self._loaded[cache_key]

    def store(self, target_config: TargetConfig) -> None:
        if target_config.location is None or target_config.location.format != "parquet":
            raise MongoPluginError("mongo marts must be materialized 'external' as parquet")
        key = target_config.config.get("mongo_key")
        if isinstance(key, str):
            key = [key]
        docs = to_documents(pq.read_table(target_config.location.path), key or [])
        name = str(target_config.relation.identifier)
        if self._drop_target is None and name in self._db.list_collection_names():
            self._drop_target = supports_drop_target(self._db)
        replace_collection(self._db, name, docs, self._drop_target)
