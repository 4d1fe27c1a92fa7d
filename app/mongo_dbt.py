"""The dbt-duckdb plugin that connects dbt to MongoDB (or FerretDB).

dbt runs on DuckDB (there is no working dbt adapter for MongoDB). This plugin is named in
``dbt/profiles.yml`` (``module: app.mongo_dbt``, ``alias: mongo``) and does two things:

* **Sources** (``load``): a source with ``plugin: mongo`` and a ``fields`` map (``name: type``)
  is read with a projection on those fields. A source may also be ``packed``: the sink's
  aggregate collections, whose documents hold one JSON text per partition (``p<n>``: ``[offset,
  {key: [a, b, c(, label)]}]``); each document becomes one row per key with its numbers summed
  over the partitions, see :func:`unpack_rows`. A source with a ``window`` is **mirrored**: the
  plugin keeps the rows it read in a Parquet file (``state_dir``) and, on the next run, reads
  again only the documents of the days from the last day it saw minus ``lookback_days`` on (by
  ``_id`` point lookups: FerretDB pushes down nothing but ``_id`` equality), keeping the older
  rows from the mirror; see :func:`read_window`. ``dbt ... --full-refresh`` reads everything
  again. A collection is read once per dbt invocation, so every model and test of one ``dbt
  build`` sees the same snapshot.
* **Marts** (``store``): the mart's rows (a Parquet file written by dbt-duckdb, or by the
  project's ``mongo_store`` post-hook for incremental models) go into the MongoDB collection
  of the same name (``_id`` = the model's ``mongo_key`` columns joined by ``|``). The plugin
  remembers what it last wrote (``state_dir``) and writes only the rows that changed; without
  that memory (first run, ``--full-refresh``) it replaces the collection so that readers never
  see it missing or half written; see :func:`replace_collection`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pymongo
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import SourceConfig, TargetConfig
from dbt.flags import get_flags
from dbt_common.invocation import get_invocation_id
from pymongo.database import Database
from pymongo.errors import OperationFailure

from app.mongo_arrow import (
    ARROW_TYPES,
    MongoPluginError,
    arrow_schema,
    load_collection,
    unpack_rows,
)
from app.mongo_window import Mirror, load_windowed, read_window

__all__ = ["ARROW_TYPES", "Mirror", "MongoPluginError", "Plugin", "arrow_schema",
           "load_collection", "load_windowed", "read_window", "replace_collection",
           "supports_drop_target", "to_documents", "unpack_rows"]

WRITE_CHUNK = 50  # statements per update command (see _sync)
TMP_MARK = "__tmp_"
NOT_IMPLEMENTED = 238  # MongoDB error code that FerretDB returns for `dropTarget: true`


# --- writing marts: only what changed since the last write ---------------------------------------
def write_changes(collection: Any, old: Sequence[Mapping[str, Any]],
                  new: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Upsert the rows of ``new`` that are not in ``old`` as they are, delete those of ``old``
    no longer in ``new``; return (upserted, deleted)."""
    before = {doc["_id"]: doc for doc in old}
    changed = [pymongo.ReplaceOne({"_id": doc["_id"]}, doc, upsert=True)
               for doc in new if before.get(doc["_id"]) != doc]
    for start in range(0, len(changed), WRITE_CHUNK):  # see _sync
        collection.bulk_write(changed[start:start + WRITE_CHUNK], ordered=False)
    now = {doc["_id"] for doc in new}
    gone = [key for key in before if key not in now]
    for start in range(0, len(gone), WRITE_CHUNK):
        for key in gone[start:start + WRITE_CHUNK]:
            collection.delete_one({"_id": key})  # by _id: FerretDB scans for $in
    return len(changed), len(gone)


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


def _full_refresh() -> bool:
    """Whether this dbt invocation runs with ``--full-refresh``."""
    try:
        return bool(getattr(get_flags(), "FULL_REFRESH", False))  # type: ignore[no-untyped-call]
    except Exception:  # pragma: no cover - no dbt invocation (direct use of the plugin)
        return False


class Plugin(BasePlugin):
    """dbt-duckdb's plugin interface: ``load`` for sources, ``store`` for marts.

    Profile config: ``mongo_url``, ``mongo_db``; ``state_dir`` (where the mirrors of windowed
    sources and the last written marts are kept; default ``target/mongo_state``);
    ``lookback_days`` (how many days before the last day seen a windowed source is read
    again; default 7, the stream's LATE_EVENT_GRACE_DAYS).
    """

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        for name in ("mongo_url", "mongo_db"):
            if not plugin_config.get(name):
                raise MongoPluginError(f"the mongo plugin needs '{name}' in its profile config")
        self._client: pymongo.MongoClient[Any] = pymongo.MongoClient(
            plugin_config["mongo_url"], serverSelectionTimeoutMS=10_000)
        self._db = self._client[plugin_config["mongo_db"]]
        self._state_dir = Path(plugin_config.get("state_dir") or "target/mongo_state")
        try:
            self._lookback = int(plugin_config.get("lookback_days", 7))
        except (TypeError, ValueError) as exc:
            raise MongoPluginError("lookback_days must be a whole number of days") from exc
        if self._lookback < 1:
            raise MongoPluginError("lookback_days must be at least 1")
        self._loaded: dict[tuple[str, str], pa.Table] = {}
        self._drop_target: bool | None = None
        #: What each load read, for the logs and the benchmark: {collection: {...}}.
        self.reads: dict[str, dict[str, Any]] = {}

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
            config = {"fields": fields,
                      "packed": source_config.get("packed"),  # type: ignore[no-untyped-call]
                      "window": source_config.get("window")}  # type: ignore[no-untyped-call]
            if config["window"]:
                table, read = load_windowed(self._db[name], config, self._state_dir,
                                            self._lookback, _full_refresh())
            else:
                table, count = read_window(self._db[name], config, None, date.today())
                read = {"first": None, "docs": count, "rows": table.num_rows}
            self.reads[name] = read
            self._loaded[cache_key] = table
        return self._loaded[cache_key]

    def store(self, target_config: TargetConfig) -> None:
        if target_config.location is None or target_config.location.format != "parquet":
            raise MongoPluginError("mongo marts are written from a parquet file (materialized "
                                   "'external', or the mongo_store post-hook)")
        key = target_config.config.get("mongo_key")
        if isinstance(key, str):
            key = [key]
        table = pq.read_table(target_config.location.path)
        docs = to_documents(table, key or [])
        name = str(target_config.relation.identifier)
        written = self._state_dir / f"{self._db.name}.{name}.written.parquet"
        old: list[dict[str, Any]] | None = None
        if not _full_refresh() and name in self._db.list_collection_names(
                filter={"name": name}):
            try:
                old = to_documents(pq.read_table(written), key or [])
            except (OSError, pa.ArrowInvalid, MongoPluginError):
                old = None
        if old is not None:
            write_changes(self._db[name], old, docs)
        else:
            if self._drop_target is None and name in self._db.list_collection_names():
                self._drop_target = supports_drop_target(self._db)
            replace_collection(self._db, name, docs, self._drop_target)
        written.parent.mkdir(parents=True, exist_ok=True)
        tmp = written.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, written)
