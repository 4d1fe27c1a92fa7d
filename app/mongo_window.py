"""The dbt plugin's reads of windowed sources (:mod:`app.mongo_dbt`): the documents of a window
of days by ``_id`` lookups, and the plugin's own copy of what it read (:class:`Mirror`), so a
build reads only the recent days again."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.mongo_arrow import (
    BATCH_SIZE,
    MongoPluginError,
    day_id,
    days_of,
    docs_table,
    load_collection,
    packed_schema,
    window_ids,
)

__all__ = ["HOW_OFTEN", "Mirror", "load_windowed", "read_window"]

#: Window settings that say how often a source is read, not what: a change keeps the mirror.
HOW_OFTEN = ("refresh_seconds", "recent_days", "deep_refresh_seconds")


def read_window(collection: Any, config: Mapping[str, Any], first: date | None,
                last: date) -> tuple[pa.Table, int]:
    """The rows of ``collection`` (a source's ``fields``/``packed``) from day ``first`` to day
    ``last``, or all of them if ``first`` is None; and the number of documents read.

    How the window is read depends on ``window.by``, because FerretDB pushes down only
    ``_id`` equality (``$gte``/``$in`` on ``_id`` and any other filter scan the collection):

    * ``day_ids`` / ``hour_ids`` / ``day_group_ids``: one ``find_one({"_id": ...})`` per day /
      hour / day and user group of the window (point lookups through the primary key);
    * ``since``: a ``find`` with ``{<field>: {"$gte": first}}`` (a timestamp; a server scan,
      only the matches travel);
    * ``all``: every document (a collection not keyed by time: there is no way to find the
      documents that changed without reading them all).

    A ``packed`` source's documents are read whole (their partition fields ``p<n>`` cannot be
    named in a projection; the sink's aggregate documents hold nothing else but a few plain
    fields).
    """
    fields: Mapping[str, str] = config["fields"]
    packed: Mapping[str, Any] | None = config.get("packed") or None
    window: Mapping[str, Any] = config.get("window") or {}
    by = window.get("by")
    projection: dict[str, Any] | None = {"_id": 0, **{name: 1 for name in fields}}
    if packed:
        packed_schema(fields, packed)  # a wrong spec fails before anything is read
        projection = None
    name = collection.full_name
    if first is None or by == "all":
        if not packed:
            table = load_collection(collection, fields)
            return table, table.num_rows
        docs = list(collection.find({}, projection, batch_size=BATCH_SIZE))
    elif by in ("day_ids", "hour_ids", "day_group_ids"):
        docs = [doc for key in window_ids(first, last, by)
                if (doc := collection.find_one({"_id": key}, projection)) is not None]
    elif by == "since":
        since = datetime.combine(first, datetime.min.time())
        docs = list(collection.find({str(window["field"]): {"$gte": since}}, projection,
                                    batch_size=BATCH_SIZE))
    else:
        raise MongoPluginError(f"source {name}: window.by must be day_ids, hour_ids, "
                               f"day_group_ids, since or all, not {by!r}")
    return docs_table(docs, fields, packed, name), len(docs)


class Mirror:
    """The rows of one windowed source as last read, in ``<state_dir>/<db>.<collection>.
    source.parquet``, with the config they were read with and the last day they hold."""

    def __init__(self, state_dir: Path, db: str, collection: str,
                 config: Mapping[str, Any]) -> None:
        self.path = state_dir / f"{db}.{collection}.source.parquet"
        window = {k: v for k, v in (config.get("window") or {}).items()
                  if k not in HOW_OFTEN}  # how often to read: not what was read
        self.config = json.dumps({"fields": config.get("fields"), "packed": config.get("packed"),
                                  "window": window}, sort_keys=True, default=str)

    def read(self) -> tuple[pa.Table, str | None, float] | None:
        """The mirrored rows, their last day and when the whole lookback window was last read
        (a Unix time), or None (no mirror, another config)."""
        try:
            table = pq.read_table(self.path)
        except (OSError, pa.ArrowInvalid):
            return None
        meta = json.loads((table.schema.metadata or {}).get(b"mongo_dbt", b"{}"))
        if meta.get("config") != self.config:
            return None
        return (table.replace_schema_metadata(None), meta.get("last_day"),
                float(meta.get("deep_at") or 0))

    def age(self) -> float:
        """Seconds since the mirror was written (read from MongoDB)."""
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return float("inf")

    def write(self, table: pa.Table, last_day: str | None, deep_at: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"config": self.config, "last_day": last_day,
                           "deep_at": deep_at}).encode()
        tmp = self.path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        pq.write_table(table.replace_schema_metadata({b"mongo_dbt": meta}), tmp)
        os.replace(tmp, self.path)


def load_windowed(collection: Any, config: Mapping[str, Any], state_dir: Path,
                  lookback_days: int, full_refresh: bool = False,
                  today: date | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """All rows of a windowed source, reading from MongoDB only the recent days.

    Without a mirror (first run, ``full_refresh``, a changed source config) everything is
    read. Otherwise the days from (the mirror's last day - ``lookback_days``) to (the later
    of today and that last day) + 1 are read (:func:`read_window`) and replace those days in
    the mirror; older days come from the mirror unchanged (``window.by: all``: everything is
    read again). With ``window.recent_days`` only that many days before the last day are read,
    and the whole ``lookback_days`` at most every ``window.deep_refresh_seconds`` (late events
    change old days rarely; the recent ones change all the time). With
    ``window.refresh_seconds`` a mirror younger than that is used as it is, without reading
    (for the collections FerretDB can only scan). Returns the table and what was read
    (``{"first": day, or None for everything, or "kept", "docs": n, "rows": n}``).
    """
    window: Mapping[str, Any] = config["window"]
    column = str(window["day_column"])
    mirror = Mirror(state_dir, collection.database.name, collection.name, config)
    today = today or datetime.now(UTC).date()
    saved = None if full_refresh else mirror.read()
    refresh = float(window.get("refresh_seconds") or 0)
    if saved is not None and refresh > 0 and mirror.age() < refresh:
        return saved[0], {"first": "kept", "docs": 0, "rows": saved[0].num_rows}
    now = time.time()
    if saved is None or saved[1] is None or window.get("by") == "all":
        table, n = read_window(collection, config, None, today)
        first, deep_at = None, now
    else:
        old, last_day, deep_at = saved
        back = lookback_days
        recent = window.get("recent_days")
        if recent is not None and now - deep_at < float(window.get("deep_refresh_seconds") or 0):
            back = min(int(recent), lookback_days)
        else:
            deep_at = now
        last = date.fromisoformat(str(last_day))
        first = last - timedelta(days=back)
        fresh, n = read_window(collection, config, first, max(today, last) + timedelta(days=1))
        keep = old.filter(pc.less(days_of(old, column), day_id(first)))
        table = pa.concat_tables([keep, fresh.cast(keep.schema)])
    days = days_of(table, column)
    last_day = pc.max(days).as_py() if table.num_rows else None
    mirror.write(table, last_day, deep_at)
    return table, {"first": first and day_id(first), "docs": n, "rows": table.num_rows}
