"""Direct access to a Faust table's RocksDB databases.

The worker reads and writes a partition's database itself: Faust's store API
(``table.data[key]``) finds the partition from the current event, encodes the key through its
codec registry and updates a locked key index on every call, which cost more than RocksDB itself.
"""

from __future__ import annotations

from typing import Any

from faust.stores.rocksdb import Store as RocksDBStore

__all__ = ["partition_db"]


def partition_db(table: Any, partition: int | None) -> Any:
    """The RocksDB database (a rocksdict ``Rdict``) holding ``partition`` of ``table``, or None
    (no partition given, or another kind of store: the unit tests use the memory store)."""
    store = table.data
    if partition is None or not isinstance(store, RocksDBStore):
        return None
    return store._db_for_partition(partition)
