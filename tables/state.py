"""The worker's tables, in RocksDB (the app's ``rocksdb://`` store, rocksdict driver),
co-partitioned with ``transactions`` (both keyed by ``user_id``, ``TOPIC_PARTITIONS``
partitions):

- ``user_stats``: ``user_id`` -> :class:`~tables.records.UserState` (Welford state, last z,
  last applied source offset);
- ``daily_spend``: a tumbling one-day window on the transaction's event time (UTC days), key
  ``(user_id, day range)`` -> :class:`~tables.records.DaySpend`; windows expire after
  :data:`DAY_EXPIRES`, so transactions up to that late still count toward their own day;
- ``txn-ids``: the transactions already folded, so a replayed ``txn_id`` (an upstream re-send,
  a producer replaying a range) changes nothing. Key: the UTC day of the event (4 bytes) and
  the id (32 bytes) -> the source offset of the message that folded it (8 bytes). Its
  changelog holds one record per partition and batch with all of the batch's entries
  (:class:`FoldedIds` unpacks them on recovery): a record per message would cost the worker
  more than the rest of the message's work. Entries older than the partition's stream time
  minus ``DEDUPE_HORIZON_DAYS`` are deleted locally by key range; Kafka deletes the changelog's
  records by retention.

Values are immutable records, encoded with orjson (``raw`` serializer) and set back whole.
A write (:func:`put_user`, :func:`put_day`) updates the local store and returns the changelog
message; the processor publishes those and waits until Kafka acknowledged them before it lets
Faust commit the source offsets. Faust recovers the tables from the changelogs as usual.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from faust import Table
from faust.types import TP, EventT
from rocksdict import WriteBatch

from app.faust_internals.stores import partition_db, set_key_ttl
from app.main import app
from app.settings import settings
from tables.records import DAY_SECONDS, DaySpend, UserState

__all__ = [
    "DAY_EXPIRES",
    "TABLES",
    "FoldedIds",
    "USER_CACHE_MAX",
    "Change",
    "begin_batch",
    "changes_persisted",
    "daily_spend",
    "day_key",
    "expire_txn_ids",
    "folded_at",
    "forget_cached",
    "get_day",
    "get_user",
    "put_day",
    "put_folded",
    "put_user",
    "recent_days",
    "txn_id_key",
    "txn_ids",
    "user_stats",
]

#: How long a day window is kept (and accepts late transactions) after it ends.
DAY_EXPIRES = timedelta(days=8)


def _table(name: str, **kwargs: Any) -> Any:
    return app.Table(name, partitions=settings.topic_partitions, value_type=bytes,
                     options={"driver": "rocksdict"}, **kwargs)


#: Keys are the raw user id (``key_type=bytes``: the raw codec, str keys go in as UTF-8), like the
#: source topic's keys, so ``app.table_route`` finds a user's partition (and worker) exactly as
#: the producer's partitioner did. Values are bytes: the raw codec.
user_stats = _table("user-stats", key_type=bytes,
                    help="Per-user Welford statistics (tables/records.py UserState)")

_daily = _table("user-daily-spend", help="Per-user spend in each UTC day (DaySpend)")
daily_spend = _daily.tumbling(timedelta(seconds=DAY_SECONDS), expires=DAY_EXPIRES)

#: One entry of a ``txn-ids`` changelog record: the 36-byte key, then the 8-byte offset.
_KEY_SIZE, _ENTRY_SIZE = 36, 44


class FoldedIds(Table):
    """The ``txn-ids`` table, whose changelog records each pack many entries."""

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
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
#: were written); the worker deletes its local entries by stream time (:func:`expire_txn_ids`).
_TXN_IDS_RETENTION_MS = (settings.dedupe_horizon_days + 1) * DAY_SECONDS * 1000
txn_ids = FoldedIds(
    app, name="txn-ids", beacon=app.tables.beacon, partitions=settings.topic_partitions,
    key_type=bytes, value_type=bytes, options={"driver": "rocksdict"},
    help="Transactions already folded: (UTC day, txn_id) -> source offset",
    # every record has a key of its own: nothing to compact, only to delete by age
    extra_topic_configs={"cleanup.policy": "delete",
                         "retention.ms": str(_TXN_IDS_RETENTION_MS)})
app.tables.add(txn_ids)

TABLES = (user_stats, _daily, txn_ids)
_BY_CHANGELOG = {t.changelog_topic.get_topic_name(): t for t in TABLES}
_CHANGELOG_NAME = {id(t): name for name, t in _BY_CHANGELOG.items()}


class Change(NamedTuple):
    """A table write, as the changelog message that makes it durable."""

    topic: str
    key: bytes
    value: bytes
    partition: int
    timestamp: None = None
    headers: None = None


@lru_cache(maxsize=2**16)
def _key_bytes(table: Any, key: Any) -> bytes:
    """``key`` as Faust stores it, in RocksDB and in the changelog (the same bytes). Cached:
    Faust's codec registry costs more than the RocksDB read or write the key is used for, and
    each key is needed at least twice per batch (read, write) and again in later batches."""
    return table.changelog_topic.prepare_key(key, None)[0]


def _get(table: Any, key: Any, partition: int | None) -> bytes | None:
    db = partition_db(table, partition)
    return table.data.get(key) if db is None else db.get(_key_bytes(table, key))


def _write(table: Any, key: Any, value: bytes, partition: int) -> Change:
    """What ``table[key] = value`` does, minus Faust's per-message producer buffer: write the
    local store and return the changelog message, which the caller publishes and awaits
    (``table[key] = value`` would queue it and give no way to wait for it)."""
    key_bytes = _key_bytes(table, key)
    db = partition_db(table, partition)
    if db is None:
        table.data[key] = value
    else:
        db.put(key_bytes, value)
    set_key_ttl(table, key, partition)
    return Change(_CHANGELOG_NAME[id(table)], key_bytes, value, partition)


def changes_persisted(offsets: dict[tuple[str, int], int]) -> None:
    """Record, per changelog partition, the offset up to which Kafka acknowledged our writes:
    on a restart Faust's recovery reads each changelog from there (``_on_changelog_sent``)."""
    for (topic, partition), offset in offsets.items():
        _BY_CHANGELOG[topic].data.set_persisted_offset(TP(topic, partition), offset)


#: The worker's user states as last read or written, so a user seen again needs no store read
#: and no decoding: ``user_id`` -> state. Only the worker writes its partitions' states, so the
#: cache equals the store as long as its partitions stay; a rebalance (a new consumer
#: generation: partitions moved, tables recovered) empties it (:func:`begin_batch`).
_users: dict[str, UserState] = {}
_users_generation: list[int | None] = [None]
#: The cache is emptied when it grows beyond this many users.
USER_CACHE_MAX = 500_000


def begin_batch(generation: int | None) -> None:
    """Call before a batch: forgets the cached user states after a rebalance (``generation``:
    the app's consumer generation) or when there are too many."""
    if generation != _users_generation[0] or len(_users) > USER_CACHE_MAX:
        _users.clear()
        _expired_below.clear()  # recovered partitions may hold old ids again
        _users_generation[0] = generation


def forget_cached() -> None:
    """Forget what is cached about the stores: the user states and how far the ids were
    expired (tests that replace the tables' stores)."""
    _users.clear()
    _expired_below.clear()


def get_user(user_id: str, partition: int | None = None) -> UserState:
    """The user's state (reading the store: no table hooks); pass the user's partition when
    known (the worker: cached), else Faust looks for it (the views)."""
    if partition is None:
        return UserState.decode(_get(user_stats, user_id, None))
    user = _users.get(user_id)
    if user is None:
        user = _users[user_id] = UserState.decode(_get(user_stats, user_id, partition))
    return user


def put_user(user_id: str, state: UserState, partition: int) -> Change:
    _users[user_id] = state
    return _write(user_stats, user_id, state.encode(), partition)


def day_key(user_id: str, epoch_seconds: float) -> tuple[str, tuple[float, float]]:
    """The window table key of the UTC day holding ``epoch_seconds``."""
    return user_id, _daily.window.current(epoch_seconds)


def get_day(key: tuple[str, tuple[float, float]], partition: int | None = None) -> DaySpend:
    return DaySpend.decode(_get(_daily, key, partition))


def put_day(key: tuple[str, tuple[float, float]], spend: DaySpend, partition: int) -> Change:
    return _write(_daily, key, spend.encode(), partition)


def recent_days(user_id: str, now: float, days: int = 7) -> list[tuple[float, DaySpend]]:
    """``(day start, spend)`` for the ``days`` UTC days ending with the one holding ``now``."""
    out = []
    for back in range(days - 1, -1, -1):
        key = day_key(user_id, now - back * DAY_SECONDS)
        out.append((key[1][0], get_day(key)))
    return out


#: Day numbers are stored offset by 2**31 so that the keys sort by day, years before 1970 too.
_DAY_BIAS = 2**31
_CHANGELOG_TXN_IDS = txn_ids.changelog_topic.get_topic_name()
#: Per partition: ids of days below this are already deleted from the local store.
_expired_below: dict[int, int] = {}


def txn_id_key(txn_id: str, epoch_seconds: float) -> bytes:
    """The ``txn-ids`` key of a transaction: its event's UTC day, then its id. A replay carries
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


def expire_txn_ids(partition: int, stream_day: int, horizon_days: int) -> None:
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
