"""The ``txn-ids`` table: the transactions the worker already folded, so a replayed ``txn_id``
(an upstream re-send, a producer replaying a range) changes nothing.

Key: the UTC day of the event (4 bytes) and the id (32 bytes) -> the source offset of the
message that folded it (8 bytes), in RocksDB, co-partitioned with ``transactions``. Its
changelog holds one record per partition and batch with all of the batch's entries
(:class:`FoldedIds` unpacks them on recovery): a record per message would cost the worker more
than the rest of the message's work. Entries older than the partition's stream time minus
``DEDUPE_HORIZON_DAYS`` are deleted locally by key range (:func:`expire`); Kafka deletes the
changelog's records by retention.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust import Table
from faust.types import TP, EventT
from rocksdict import WriteBatch

from app.faust_internals.stores import partition_db
from app.main import app, table_options
from app.settings import settings
from tables.changelog import Change
from tables.windows import DAY_SECONDS

__all__ = ["FoldedIds", "expire", "folded_at", "forget_expiry", "key_of", "put_folded",
           "txn_ids"]

#: One entry of a ``txn-ids`` changelog record: the 36-byte key, then the 8-byte offset.
_KEY_SIZE, _ENTRY_SIZE = 36, 44


class FoldedIds(Table[bytes, bytes]):
    """The ``txn-ids`` table, whose changelog records each pack many entries."""

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        """Recovery: write every entry of every record to the local store."""
        store = self.data
        offsets: dict[TP, int] = {}
        for event in batch:
            msg = event.message
            offsets[msg.tp] = max(msg.offset, offsets.get(msg.tp, -1))
            packed = msg.value or b""
            db = partition_db(self, msg.partition)
            writes = WriteBatch(raw_mode=True) if db is not None else None
            for i in range(0, len(packed), _ENTRY_SIZE):
                key, value = packed[i:i + _KEY_SIZE], packed[i + _KEY_SIZE:i + _ENTRY_SIZE]
                if writes is None:
                    store[key] = value
                else:
                    writes.put(key, value)
            if writes is not None:
                db.write(writes)
        for tp, offset in offsets.items():
            store.set_persisted_offset(tp, offset)


#: Kafka deletes the changelog's records a day after the dedupe horizon (by the time they
#: were written); the worker deletes its local entries by stream time (:func:`expire`).
_TXN_IDS_RETENTION_MS = (settings.dedupe_horizon_days + 1) * DAY_SECONDS * 1000
txn_ids = FoldedIds(
    app, name="txn-ids", beacon=app.tables.beacon, partitions=settings.topic_partitions,
    key_type=bytes, value_type=bytes, options=table_options(),
    help="Transactions already folded: (UTC day, txn_id) -> source offset",
    # every record has a key of its own: nothing to compact, only to delete by age
    extra_topic_configs={"cleanup.policy": "delete",
                         "retention.ms": str(_TXN_IDS_RETENTION_MS)})
app.tables.add(txn_ids)

#: Day numbers are stored offset by 2**31 so that the keys sort by day, years before 1970 too.
_DAY_BIAS = 2**31
_CHANGELOG_TXN_IDS = txn_ids.changelog_topic.get_topic_name()
#: Per partition: ids of days below this are already deleted from the local store.
_expired_below: dict[int, int] = {}


def key_of(txn_id: str, epoch_seconds: float) -> bytes:
    """The key of a transaction: its event's UTC day, then its id. A replay carries
    the same timestamp as the original, so it finds the same key."""
    day = int(epoch_seconds // DAY_SECONDS)
    return (day + _DAY_BIAS).to_bytes(4, "big") + bytes.fromhex(txn_id)


def folded_at(key: bytes, partition: int) -> int | None:
    """The source offset of the message that folded this transaction, or None."""
    db = partition_db(txn_ids, partition)
    raw = txn_ids.data.get(key) if db is None else db.get(key)
    return None if raw is None else int.from_bytes(raw, "big")


def put_folded(entries: dict[bytes, int], partition: int) -> Change:
    """Record that the message at ``offset`` folded the transaction of ``key``, for every
    ``key -> offset`` of a batch in ``partition``; returns the one changelog record (its key:
    the first and last offsets, so every batch's record is kept)."""
    values = [(key, offset.to_bytes(8, "big")) for key, offset in entries.items()]
    db = partition_db(txn_ids, partition)
    if db is None:  # the memory store of the unit tests
        for key, value in values:
            txn_ids.data[key] = value
    else:
        writes = WriteBatch(raw_mode=True)
        for key, value in values:
            writes.put(key, value)
        db.write(writes)
    packed = b"".join(key + value for key, value in values)
    offsets = entries.values()
    return Change(_CHANGELOG_TXN_IDS, b"%d-%d" % (min(offsets), max(offsets)), packed,
                  partition)


def expire(partition: int, stream_day: int, horizon_days: int) -> None:
    """Delete the partition's ids of days before ``stream_day - horizon_days``: one range
    delete in RocksDB, whatever the number of ids."""
    below = stream_day - horizon_days + _DAY_BIAS
    if below <= _expired_below.get(partition, 0):
        return
    end = below.to_bytes(4, "big")
    db = partition_db(txn_ids, partition)
    if db is None:  # the memory store of the unit tests
        for key in [k for k in txn_ids.data.keys() if k < end]:
            del txn_ids.data[key]
    else:
        db.delete_range(bytes(4), end)
    _expired_below[partition] = below


def forget_expiry() -> None:
    """Forget how far the ids were expired: after a rebalance (recovered partitions may hold
    old ids again) and in tests that replace the store."""
    _expired_below.clear()
